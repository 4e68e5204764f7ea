"""The paper's comparison (method §5): a sparse model's circuits against a dense model's *at the
same pretraining loss*.

Dense models of one recipe and protocol form a family along their held-out loss: one point per
dense model family (``runs.family``: a width, say, over its seeds), at its seeds' mean loss and
the geometric mean of their circuit sizes, so that one seed's luck does not pick the bracket.
For each sparse run and task, the family's circuit size at the sparse run's loss is
interpolated between the two dense points that bracket it — the closest one with loss ≤ and the
closest with loss ≥ — linearly in log(edges) against loss, the space in which circuit size moves
smoothly with capability. A sparse run outside the family's loss range gets no dense size and no
ratio: extrapolating would invent the very number the comparison is for. A dense circuit of zero
edges cannot be interpolated in log space and is left out of the family for that task.

Only circuits of a behaviour the model has are compared: a run whose full model misses the loss
threshold on a task (``model_solves`` false: held-out pairs, uncalibrated) is left out of the
dense family for that task, and a sparse run's row for it gets no ratio. Pruning with
calibration can still find a circuit there — a few nodes whose weak signal a fitted logit scale
amplifies past the threshold, often through the last token's embedding — but that circuit is
not how the model does the task, because the model does not do it.

``ratio`` = dense edges at the matched loss / sparse edges (> 1: the sparse circuit is smaller);
per run, ``geomean_ratio`` is the geometric mean over the tasks that got a ratio, next to
``n_matched`` of ``n_tasks`` so that a mean over a few tasks is not read as one over all.
"""

from __future__ import annotations

MATCHED_VIEW = """
CREATE OR REPLACE VIEW matched AS
WITH te AS (
    SELECT t.run_key, t.protocol, t.task, t.n_edges, t.model_solves, r.recipe, r.heldout_loss,
           r.sparsity_target, r.n_params, r.n_nonzero, r.d_model, r.family, r.seed
    FROM task_edges t JOIN runs r ON r.key = t.run_key
    WHERE r.heldout_loss IS NOT NULL AND r.control IS NULL
), dense AS (  -- one point per dense family: its seeds' mean loss and geometric-mean size
    SELECT recipe, protocol, task, family, avg(heldout_loss) AS heldout_loss,
           exp(avg(ln(n_edges))) AS n_edges, count(*) AS n_seeds
    FROM te WHERE sparsity_target >= 1 AND n_edges > 0 AND model_solves
    GROUP BY ALL
), bracket AS (
    SELECT s.run_key, s.recipe, s.protocol, s.task, s.heldout_loss, s.sparsity_target,
           s.n_params, s.n_nonzero, s.d_model, s.family, s.seed, s.model_solves,
           CASE WHEN s.model_solves THEN s.n_edges END AS sparse_edges,
           count(d.family) AS n_dense, coalesce(sum(d.n_seeds), 0)::BIGINT AS n_dense_runs,
           max(d.heldout_loss) FILTER (d.heldout_loss <= s.heldout_loss) AS below_loss,
           arg_max(d.n_edges, d.heldout_loss) FILTER (d.heldout_loss <= s.heldout_loss)
               AS below_edges,
           min(d.heldout_loss) FILTER (d.heldout_loss >= s.heldout_loss) AS above_loss,
           arg_min(d.n_edges, d.heldout_loss) FILTER (d.heldout_loss >= s.heldout_loss)
               AS above_edges
    FROM te s
    LEFT JOIN dense d ON d.recipe = s.recipe AND d.protocol = s.protocol AND d.task = s.task
    WHERE s.sparsity_target < 1
    GROUP BY ALL
), interpolated AS (
    SELECT *,
        CASE
            WHEN below_loss IS NULL OR above_loss IS NULL THEN NULL
            WHEN above_loss = below_loss THEN below_edges::DOUBLE
            ELSE exp(ln(below_edges) + (heldout_loss - below_loss) / (above_loss - below_loss)
                     * (ln(above_edges) - ln(below_edges)))
        END AS dense_edges
    FROM bracket
), ratios AS (
    SELECT *, CASE WHEN sparse_edges > 0 THEN dense_edges / sparse_edges END AS ratio
    FROM interpolated
)
SELECT run_key, recipe, protocol, task, heldout_loss, sparsity_target, n_params, n_nonzero,
       d_model, family, seed, model_solves, sparse_edges, dense_edges, ratio,
       below_loss AS dense_loss_below, above_loss AS dense_loss_above, n_dense, n_dense_runs,
       exp(avg(ln(ratio)) OVER run) AS geomean_ratio,
       count(ratio) OVER run AS n_matched,
       count(*) OVER run AS n_tasks
FROM ratios
WINDOW run AS (PARTITION BY run_key, protocol)
"""
