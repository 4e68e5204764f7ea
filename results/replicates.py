"""Seeds and controls in the store (issue 12): the not-distinguishable rule and two views.

- ``circuit_spread``: per run, task and protocol, circuit edges over pruning seeds: median,
  min/max, quartiles and IQR (each seed's circuit is the smallest over a ``k_coef`` sweep, as on
  the frontier).
- ``families``: per model family (a run's train config minus its seed) and protocol, the
  geometric mean over model seeds of the frontier's per-run geometric mean, with a percentile
  bootstrap 95 % CI over model seeds.

The bootstrap is SQL over a stored table of uniform draws (``bootstrap_draws``: resample ``b``,
position ``i``, ``u`` in [0, 1)) made by numpy from ``BOOTSTRAP_SEED``: a family of n seeds
takes, in resample b, its seeds number ``floor(u · n)`` for i < n. The same seed gives the same
draws and so the same intervals, on any machine.

Rule (``circuits.not_distinguishable``): a found real circuit is not distinguishable from its
controls when a control circuit of the same task, loss threshold and ablation reaches the
threshold with at most ``CONTROL_EDGE_RATIO`` × its edges — a ``shuffled_task`` circuit of the
same model, or a ``random_init`` circuit of the same architecture and seed (same family and
seed). Any pruning seed of the control counts. Control rows and circuits not found get NULL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

CONTROL_EDGE_RATIO = 2.0
BOOTSTRAP_SEED = 0
N_BOOTSTRAP = 1000
MAX_BOOTSTRAP_SEEDS = 128  # families with more model seeds get no interval (draws end there)


def bootstrap_draws(seed: int = BOOTSTRAP_SEED, n_resamples: int = N_BOOTSTRAP,
                    max_seeds: int = MAX_BOOTSTRAP_SEEDS) -> pa.Table:
    """The rows of ``bootstrap_draws``: PCG64 uniforms, reproducible from ``seed``."""
    u = np.random.default_rng(seed).random((n_resamples, max_seeds))
    b, i = np.indices(u.shape)
    return pa.table({"b": b.ravel().astype(np.int32), "i": i.ravel().astype(np.int32),
                     "u": u.ravel()})


# Recomputed over the current circuits after every ingest: a control that lands later re-flags
# the circuits it concerns, and re-ingesting changes nothing. Superseded rows keep their flag.
FLAG_NOT_DISTINGUISHABLE = """
UPDATE circuits_all SET not_distinguishable = flags.flag
FROM (
    WITH controls AS (  -- every found control circuit, with the real run it is a control of
        SELECT run_key AS owner, task, loss_threshold, ablation, n_edges
        FROM circuits
        WHERE control = 'shuffled_task' AND found AND n_edges IS NOT NULL
        UNION ALL
        SELECT r.key, k.task, k.loss_threshold, k.ablation, k.n_edges
        FROM circuits k
        JOIN runs kr ON kr.key = k.run_key
        JOIN runs r ON r.family = kr.family AND r.seed = kr.seed
                   AND r.control IS DISTINCT FROM 'random_init'
        WHERE k.control = 'random_init' AND k.found AND k.n_edges IS NOT NULL
    )
    SELECT c.key,
           CASE WHEN c.control IS NOT NULL OR NOT coalesce(c.found, false)
                     OR c.n_edges IS NULL THEN NULL
                ELSE count(k.owner) > 0 END AS flag
    FROM circuits c
    LEFT JOIN controls k
           ON k.owner = c.run_key AND k.task = c.task AND k.loss_threshold = c.loss_threshold
          AND k.ablation = c.ablation AND k.n_edges <= ? * c.n_edges
    GROUP BY c.key, c.control, c.found, c.n_edges
) flags
WHERE circuits_all.key = flags.key
"""

CIRCUIT_SPREAD_VIEW = """
CREATE OR REPLACE VIEW circuit_spread AS
WITH per_seed AS (
    SELECT run_key, task, loss_threshold, ablation, control, prune_seed,
           min(n_edges) FILTER (found AND n_edges IS NOT NULL) AS n_edges,
           bool_or(not_distinguishable) AS not_distinguishable
    FROM circuits
    GROUP BY ALL
)
SELECT run_key, task, loss_threshold, ablation, control,
       count(*) AS n_seeds,
       count(n_edges) AS n_found,
       list_sort(list(prune_seed)) AS prune_seeds,
       median(n_edges) AS median_edges,
       min(n_edges) AS min_edges,
       max(n_edges) AS max_edges,
       quantile_cont(n_edges, 0.25) AS q1_edges,
       quantile_cont(n_edges, 0.75) AS q3_edges,
       quantile_cont(n_edges, 0.75) - quantile_cont(n_edges, 0.25) AS iqr_edges,
       count(*) FILTER (not_distinguishable) AS n_not_distinguishable
FROM per_seed
GROUP BY ALL
"""

FAMILIES_VIEW = f"""
CREATE OR REPLACE VIEW families AS
WITH members AS (
    SELECT *,
           row_number() OVER (PARTITION BY family, protocol ORDER BY seed, run_key) - 1 AS i,
           count(*) OVER (PARTITION BY family, protocol) AS n
    FROM frontier
), estimate AS (
    SELECT family, protocol,
           any_value(recipe) AS recipe, any_value(sparsity_target) AS sparsity_target,
           bool_and(dense) AS dense, any_value(n_layer) AS n_layer,
           any_value(d_model) AS d_model, any_value(n_params) AS n_params,
           any_value(tasks) AS tasks, any_value(n_tasks) AS n_tasks,
           count(*) AS n_seeds, list_sort(list(seed)) AS seeds,
           avg(heldout_loss) AS heldout_loss,
           min(heldout_loss) AS heldout_loss_min, max(heldout_loss) AS heldout_loss_max,
           exp(avg(ln(geomean_edges))) AS geomean_edges,
           sum(n_not_distinguishable) AS n_not_distinguishable
    FROM members
    GROUP BY family, protocol
), resampled AS (
    SELECT m.family, m.protocol, d.b, exp(avg(ln(m.geomean_edges))) AS geomean_edges
    FROM (SELECT DISTINCT family, protocol, n FROM members
          WHERE n BETWEEN 2 AND {MAX_BOOTSTRAP_SEEDS}) f
    JOIN bootstrap_draws d ON d.i < f.n
    JOIN members m ON m.family = f.family AND m.protocol = f.protocol
                  AND m.i = floor(d.u * f.n)
    GROUP BY m.family, m.protocol, d.b
), interval AS (
    SELECT family, protocol,
           quantile_cont(geomean_edges, 0.025) AS ci_low,
           quantile_cont(geomean_edges, 0.975) AS ci_high
    FROM resampled
    GROUP BY family, protocol
)
SELECT e.*, i.ci_low, i.ci_high
FROM estimate e LEFT JOIN interval i USING (family, protocol)
"""
