"""SparseGPT: AbsTopK, the node-site hook, attention (causal, sink) and the parameter contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from runtime.model import (
    AbsTopK,
    GPTConfig,
    SparseGPT,
    floor_axis,
    kth_largest,
    sparse_parameters,
)
from spec.recipe import DataSpec, ModelSpec

TINY = GPTConfig(vocab_size=300, context=16, n_layer=2, d_model=32, d_head=8, d_mlp=64)
FULL = GPTConfig(vocab_size=300, context=16, n_layer=2, d_model=32, d_head=8, d_mlp=64,
                 attention_sink=True, pos_emb="learned", bigram=True)
SITES_PER_LAYER = ["attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"]


def tokens(cfg: GPTConfig, batch: int = 3, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(cfg.vocab_size, (batch, cfg.context), generator=generator)


def model_for(cfg: GPTConfig, seed: int = 0) -> SparseGPT:
    torch.manual_seed(seed)
    return SparseGPT(cfg)


@pytest.mark.parametrize(("afrac", "width", "k"), [(0.25, 32, 8), (0.1, 30, 3), (0.3, 10, 3),
                                                    (0.01, 16, 1)])
def test_abstopk_keeps_the_configured_fraction(afrac: float, width: int, k: int) -> None:
    x = torch.randn(4, 5, width)
    y = AbsTopK(afrac)(x)
    kept = y != 0
    assert bool((kept.sum(-1) == k).all())
    assert torch.equal(y[kept], x[kept])
    dropped_max = x.abs().masked_fill(kept, 0).amax(-1)
    kept_min = x.abs().masked_fill(~kept, math.inf).amin(-1)
    assert bool((kept_min >= dropped_max).all())


def test_abstopk_keeps_every_entry_tied_at_the_kth() -> None:
    x = torch.tensor([[3.0, -3.0, 1.0, 0.5], [0.0, 0.0, 0.0, 2.0], [1.0, -2.0, 2.0, -2.0]])
    assert AbsTopK(0.25)(x).tolist() == [[3.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0],
                                         [0.0, -2.0, 2.0, -2.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kth_largest_on_a_cpu_is_torch_topks(dtype: torch.dtype) -> None:
    # The CPU path selects with numpy; every other device takes the k-th of torch.topk's values.
    values = torch.randint(0, 6, (64, 3, 32)).to(dtype) / 4  # many ties
    values[0] = 0
    for k in (1, 8, 31):
        expected = values.topk(k, dim=-1).values.amin(-1, keepdim=True)
        got = kth_largest(values, k)
        assert got.dtype == dtype and torch.equal(got, expected)


def test_abstopk_identity_at_one_and_gradient_only_through_kept() -> None:
    x = torch.randn(2, 8)
    assert AbsTopK(1.0)(x) is x
    x.requires_grad_(True)
    AbsTopK(0.25)(x).sum().backward()
    assert torch.equal(x.grad != 0, AbsTopK(0.25)(x.detach()) != 0)


def test_forward_shape_and_config_from_specs() -> None:
    cfg = GPTConfig.from_specs(ModelSpec(n_layer=1, d_model=32, d_head=16, afrac=0.5),
                               DataSpec(vocab_size=300, context=16))
    assert (cfg.n_head, cfg.d_mlp, cfg.context, cfg.vocab_size) == (2, 128, 16, 300)
    assert model_for(cfg)(tokens(cfg)).shape == (3, 16, 300)


def test_hook_sees_every_site_in_order_with_its_shape_after_abstopk() -> None:
    model = model_for(TINY)
    seen: list[tuple[str, tuple[int, ...], int]] = []

    def record(site: str, x: Tensor) -> Tensor:
        seen.append((site, tuple(x.shape), int((x != 0).sum(-1).max())))
        return x

    model.hook = record
    model(tokens(TINY))
    expected_sites = [f"l{layer}.{site}" for layer in range(2) for site in SITES_PER_LAYER]
    assert [site for site, _, _ in seen] == [*expected_sites, "final_in"]
    for site, shape, max_nonzero in seen[:-1]:
        width = 64 if site.endswith("mlp_neuron") else 32
        assert shape == (3, 16, width)
        assert max_nonzero <= width // 4  # AbsTopK ran before the hook
    # ...but not after the final norm, by default: the paper has no AbsTopK there.
    assert seen[-1][1:] == ((3, 16, 32), 32)


def test_final_topk_is_an_option() -> None:
    assert not GPTConfig.from_specs(ModelSpec(), DataSpec()).final_topk
    cfg = GPTConfig.from_specs(ModelSpec(n_layer=1, d_model=32, d_head=8, final_topk=True),
                               DataSpec(vocab_size=300, context=16))
    model = model_for(cfg)
    widths: dict[str, int] = {}

    def record(site: str, x: Tensor) -> Tensor:
        widths[site] = int((x != 0).sum(-1).max())
        return x

    model.hook = record
    model(tokens(cfg))
    assert widths["final_in"] == 8  # a quarter of d_model 32


def test_hook_can_replace_activations() -> None:
    model = model_for(TINY)
    idx = tokens(TINY)
    baseline = model(idx)
    model.hook = lambda site, x: torch.zeros_like(x) if site == "final_in" else x
    assert torch.equal(model(idx), torch.zeros(3, 16, 300))  # no bias on the unembedding
    model.hook = lambda site, x: torch.zeros_like(x) if site == "l1.mlp_neuron" else x
    assert not torch.allclose(model(idx), baseline)
    model.hook = None
    assert torch.equal(model(idx), baseline)


class Replacing:
    """A hook that replaces the sites in ``fixed_sites`` by a constant row, and says so."""

    def __init__(self, fixed_sites: set[str], announce: bool) -> None:
        self.fixed_sites, self.announce, self.seen = fixed_sites, announce, set[str]()

    def row(self, site: str, width: int) -> Tensor:
        return torch.linspace(-1, 1, width) * (1 + len(site))

    def __call__(self, site: str, x: Tensor) -> Tensor:
        self.seen.add(site)
        return self.row(site, x.shape[-1]).expand_as(x) if site in self.fixed_sites else x

    def fixed(self, site: str) -> Tensor | None:
        if not self.announce or site not in self.fixed_sites:
            return None
        return self.row(site, TINY.d_mlp if site.endswith("mlp_neuron") else TINY.d_model)


@pytest.mark.parametrize("positions", [None, torch.tensor([15, 3, 9])], ids=["all", "last"])
def test_a_site_the_hook_fixes_is_not_computed_and_the_logits_are_the_same_bits(
    positions: Tensor | None,
) -> None:
    # l0's attention output fixed: nothing of l0's attention is computed (attn_in, q, k, v);
    # l1's MLP neurons fixed: only those. Fixing changes no bit of the logits.
    model, idx = model_for(TINY), tokens(TINY)
    fixed = {"l0.attn_out", "l1.mlp_neuron", "l1.k"}
    outputs = {}
    for announce in (False, True):
        model.hook = hook = Replacing(fixed, announce)
        outputs[announce] = model(idx, positions)
        if announce:
            skipped = {"l0.attn_in", "l0.q", "l0.k", "l0.v"} | fixed
            assert hook.seen == {f"l{layer}.{kind}" for layer in (0, 1)
                                 for kind in SITES_PER_LAYER} - skipped | {"final_in"}
    assert torch.equal(outputs[True], outputs[False])


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["plain", "sink+learned+bigram"])
def test_attention_is_causal(cfg: GPTConfig) -> None:
    model = model_for(cfg)
    idx = tokens(cfg)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % cfg.vocab_size
    assert torch.allclose(model(idx)[:, :10], model(changed)[:, :10], atol=1e-6)
    assert not torch.allclose(model(idx)[:, 10:], model(changed)[:, 10:])


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["plain", "sink+learned+bigram"])
def test_logits_at_positions_equal_the_full_forward_there_even_with_a_hook(
    cfg: GPTConfig,
) -> None:
    # the last block runs at those positions only; a hook that ablates channels at every site
    # (pruning's mean ablation) must see the same values there as in the full forward
    model, idx = model_for(cfg), tokens(cfg)
    positions = torch.tensor([15, 3, 9])
    rows = torch.arange(len(positions))
    shapes: dict[str, tuple[int, ...]] = {}

    def ablate(site: str, x: Tensor) -> Tensor:
        shapes[site] = tuple(x.shape)
        return torch.cat([torch.full_like(x[..., :2], 0.5), x[..., 2:]], -1)

    for hook in (None, ablate):
        model.hook = hook
        full = model(idx)[rows, positions]
        assert torch.allclose(model(idx, positions), full, atol=1e-5)
    # earlier blocks and the last block's keys and values see every position; the rest one
    width = {"mlp_neuron": cfg.d_mlp}
    for site in ("attn_in", "k", "v"):
        assert shapes[f"l1.{site}"] == (3, 16, width.get(site, cfg.d_model))
    for site in ("q", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"):
        assert shapes[f"l0.{site}"] == (3, 16, width.get(site, cfg.d_model))
        assert shapes[f"l1.{site}"] == (3, width.get(site, cfg.d_model))
    assert shapes["final_in"] == (3, cfg.d_model)


def test_sink_path_matches_sdpa_when_the_sink_is_off() -> None:
    with_sink = model_for(GPTConfig(**{**vars(TINY), "attention_sink": True}))
    plain = model_for(TINY)
    state = {k: v for k, v in with_sink.state_dict().items() if not k.endswith("sink")}
    plain.load_state_dict(state)
    with torch.no_grad():
        for block in with_sink.blocks:
            block.attn.sink.fill_(-1e9)  # a sink nobody attends to
    idx = tokens(TINY)
    assert torch.allclose(with_sink(idx), plain(idx), atol=1e-5)


def test_a_dominant_sink_silences_attention() -> None:
    model = model_for(GPTConfig(**{**vars(TINY), "attention_sink": True}))
    outputs: dict[str, Tensor] = {}

    def record(site: str, x: Tensor) -> Tensor:
        outputs[site] = x
        return x

    model.hook = record
    with torch.no_grad():
        for block in model.blocks:
            block.attn.sink.fill_(1e4)
            block.attn.o_proj.bias.zero_()
        model(tokens(TINY))
    assert float(outputs["l0.attn_out"].abs().max()) == 0.0


def test_bigram_adds_the_current_tokens_row() -> None:
    cfg = GPTConfig(**{**vars(TINY), "bigram": True})
    model = model_for(cfg)
    idx = tokens(cfg)
    with torch.no_grad():
        before = model(idx)
        model.bigram.weight[idx[0, 3], 7] = 5.0
        after = model(idx)
    assert float(after[0, 3, 7] - before[0, 3, 7]) == pytest.approx(5.0)


def test_parameter_names_follow_the_contract() -> None:
    names = {name: tuple(p.shape) for name, p in model_for(FULL).named_parameters()}
    d, d_mlp, vocab = 32, 64, 300
    expected = {"wte.weight": (vocab, d), "wpe.weight": (16, d), "ln_f.weight": (d,),
                "lm_head.weight": (vocab, d), "bigram.weight": (vocab, vocab)}
    for layer in range(2):
        prefix = f"blocks.{layer}"
        expected |= {f"{prefix}.ln_attn.weight": (d,), f"{prefix}.ln_mlp.weight": (d,),
                     f"{prefix}.attn.sink": (4,),
                     f"{prefix}.mlp.fc.weight": (d_mlp, d), f"{prefix}.mlp.fc.bias": (d_mlp,),
                     f"{prefix}.mlp.proj.weight": (d, d_mlp), f"{prefix}.mlp.proj.bias": (d,)}
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected |= {f"{prefix}.attn.{proj}.weight": (d, d), f"{prefix}.attn.{proj}.bias": (d,)}
    assert names == expected


def test_floor_axes_protect_neurons_and_channels_on_both_sides() -> None:
    axes = {name: floor_axis(name) for name, _ in sparse_parameters(model_for(FULL))}
    for layer in range(2):
        prefix = f"blocks.{layer}"
        # Rows: the inputs of each q/k/v channel and MLP neuron; columns: what each v channel
        # (through o_proj) and each MLP neuron (through proj) writes to the residual stream.
        assert {axes.pop(f"{prefix}.attn.{proj}.weight") for proj in ("q_proj", "k_proj",
                                                                      "v_proj")} == {0}
        assert axes.pop(f"{prefix}.mlp.fc.weight") == 0
        assert axes.pop(f"{prefix}.attn.o_proj.weight") == 1
        assert axes.pop(f"{prefix}.mlp.proj.weight") == 1
    # Embeddings, the unembedding and every bias are exempt.
    assert set(axes.values()) == {None}
    assert {"wte.weight", "wpe.weight", "lm_head.weight", "blocks.0.mlp.fc.bias"} <= set(axes)


def test_sparse_parameters_exclude_gains_sinks_and_bigram() -> None:
    model = model_for(FULL)
    sparse = {name for name, _ in sparse_parameters(model)}
    dense = set(dict(model.named_parameters())) - sparse
    assert dense == {"ln_f.weight", "bigram.weight"} | {
        f"blocks.{layer}.{name}" for layer in range(2)
        for name in ("ln_attn.weight", "ln_mlp.weight", "attn.sink")
    }
    assert {"wte.weight", "wpe.weight", "lm_head.weight", "blocks.0.mlp.fc.bias"} <= sparse
