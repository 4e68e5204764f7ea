"""Nodes, circuits and their edges (method §4, "circuit size").

**Nodes** are the channels of the node sites of docs/jobs.md: ``l{l}.attn_in``, ``l{l}.q``,
``l{l}.k``, ``l{l}.v``, ``l{l}.attn_out``, ``l{l}.mlp_in``, ``l{l}.mlp_neuron``, ``l{l}.mlp_out``
and ``final_in``. ``NodeLayout`` numbers them all in model order (site by site, channel by
channel) so pruning can keep one flat mask vector; a ``Circuit`` is a layout plus a boolean
"kept" vector.

**Edges** (the circuit-size metric) are the nonzero entries of weight matrices whose input node
and output node are both kept. In layer ``l`` (``W[out, in]``, PyTorch's ``nn.Linear`` layout):

- ``attn_in->q``: ``attn_in[c] → q[j]`` via ``attn.q_proj.weight[j, c]``
- ``attn_in->k``: ``attn_in[c] → k[j]`` via ``attn.k_proj.weight[j, c]``
- ``attn_in->v``: ``attn_in[c] → v[j]`` via ``attn.v_proj.weight[j, c]``
- ``v->attn_out``: ``v[j] → attn_out[c]`` via ``attn.o_proj.weight[c, j]``
- ``mlp_in->mlp_neuron``: ``mlp_in[c] → mlp_neuron[n]`` via ``mlp.fc.weight[n, c]``
- ``mlp_neuron->mlp_out``: ``mlp_neuron[n] → mlp_out[c]`` via ``mlp.proj.weight[c, n]``

(weights are ``blocks.{l}.<name>``). Not counted, by choice:

- **Residual connections** (a write ``attn_out``/``mlp_out`` on channel ``c`` reaching a later
  read ``attn_in``/``mlp_in``/``final_in`` on the same channel). They are the identity, not a
  weight: weight sparsity cannot remove them and they cost no parameter, so counting them would
  measure the pruner's choice of residual nodes rather than the model's wiring. The paper's metric
  counts nonzero weights; so do we. (The RMSNorm in between multiplies every channel by one
  shared factor and its own gain; neither is a channel-to-channel weight.)
- **q–k interactions** (``q[j]`` with ``k[j]`` of the same head): a dot product of activations,
  not a weight. Likewise the attention pattern's routing of ``v`` across positions.
- **Embedding, positional, unembedding, bigram and bias entries**: their other end is a token or
  a logit, not a node.

``circuit_to_json`` gives the ``circuit.json`` document: kept nodes (site, index, kind, layer;
layer is null for ``final_in``), counts by kind and layer, edge counts by type, and the edges
themselves when there are at most ``max_listed_edges`` of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from runtime.model import SparseGPT

SITE_KINDS = (
    "attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out", "final_in",
)
BLOCK_KINDS = SITE_KINDS[:-1]

# (input kind, output kind, weight name inside blocks.{l}, weight is [out, in]).
EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("attn_in", "q", "attn.q_proj.weight"),
    ("attn_in", "k", "attn.k_proj.weight"),
    ("attn_in", "v", "attn.v_proj.weight"),
    ("v", "attn_out", "attn.o_proj.weight"),
    ("mlp_in", "mlp_neuron", "mlp.fc.weight"),
    ("mlp_neuron", "mlp_out", "mlp.proj.weight"),
)


def edge_type_name(src_kind: str, dst_kind: str) -> str:
    return f"{src_kind}->{dst_kind}"


def site_name(layer: int | None, kind: str) -> str:
    return kind if layer is None else f"l{layer}.{kind}"


def parse_site(site: str) -> tuple[int | None, str]:
    """``"l3.q"`` → ``(3, "q")``; ``"final_in"`` → ``(None, "final_in")``."""
    if site == "final_in":
        return None, site
    prefix, _, kind = site.partition(".")
    if not (prefix.startswith("l") and prefix[1:].isdigit() and kind in BLOCK_KINDS):
        raise ValueError(f"not a node site: {site!r}")
    return int(prefix[1:]), kind


@dataclass(frozen=True)
class NodeLayout:
    """Every node site in model order with its width; node ``i`` of the flat numbering is channel
    ``i - offset[site]`` of the site whose range holds it."""

    sites: tuple[str, ...]
    widths: tuple[int, ...]

    @classmethod
    def from_model(cls, model: SparseGPT) -> NodeLayout:
        """Read the sites off the model's parameters (the docs/jobs.md names), no forward pass."""
        n_layer = len(model.blocks)
        d_model = model.wte.weight.shape[1]
        sites: list[str] = []
        widths: list[int] = []
        for layer in range(n_layer):
            d_mlp = model.get_parameter(f"blocks.{layer}.mlp.fc.weight").shape[0]
            for kind in BLOCK_KINDS:
                sites.append(site_name(layer, kind))
                widths.append(d_mlp if kind == "mlp_neuron" else d_model)
        sites.append("final_in")
        widths.append(d_model)
        return cls(tuple(sites), tuple(widths))

    @property
    def n_layer(self) -> int:
        return (len(self.sites) - 1) // len(BLOCK_KINDS)

    @property
    def n_nodes(self) -> int:
        return sum(self.widths)

    @property
    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for site, width in zip(self.sites, self.widths, strict=True):
            out[site] = start
            start += width
        return out

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat per-node vector → one view per site."""
        return dict(zip(self.sites, flat.split(list(self.widths)), strict=True))

    def join(self, per_site: dict[str, Tensor]) -> Tensor:
        return torch.cat([per_site[site].reshape(-1) for site in self.sites])

    def node(self, flat_index: int) -> tuple[str, int]:
        for site, width in zip(self.sites, self.widths, strict=True):
            if flat_index < width:
                return site, flat_index
            flat_index -= width
        raise IndexError("node index out of range")

    def index(self, site: str, channel: int) -> int:
        return self.offsets[site] + channel

    def mask(self, nodes: list[tuple[str, int]]) -> Tensor:
        """A boolean flat vector with exactly ``nodes`` set."""
        kept = torch.zeros(self.n_nodes, dtype=torch.bool)
        for site, channel in nodes:
            kept[self.index(site, channel)] = True
        return kept


@dataclass(frozen=True)
class Circuit:
    layout: NodeLayout
    kept: Tensor  # (n_nodes,) bool

    def nodes(self) -> list[tuple[str, int]]:
        return [self.layout.node(int(i)) for i in self.kept.nonzero().flatten()]

    def site_mask(self, site: str) -> Tensor:
        return self.layout.split(self.kept)[site]

    @property
    def n_nodes(self) -> int:
        return int(self.kept.sum())

    def nodes_by_kind(self) -> dict[str, int]:
        per_site = self.layout.split(self.kept)
        counts = Counter({kind: 0 for kind in SITE_KINDS})
        for site, mask in per_site.items():
            counts[parse_site(site)[1]] += int(mask.sum())
        return dict(counts)

    def nodes_by_layer(self) -> dict[str, int]:
        """Keys are layer numbers as strings, ``"final"`` for ``final_in``."""
        counts: Counter[str] = Counter()
        for site, mask in self.layout.split(self.kept).items():
            layer = parse_site(site)[0]
            counts["final" if layer is None else str(layer)] += int(mask.sum())
        return dict(counts)


@dataclass(frozen=True)
class _WeightEdges:
    edge_type: str
    src: str
    dst: str
    weight: Tensor  # [out, in]
    live: Tensor  # [out, in] bool: nonzero weight, both ends kept


def _weight_edges(circuit: Circuit, model: SparseGPT) -> list[_WeightEdges]:
    per_site = circuit.layout.split(circuit.kept)
    out = []
    for layer in range(circuit.layout.n_layer):
        for src_kind, dst_kind, weight_name in EDGE_TYPES:
            src, dst = site_name(layer, src_kind), site_name(layer, dst_kind)
            weight = model.get_parameter(f"blocks.{layer}.{weight_name}").detach().cpu()
            live = (weight != 0) & per_site[dst].unsqueeze(1) & per_site[src].unsqueeze(0)
            out.append(_WeightEdges(edge_type_name(src_kind, dst_kind), src, dst, weight, live))
    return out


def count_edges(circuit: Circuit, model: SparseGPT) -> dict[str, int]:
    """Edges by type (every type present, zeros included); the total is the sum."""
    counts = {edge_type_name(s, d): 0 for s, d, _ in EDGE_TYPES}
    for group in _weight_edges(circuit, model):
        counts[group.edge_type] += int(group.live.sum())
    return counts


def list_edges(circuit: Circuit, model: SparseGPT) -> list[dict[str, Any]]:
    """Every counted edge: ``{type, src: [site, channel], dst: [site, channel], weight}``."""
    return [
        {"type": group.edge_type, "src": [group.src, in_ch], "dst": [group.dst, out_ch],
         "weight": float(group.weight[out_ch, in_ch])}
        for group in _weight_edges(circuit, model)
        for out_ch, in_ch in group.live.nonzero().tolist()
    ]


def circuit_to_json(
    circuit: Circuit,
    model: SparseGPT,
    scores: Tensor | None = None,
    max_listed_edges: int = 2000,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``circuit.json`` document. ``scores`` (flat, per node) are the pruning τ, if given."""
    nodes = []
    for site, channel in circuit.nodes():
        layer, kind = parse_site(site)
        node: dict[str, Any] = {"site": site, "index": channel, "kind": kind, "layer": layer}
        if scores is not None:
            node["tau"] = float(scores[circuit.layout.index(site, channel)])
        nodes.append(node)
    edges_by_type = count_edges(circuit, model)
    n_edges = sum(edges_by_type.values())
    return {
        **(extra or {}),
        "n_nodes": circuit.n_nodes,
        "n_nodes_total": circuit.layout.n_nodes,
        "nodes_by_kind": circuit.nodes_by_kind(),
        "nodes_by_layer": circuit.nodes_by_layer(),
        "n_edges": n_edges,
        "edges_by_type": edges_by_type,
        "edge_rule": "nonzero weight entries between two kept nodes; residual and q-k links "
        "are not weights and are not counted (runtime/pruning/circuit.py)",
        "nodes": nodes,
        "edges": list_edges(circuit, model) if n_edges <= max_listed_edges else None,
    }
