"""Mean-ablation statistics (runtime/pruning/ablation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.ablation import compute_site_means, load_means, save_means, window_starts


def small_model() -> SparseGPT:
    torch.manual_seed(0)
    model = SparseGPT(GPTConfig(vocab_size=11, context=16, n_layer=2, d_model=8, d_head=4,
                                d_mlp=12, afrac=0.5))
    with torch.no_grad():  # GPT-2 init is tiny; larger weights make the means less trivial
        for param in model.parameters():
            param.normal_(0, 0.5)
    return model


def tokens(n: int = 500) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 11, n).astype(np.uint16)


def test_means_equal_a_direct_computation() -> None:
    model, data = small_model(), tokens()
    means = compute_site_means(model, data, n_tokens=128, batch=3, context=16)

    # Direct: every window in one batch, every activation kept, averaged over all positions.
    starts = window_starts(len(data), 16, 8)
    idx = torch.from_numpy(np.stack([data[s : s + 16] for s in starts]).astype(np.int64))
    seen: dict[str, torch.Tensor] = {}

    def record(site: str, x: torch.Tensor) -> torch.Tensor:
        seen[site] = x.detach().clone()
        return x

    model.hook = record
    with torch.no_grad():
        model(idx)
    model.hook = None
    assert list(means) == list(seen)
    for site, activations in seen.items():
        assert torch.allclose(means[site], activations.mean((0, 1)), atol=1e-6), site

    # And by hand, without the hook, for the first block's attention reads and projections.
    block = model.blocks[0]
    with torch.no_grad():
        attn_in = block.topk(block.ln_attn(model.wte(idx)))
        q = block.attn.topk(block.attn.q_proj(attn_in))
    assert torch.allclose(means["l0.attn_in"], attn_in.mean((0, 1)), atol=1e-6)
    assert torch.allclose(means["l0.q"], q.mean((0, 1)), atol=1e-6)
    assert model.hook is None


def test_means_do_not_depend_on_the_batch_size() -> None:
    model, data = small_model(), tokens()
    one = compute_site_means(model, data, n_tokens=100, batch=1, context=10)
    many = compute_site_means(model, data, n_tokens=100, batch=7, context=10)
    for site in one:
        assert torch.allclose(one[site], many[site], atol=1e-6)


def test_windows_are_spread_over_the_whole_array() -> None:
    assert window_starts(100, 10, 5) == [0, 22, 45, 68, 90]
    assert window_starts(100, 10, 1) == [0]
    assert window_starts(5, 10, 3) == [0, 0, 0]  # shorter than one window


def test_means_roundtrip_through_safetensors(tmp_path: Path) -> None:
    means = {"l0.q": torch.randn(8), "final_in": torch.randn(8)}
    save_means(tmp_path / "means.safetensors", means)
    loaded = load_means(tmp_path / "means.safetensors")
    assert loaded.keys() == means.keys()
    for site in means:
        assert torch.equal(loaded[site], means[site])
