"""A circuit as an inline SVG: node-site rows × layer columns, one dot per kept node."""

from __future__ import annotations

import math
from collections import Counter
from html import escape

SITE_ROWS = ("attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out", "final_in")
CELL_W, CELL_H, LABEL_W, HEADER_H = 78, 20, 84, 36
DOTS_PER_CELL = 10  # beyond this a cell shows dots and a "+n" count
DOT_R, DOT_STEP = 2.6, 6.6
HEADING_CHAR_W = 6.5  # an upper bound on a bold 10 px sans character: the heading must not clip


def circuit_svg(
    nodes: list[tuple[str, int | None]], n_layer: int, n_edges: int | None, title: str
) -> str:
    """``nodes`` are (kind, layer) pairs, layer None for ``final_in``; layers ≥ n_layer widen it."""
    layers = max([n_layer] + [layer + 1 for _, layer in nodes if layer is not None])
    counts = Counter((kind, layers if layer is None else layer) for kind, layer in nodes)
    edges = "?" if n_edges is None else str(n_edges)
    heading = f"{title} — {len(nodes)} nodes, {edges} edges"
    # A long task name outgrows a narrow (few-layer) grid; SVG clips at its width, so widen it.
    width = max(LABEL_W + CELL_W * (layers + 1) + 8, 8 + math.ceil(HEADING_CHAR_W * len(heading)))
    height = HEADER_H + CELL_H * len(SITE_ROWS) + 6
    parts = [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" role="img">',
        f"<title>{escape(title)}: {len(nodes)} nodes, {edges} edges</title>",
        f'<text x="4" y="12" font-weight="bold">{escape(heading)}</text>',
    ]
    for col in range(layers + 1):
        x = LABEL_W + col * CELL_W
        label = "final" if col == layers else f"layer {col}"
        parts.append(f'<text x="{x + CELL_W / 2}" y="{HEADER_H - 6}" text-anchor="middle" '
                     f'fill="#555">{label}</text>')
    for row, kind in enumerate(SITE_ROWS):
        y = HEADER_H + row * CELL_H
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + CELL_H * 0.65}" text-anchor="end">'
                     f"{kind}</text>")
        for col in range(layers + 1):
            x = LABEL_W + col * CELL_W
            # final_in exists only after the last layer, and only final_in exists there.
            exists = (kind == "final_in") == (col == layers)
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" '
                         f'fill="{"#fff" if exists else "#eee"}" stroke="#ccc"/>')
            n = counts.get((kind, col), 0)
            shown = n if n <= DOTS_PER_CELL else DOTS_PER_CELL - 3  # leave room for "+n"
            for i in range(shown):
                parts.append(f'<circle cx="{x + 6 + i * DOT_STEP:.1f}" cy="{y + CELL_H / 2}" '
                             f'r="{DOT_R}" fill="#c0392b"/>')
            if n > DOTS_PER_CELL:
                parts.append(f'<text x="{x + CELL_W - 3}" y="{y + CELL_H * 0.68}" '
                             f'text-anchor="end" fill="#c0392b">+{n - shown}</text>')
    parts.append("</svg>")
    return "".join(parts)
