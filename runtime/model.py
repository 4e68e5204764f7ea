"""The weight-sparse GPT of Gao et al. 2025, "Weight-sparse transformers have interpretable
circuits" (OpenAI, arXiv 2511.13653), method §1, in one readable file after nanoGPT's model.py.

A GPT-2-style pre-norm decoder with RMSNorm (so zero keeps a privileged meaning), a GELU MLP,
untied embedding and unembedding, optional learned positions, optional attention sink and an
optional dense bigram table. Every node site applies AbsTopK (keep the largest |x| along the
feature axis; at ``final_in`` only with ``final_topk``, as the paper has none there) and then,
when ``SparseGPT.hook`` is set, hands the activation to the hook, which may replace it (pruning
mean-ablates nodes this way; a site the hook replaces wholesale is not computed, ``Sites.node``).
Site and parameter names are the contract in docs/jobs.md. Weight sparsity itself is not in the
model: the training loop projects the tensors named by ``sparse_parameters`` after every step
(runtime/training/sparsity.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spec.recipe import DataSpec, ModelSpec

Hook = Callable[[str, Tensor], Tensor]
"""``hook(site, activation) -> activation``, called at every node site. A hook may also have a
``fixed(site) -> Tensor | None`` method: the one (width,) row it replaces *every* activation of
the site by, if it does (a pruned circuit's fully ablated site), so the model need not compute
the site at all."""


class Sites:
    """The hook as one block sees it: local site names (``"q"``) get the block's prefix
    (``"l3."``)."""

    def __init__(self, hook: Hook | None, prefix: str) -> None:
        self.hook, self.prefix = hook, prefix
        self.fixed: Callable[[str], Tensor | None] | None = getattr(hook, "fixed", None)

    def __call__(self, kind: str, x: Tensor) -> Tensor:
        return x if self.hook is None else self.hook(self.prefix + kind, x)

    def node(self, kind: str, lead: torch.Size, compute: Callable[[], Tensor]) -> Tensor:
        """The site's activations (*lead, width): ``compute()`` through the hook, or the hook's
        fixed row at every position without calling ``compute`` — nothing upstream of a site is
        computed for a site that is replaced wholesale. (Materialised, not a stride-0 view, so
        what reads it runs the kernels it runs on computed activations: the same bits.)"""
        value = None if self.fixed is None else self.fixed(self.prefix + kind)
        if value is None:
            return self(kind, compute())
        return value.expand(*lead, -1).contiguous()


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 2048
    context: int = 256
    n_layer: int = 8
    d_model: int = 256
    d_head: int = 16
    d_mlp: int = 1024
    afrac: float = 0.25  # fraction of activations AbsTopK keeps at each node site
    attention_sink: bool = False
    pos_emb: str = "none"  # "none" (NoPE) or "learned"
    bigram: bool = False
    final_topk: bool = False  # AbsTopK on final_in as well; the paper has none after ln_f

    @property
    def n_head(self) -> int:
        return self.d_model // self.d_head

    @classmethod
    def from_specs(cls, model: ModelSpec, data: DataSpec) -> GPTConfig:
        return cls(
            vocab_size=data.vocab_size, context=data.context, n_layer=model.n_layer,
            d_model=model.d_model, d_head=model.d_head, d_mlp=model.mlp_width,
            afrac=model.afrac, attention_sink=model.attention_sink, pos_emb=model.pos_emb,
            bigram=model.bigram, final_topk=model.final_topk,
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        # ``scale_hook(scale) -> scale`` sees the per-position factor 1/rms(x), (..., 1); pruning
        # uses it to freeze the norms at the full model's values (runtime/pruning/norms.py).
        self.scale_hook: Callable[[Tensor], Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 even under bf16 autocast; the mean of squares loses precision fast.
        xf = x.float()
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.scale_hook is not None:
            scale = self.scale_hook(scale)
        return (xf * scale).type_as(x) * self.weight


class AbsTopK(nn.Module):
    """Keep the entries of each row whose |x| is at least the ``k = ceil(afrac·width)``-th
    largest, zero the rest: k entries, more only where |x| ties at the k-th (all of a tie are
    kept, on every device, rather than whichever a top-k kernel happens to return). Gradients
    flow to the kept entries only; afrac 1.0 is the identity."""

    def __init__(self, afrac: float) -> None:
        super().__init__()
        self.afrac = afrac

    def forward(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        # The epsilon keeps float noise (0.1·30 = 3.0000000000000004) from adding one more entry.
        k = math.ceil(self.afrac * width - 1e-9)
        if k >= width:
            return x
        magnitude = x.detach().abs()
        return x * (magnitude >= kth_largest(magnitude, k))


def kth_largest(values: Tensor, k: int) -> Tensor:
    """(…, 1) the ``k``-th largest of each row of ``values`` (…, W)."""
    if values.device.type == "cpu":
        # numpy's introselect finds it 3-5x faster than torch.topk on a CPU, where AbsTopK's
        # top-k was a third of a training or pruning step's time (numpy has no bfloat16).
        as_numpy = (values.float() if values.dtype == torch.bfloat16 else values).numpy()
        at = values.shape[-1] - k
        return torch.from_numpy(np.partition(as_numpy, at, axis=-1)[..., at, None]).to(values.dtype)
    return values.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model)
        # The sink is one extra key per head with a learnable logit and a zero value: attention
        # mass can go "nowhere" instead of being forced onto some real token.
        self.sink = nn.Parameter(torch.zeros(cfg.n_head)) if cfg.attention_sink else None
        self.topk = AbsTopK(cfg.afrac)

    def forward(self, x: Tensor, site: Sites, positions: Tensor | None = None,
                attend: Tensor | None = None) -> Tensor:
        """(B, T, C) → (B, T, C) before the ``attn_out`` site; with ``positions`` (B,) or (B, R),
        only the queries at those positions are computed: → (B·R, C), and q is (B·R, C) at its
        site. ``attend`` (B, T, T) bool: which keys each query sees (default: causal)."""
        B, T, C = x.shape
        if positions is None:
            xq, Tq = x, T  # (B, T, C)
            # plain causal: SDPA's is_causal says it without a T×T mask
            visible = None if attend is None else attend.view(B, 1, T, T)
        else:
            at = positions.view(B, -1)  # (B, R)
            Tq = at.shape[1]
            xq = at_positions(x, at)  # (B·R, C)
            seen = (torch.arange(T, device=x.device) <= at[..., None] if attend is None
                    else at_positions(attend, at).view(B, Tq, T))  # (B, R, T)
            visible = seen.view(B, 1, Tq, T)  # each query's own row of the mask
        q = site.node("q", xq.shape[:-1], lambda: self.topk(self.q_proj(xq)))
        k = site.node("k", x.shape[:-1], lambda: self.topk(self.k_proj(x)))
        v = site.node("v", x.shape[:-1], lambda: self.topk(self.v_proj(x)))
        q = q.view(B, Tq, self.n_head, self.d_head).transpose(1, 2)  # (B, H, Tq, dh)
        k, v = (a.view(B, T, self.n_head, self.d_head).transpose(1, 2) for a in (k, v))
        if self.sink is None:  # (B, H, T, dh), or (B, H, 1, dh) at given positions
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible,
                                               is_causal=visible is None)
        else:
            if visible is None:
                visible = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, H, Tq, T)
            att = att.masked_fill(~visible, float("-inf"))
            sink = self.sink.view(1, -1, 1, 1).expand(B, -1, Tq, 1).to(att.dtype)
            att = torch.cat([att, sink], dim=-1).float().softmax(dim=-1)[..., :-1]  # drop sink
            y = att.to(v.dtype) @ v  # (B, H, Tq, dh)
        y = y.transpose(1, 2)  # (B, Tq, H, dh)
        y = y.reshape(B, T, C) if positions is None else y.reshape(B * Tq, C)
        return self.topk(self.o_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.proj = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.topk = AbsTopK(cfg.afrac)

    def forward(self, x: Tensor, site: Sites) -> Tensor:
        """(B, T, C) → (B, T, C) before the ``mlp_out`` site."""
        h = site.node("mlp_neuron", x.shape[:-1], lambda: self.topk(F.gelu(self.fc(x))))
        return self.topk(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_attn = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln_mlp = RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.topk = AbsTopK(cfg.afrac)

    def forward(self, x: Tensor, site: Sites, positions: Tensor | None = None,
                attend: Tensor | None = None) -> Tensor:
        """(B, T, C) → (B, T, C); with ``positions`` (B,) or (B, R), only the outputs at those
        positions, (B·R, C): what the last block owes a task loss. Keys and values still see
        every position; the query, attention output and MLP run at those positions alone."""
        out = x if positions is None else at_positions(x, positions)
        lead = out.shape[:-1]  # (B, T) or (B·R,)
        h = out + site.node("attn_out", lead, lambda: self.attn(
            site.node("attn_in", x.shape[:-1], lambda: self.topk(self.ln_attn(x))), site,
            positions, attend))
        return h + site.node("mlp_out", lead, lambda: self.mlp(
            site.node("mlp_in", lead, lambda: self.topk(self.ln_mlp(h))), site))


def at_positions(x: Tensor, positions: Tensor) -> Tensor:
    """Rows of ``x`` (B, T, …) at ``positions`` (B,) or (B, R) of each row → (B·R, …)."""
    B = x.shape[0]
    return x[torch.arange(B, device=x.device)[:, None], positions.view(B, -1)].flatten(0, 1)


class SparseGPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model) if cfg.pos_emb == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = RMSNorm(cfg.d_model)
        # The paper applies no AbsTopK after the final norm; keeping it is an option (identity
        # AbsTopK at afrac 1.0 otherwise, so the forward reads the same either way).
        self.topk = AbsTopK(cfg.afrac if cfg.final_topk else 1.0)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.bigram = nn.Embedding(cfg.vocab_size, cfg.vocab_size) if cfg.bigram else None
        self.hook: Hook | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 init: N(0, 0.02), residual writes scaled by 1/sqrt(2·n_layer) so the residual
        # stream's variance does not grow with depth; biases zero; the bigram table starts at zero
        # so it contributes nothing until it learns something.
        for name, param in self.named_parameters():
            if name.endswith(".bias") or name == "bigram.weight":
                nn.init.zeros_(param)
            elif name.endswith(("o_proj.weight", "mlp.proj.weight")):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
            elif param.dim() == 2:
                nn.init.normal_(param, std=0.02)

    def forward(self, idx: Tensor, positions: Tensor | None = None,
                pos_ids: Tensor | None = None, attend: Tensor | None = None) -> Tensor:
        """``idx`` (B, T) token ids → next-token logits (B, T, V). With ``positions`` (B,) or
        (B, R), only the logits at those positions, (B·R, V): all a task loss needs. The last
        block then runs its query, attention output and MLP at those positions only (its sites
        are (B·R, C), as ``final_in`` is), and most of the unembedding is skipped; both dominate
        small models. ``pos_ids`` (B, T) and ``attend`` (B, T, T) bool replace the positions
        0…T-1 and the causal mask: several sequences packed into one row (a prompt pair sharing
        its common prefix, ``runtime.pruning.pairs.PackedPairs``)."""
        T = idx.shape[1]
        longest = T
        if pos_ids is not None:
            # A packed row holds prompts that each fit the context; only learned positions read
            # their ids, so only they are checked (reading the largest id is a device sync).
            longest = int(pos_ids.max()) + 1 if self.wpe is not None else 0
        if self.cfg.context < longest:
            raise ValueError(f"sequence length {longest} exceeds the context {self.cfg.context}")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device) if pos_ids is None else pos_ids)
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            x = block(x, Sites(self.hook, f"l{layer}."), positions if layer == last else None,
                      attend)  # → (B·R, C) after the last block
        if positions is not None:
            idx = at_positions(idx, positions)  # (B·R,)
        x = Sites(self.hook, "").node("final_in", x.shape[:-1],
                                      lambda: self.topk(self.ln_f(x)))  # (B, T, C) or (B·R, C)
        logits = self.lm_head(x)  # (B, T, V) or (B·R, V)
        if self.bigram is not None:
            logits = logits + self.bigram(idx)  # the current (last seen) token's row
        return logits


# Norm gains, the bigram table and the sink logits stay dense (method §2); all else is projected.
_DENSE_PARAMETER = re.compile(r"(^|\.)(ln_\w+\.weight|attn\.sink)$|^bigram\.weight$")


def sparse_parameters(model: SparseGPT) -> list[tuple[str, Tensor]]:
    """The (name, tensor) pairs projected to top-k after every optimizer step: every weight
    matrix, bias, the embeddings and the unembedding."""
    return [
        (name, param) for name, param in model.named_parameters()
        if not _DENSE_PARAMETER.search(name)
    ]


# The min-nonzeros floor (method §2) protects MLP neurons and attention channels, on both sides
# of each: a neuron's incoming weights are a row of the ``nn.Linear`` weight that computes it
# (stored ``(out, in)``), its outgoing weights a column of the one that reads it. So: rows of
# q/k/v_proj (each q, k, v channel's inputs) and mlp.fc (each neuron's inputs); columns of o_proj
# (each v channel's write to the residual stream, through the head's output) and mlp.proj (each
# neuron's write). q and k channels have no outgoing weights (they meet in the attention score).
# Residual channels, the embeddings, the unembedding and biases are exempt, as in the paper.
_FLOOR_AXIS = {
    re.compile(r"\.attn\.[qkv]_proj\.weight$"): 0,
    re.compile(r"\.mlp\.fc\.weight$"): 0,
    re.compile(r"\.attn\.o_proj\.weight$"): 1,
    re.compile(r"\.mlp\.proj\.weight$"): 1,
}


def floor_axis(name: str) -> int | None:
    """The axis of sparse parameter ``name`` that indexes the neurons/channels whose weights the
    min-nonzeros floor protects (0: a row each, 1: a column each), or None where no floor
    applies."""
    return next((axis for pattern, axis in _FLOOR_AXIS.items() if pattern.search(name)), None)
