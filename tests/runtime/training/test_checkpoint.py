"""Checkpoints and model files: exact round trips; corrupt or truncated files are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.training.checkpoint import (
    _MODEL_FORMAT,
    CheckpointError,
    _write,
    load_checkpoint,
    load_latest_checkpoint,
    load_model,
    remove_old_checkpoints,
    save_checkpoint,
    save_model,
)

CFG = GPTConfig(vocab_size=300, context=16, n_layer=1, d_model=16, d_head=8, d_mlp=32,
                attention_sink=True, bigram=True)


def trained_state() -> tuple[SparseGPT, torch.optim.Optimizer, torch.Generator]:
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=0.1)
    model(torch.randint(300, (2, 16))).logsumexp(-1).mean().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(7)
    torch.randint(10, (5,), generator=generator)  # advance it past its seed state
    return model, optimizer, generator


def save_at(directory: Path, step: int) -> Path:
    model, optimizer, generator = trained_state()
    return save_checkpoint(directory, step, model, optimizer, {"data": generator.get_state()})


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    model, optimizer, generator = trained_state()
    path = save_checkpoint(tmp_path, 42, model, optimizer, {"data": generator.get_state()})
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 42
    for name, tensor in model.state_dict().items():
        assert torch.equal(checkpoint.model[name], tensor)

    fresh = SparseGPT(CFG)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1.0)
    fresh.load_state_dict(checkpoint.model)
    fresh_optimizer.load_state_dict(checkpoint.optimizer)
    restored = fresh_optimizer.state_dict()
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(restored["state"][index][key]), value)

    resumed = torch.Generator()
    resumed.set_state(checkpoint.rng["data"])
    assert torch.equal(torch.randint(1000, (8,), generator=resumed),
                       torch.randint(1000, (8,), generator=generator))


def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_damaged_checkpoint_is_detected_not_loaded(tmp_path: Path, damage: str) -> None:
    path = save_at(tmp_path, 10)
    if damage == "flip":
        flip_byte(path, 100)  # inside the tensor data: parses fine, checksum catches it
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        data = bytearray(path.read_bytes())
        data[20] ^= 0x01  # inside the JSON header
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_latest_checkpoint_skips_and_reports_bad_ones(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "missing") is None
    save_at(tmp_path, 10)
    newest = save_at(tmp_path, 20)
    assert load_latest_checkpoint(tmp_path).step == 20
    flip_byte(newest, 50)
    with pytest.warns(UserWarning, match="sha256 mismatch"):
        assert load_latest_checkpoint(tmp_path).step == 10
    for path in tmp_path.glob("step-*"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping bad checkpoint"):
        assert load_latest_checkpoint(tmp_path) is None


def test_remove_old_checkpoints_keeps_the_newest(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        save_at(tmp_path, step)
    (tmp_path / ".step-00000020.safetensors.abc.tmp").write_bytes(b"half a write")
    remove_old_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000015.safetensors"]


def test_model_file_round_trip_and_corruption(tmp_path: Path) -> None:
    model, _, _ = trained_state()
    path = tmp_path / "model.safetensors"
    save_model(model, CFG, path)
    loaded = load_model(path)
    assert loaded.cfg == CFG
    idx = torch.randint(300, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))
    flip_byte(path, 10)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(path)
    with pytest.raises(CheckpointError, match="format"):
        load_model(save_at(tmp_path, 1))  # a training checkpoint is not a model file


def test_a_model_saved_before_final_topk_keeps_its_final_abstopk(tmp_path: Path) -> None:
    model, _, _ = trained_state()
    old_config = {k: v for k, v in dataclasses.asdict(CFG).items() if k != "final_topk"}
    path = tmp_path / "model.safetensors"
    _write(path, dict(model.state_dict()), {"format": _MODEL_FORMAT, "config": old_config})
    assert load_model(path).cfg == dataclasses.replace(CFG, final_topk=True)
