"""Checkpoints and trained models as safetensors files, never pickle.

Each file holds tensors plus a JSON metadata header, and a sha256 over both (tensor names, dtypes,
shapes, bytes and the metadata) so a corrupt or truncated file raises ``CheckpointError`` instead
of loading. Files are written through ``runtime.io.write_atomic``, so a kill mid-write leaves the
previous file intact.

A training checkpoint ``checkpoints/step-00000200.safetensors`` stores the model weights
(``model.*``), the optimizer state (``optimizer.*`` tensors; its param groups in the metadata),
the RNG states (``rng.*`` as uint8 tensors) and the step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from runtime.io import write_atomic
from runtime.job import checkpoint_path, checkpoint_steps
from runtime.model import GPTConfig, SparseGPT

_MODEL_FORMAT = "xcompile.sparse_gpt.v1"
_CHECKPOINT_FORMAT = "xcompile.checkpoint.v1"


class CheckpointError(Exception):
    """A checkpoint or model file that is missing, truncated, corrupt or of the wrong format."""


@dataclass
class Checkpoint:
    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]  # in torch's ``Optimizer.state_dict()`` layout
    rng: dict[str, Tensor]  # name → generator state (uint8), e.g. {"data": ...}
    path: Path


# ---------------------------------------------------------------------------------------------
# Checksummed safetensors files


def _digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    sha = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        sha.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        # ``.data``: the array's own buffer as a memoryview (no copy, the same bytes); numpy's
        # stubs declare ndarray a buffer only from Python 3.12.
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return sha.hexdigest()


def _write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header["sha256"] = _digest(tensors, header)
    data = save_safetensors(tensors, metadata=header)
    write_atomic(path, data)


def _read(path: Path, expected_format: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error}") from error
    try:
        tensors = load_safetensors(data)
        # safetensors' Python API returns the metadata only through safe_open on a file; the
        # header is small, so parse it here from the bytes already read.
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated?): {error}") \
            from error
    stored = header.pop("sha256", None)
    if stored is None:
        raise CheckpointError(f"{path}: no sha256 in the metadata; not written by xcompile")
    if _digest(tensors, header) != stored:
        raise CheckpointError(f"{path}: sha256 mismatch; the file is corrupt")
    metadata = {key: json.loads(value) for key, value in header.items()}
    if metadata.get("format") != expected_format:
        raise CheckpointError(
            f"{path}: format {metadata.get('format')!r}, expected {expected_format!r}"
        )
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# Training checkpoints


def save_checkpoint(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, Tensor],
) -> Path:
    """Write the full training state at ``step`` atomically; returns the file written."""
    tensors = {f"model.{name}": t for name, t in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            # Adam's "step" may be a tensor or a float depending on torch options; keep both.
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    tensors.update({f"rng.{name}": state for name, state in rng.items()})
    path = checkpoint_path(directory, step)
    _write(path, tensors, {
        "format": _CHECKPOINT_FORMAT, "step": step,
        "param_groups": optimizer_state["param_groups"],
    })
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Load one checkpoint; raises ``CheckpointError`` if it is corrupt or truncated."""
    tensors, metadata = _read(path, _CHECKPOINT_FORMAT)
    model: dict[str, Tensor] = {}
    optimizer_state: dict[int, dict[str, Tensor]] = {}
    rng: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        section, _, rest = name.partition(".")
        if section == "model":
            model[rest] = tensor
        elif section == "optimizer":
            index, _, key = rest.partition(".")
            optimizer_state.setdefault(int(index), {})[key] = tensor
        elif section == "rng":
            rng[rest] = tensor
        else:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
    # JSON turned tuples (Adam's betas) into lists; "params" is the one list torch expects.
    param_groups = [{key: value if key == "params" or not isinstance(value, list)
                     else tuple(value) for key, value in group.items()}
                    for group in metadata["param_groups"]]
    optimizer = {"state": optimizer_state, "param_groups": param_groups}
    return Checkpoint(step=metadata["step"], model=model, optimizer=optimizer, rng=rng, path=path)


def load_latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` that loads cleanly, or None if there is none.
    Bad ones are reported as warnings and skipped, never loaded."""
    for _, path in checkpoint_steps(directory) if directory.is_dir() else []:
        try:
            return load_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"skipping bad checkpoint: {error}", stacklevel=2)
    return None


def remove_old_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (and temp files of interrupted writes)."""
    for _, path in checkpoint_steps(directory)[keep:]:
        path.unlink(missing_ok=True)
    for tmp in directory.glob(".step-*.tmp"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Trained models


def save_model(model: SparseGPT, cfg: GPTConfig, path: Path) -> None:
    """Write the weights to ``path`` (``model.safetensors``) with the config in the metadata."""
    _write(path, dict(model.state_dict()), {
        "format": _MODEL_FORMAT, "config": dataclasses.asdict(cfg),
    })


def load_model(path: Path, map_location: str | torch.device = "cpu") -> SparseGPT:
    tensors, metadata = _read(path, _MODEL_FORMAT)
    # Models saved before ``final_topk`` existed were trained with AbsTopK on final_in.
    model = SparseGPT(GPTConfig(**{"final_topk": True, **metadata["config"]}))
    model.load_state_dict(tensors)
    return model.to(map_location)
