"""How densely a circuit's nodes are wired: what its edge count is made of.

A circuit's edges are the nonzero weights between its kept nodes (runtime/pruning/circuit.py),
so ``n_edges = possible_edges × density``, where ``possible_edges`` counts the node pairs the
circuit's weight matrices could connect (per layer and edge type, kept inputs × kept outputs)
and ``density`` is the share of them that are nonzero. In a dense model density is 1 and a
circuit's size is its node pairs; weight sparsity can only shrink a circuit through a lower
density or through fewer nodes. Splitting the matched ratio (results/matched.py) into those two
says which of them a sparse model's advantage comes from — and what bounds it: at equal node
pairs the ratio is 1 / density, and ``concentration`` (density / the model's kept fraction)
says how much denser the circuit is wired than the model as a whole (> 1: the pruning picked
nodes joined by the weights the model kept).
"""

from __future__ import annotations

from runtime.pruning.circuit import EDGE_TYPES

_EDGE_KINDS = ", ".join(f"('{src}', '{dst}')" for src, dst, _ in EDGE_TYPES)

CIRCUIT_DENSITY_VIEW = f"""
CREATE OR REPLACE VIEW circuit_density AS
WITH edge_kinds(src, dst) AS (VALUES {_EDGE_KINDS}),
per_site AS (
    SELECT prune_key, layer, kind, count(*) AS n
    FROM circuit_nodes WHERE layer IS NOT NULL
    GROUP BY ALL
), possible AS (
    SELECT s.prune_key, sum(s.n * d.n) AS possible_edges
    FROM edge_kinds e
    JOIN per_site s ON s.kind = e.src
    JOIN per_site d ON d.prune_key = s.prune_key AND d.layer = s.layer AND d.kind = e.dst
    GROUP BY s.prune_key
)
SELECT c.key, c.run_key, c.task, c.control, c.prune_seed, c.loss_threshold, c.ablation,
       r.sparsity_target, r.kept_fraction, r.d_model, r.seed, r.heldout_loss,
       c.n_nodes, c.n_edges, coalesce(p.possible_edges, 0)::BIGINT AS possible_edges,
       c.n_edges / nullif(coalesce(p.possible_edges, 0), 0) AS density,
       density / r.kept_fraction AS concentration
FROM circuits c
JOIN runs r ON r.key = c.run_key
LEFT JOIN possible p ON p.prune_key = c.key
WHERE c.found AND c.n_edges IS NOT NULL
"""
