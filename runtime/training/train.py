"""Weight-sparse pretraining (method §2), a nanoGPT-style loop written as one function.

Each step: sample a batch, forward/backward, divide the gradient by its RMS, Adam step at the
sharkfin lr, then project every sparse tensor to its scheduled top-k. Held-out loss every
``eval_every`` steps, metrics to ``metrics.jsonl``, checkpoints every ``checkpoint_every`` steps.

Resuming is exact: all state that influences later steps (weights, Adam moments, the data
sampler's generator, the step) is checkpointed, the lr and kept fraction are pure functions of the
step, and ``metrics.jsonl`` is cut back to the checkpoint, so a run killed and resumed on CPU
produces the same weights and metrics as one that never stopped.

Data parallel (``layout`` of several processes, runtime/training/distributed.py): every rank draws
the same global batch from the same seeded generator and trains on its own rows of it; the
gradients and the loss are combined across ranks (each weighted by its share of the rows) before
the gradient RMS normalisation, so the Adam step and the top-k projection run identically on every
rank and the result is the single-process one up to floating-point reduction order. Evaluation is
split across ranks by batch and summed, so every rank holds the same numbers. Rank 0 alone writes
metrics and checkpoints; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.io import write_atomic
from runtime.job import CHECKPOINT_DIR, METRICS_FILE
from runtime.model import GPTConfig, SparseGPT, floor_axis, sparse_parameters
from runtime.training import distributed
from runtime.training.checkpoint import (
    load_latest_checkpoint,
    remove_old_checkpoints,
    save_checkpoint,
)
from runtime.training.distributed import SINGLE_PROCESS, Layout
from runtime.training.sparsity import (
    kept_fraction_at,
    lr_at,
    nonzero_counts,
    normalize_grad_rms_,
    project_tensors_,
)
from spec.recipe import SparsitySpec, TrainSpec

# Checkpoints kept while training: two, so a bad newest file still leaves one to resume from.
KEEP_CHECKPOINTS = 2


@dataclass
class TrainResult:
    model: SparseGPT
    heldout_loss: float  # final model, fixed held-out windows
    train_loss: float  # final model, the same number of fixed windows from the start of train.bin
    n_params: int  # all parameters
    n_sparse_params: int  # entries of the tensors that are projected to top-k
    n_nonzero: int  # nonzero entries among those (the L0 of the model)
    kept_fraction: float  # n_nonzero / n_sparse_params: the density reached, measured
    tokens: int
    steps: int
    wall_time_s: float  # this process only; a resumed run does not count the time before
    device: str
    tokens_per_s: float  # training throughput of this process, evaluation excluded

    def summary(self) -> dict[str, Any]:
        """The JSON-able fields (everything but the model)."""
        return {key: value for key, value in vars(self).items() if key != "model"}


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    return distributed.local_cuda_device(local_rank) if use_cuda else torch.device("cpu")


def describe_device(device: torch.device, world_size: int = 1) -> str:
    """``cpu:<kernel set>`` (e.g. ``cpu:AVX2``) or ``cuda:<GPU name>``, prefixed ``<n>x`` for n
    data-parallel ranks, so that throughputs compare across runs in the results store. The CPU's
    kernel set is named because it changes the float arithmetic: one job, trained on two CPUs,
    ended at different losses and circuits (README, "The second seed does not hold it up")."""
    if device.type == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        name = f"cpu:{torch.backends.cpu.get_cpu_capability()}"
    return f"{world_size}x{name}" if world_size > 1 else name


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full fp32 on CPU (where bf16 is slow and resume must be exact)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sample_batch(
    data: np.ndarray, batch_size: int, context: int, generator: torch.Generator,
    device: torch.device, rows: slice = slice(None),
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``context + 1`` tokens → inputs and targets (B, T);
    only ``rows`` of them (this rank's), though the generator always draws all ``batch_size``."""
    starts = torch.randint(len(data) - context, (batch_size,), generator=generator)[rows].numpy()
    windows = torch.from_numpy(data[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]


def fixed_windows(data: np.ndarray, n_tokens: int, context: int, batch_size: int,
                  device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Non-overlapping windows covering the first ``n_tokens`` predictions of ``data``, batched:
    the same tokens every evaluation, so losses are comparable across steps and runs."""
    n_windows = max(1, min(n_tokens // context, (len(data) - 1) // context))
    for first in range(0, n_windows, batch_size):
        count = min(batch_size, n_windows - first)
        starts = (first + np.arange(count)) * context
        windows = torch.from_numpy(data[starts[:, None] + np.arange(context + 1)].astype(np.int64))
        windows = windows.to(device)
        yield windows[:, :-1], windows[:, 1:]


def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


@torch.no_grad()
def evaluate(model: SparseGPT, data: np.ndarray, n_tokens: int, batch_size: int,
             device: torch.device, layout: Layout = SINGLE_PROCESS) -> float:
    """Mean next-token loss (nats/token) over the fixed windows of ``data``. With several ranks
    each evaluates every ``world_size``-th batch and the sums are all-reduced: every rank returns
    the same number."""
    total, count = 0.0, 0
    batches = fixed_windows(data, n_tokens, model.cfg.context, batch_size, device)
    for x, y in itertools.islice(batches, layout.rank, None, layout.world_size):
        with autocast(device):
            total += float(loss_fn(model, x, y)) * y.numel()
        count += y.numel()
    if layout.distributed:
        sums = torch.tensor([total, count], dtype=torch.float64, device=device)
        distributed.sum_across_ranks_([sums])
        total, count = sums.tolist()
    return total / count


def make_optimizer(model: SparseGPT, train_spec: TrainSpec) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay on matrices only (weights, embeddings, the bigram
    table), not on biases, norm gains or sink logits."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": matrices, "weight_decay": train_spec.weight_decay},
         {"params": others, "weight_decay": 0.0}],
        lr=train_spec.lr, betas=(train_spec.betas[0], train_spec.betas[1]), eps=train_spec.eps,
    )


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, sparse: list[tuple[str, Tensor]],
    x: Tensor, y: Tensor, kept: float, train_spec: TrainSpec, min_per_neuron: int,
    layout: Layout = SINGLE_PROCESS,
) -> tuple[float, float]:
    """One optimizer step at the lr already set in ``optimizer``; returns (loss, grad norm).
    ``model`` is a ``SparseGPT`` or its ``torch.compile`` wrapper (the same parameters). With
    several ranks, ``x`` and ``y`` are this rank's rows of the global batch."""
    # ---- forward / backward
    with autocast(x.device):
        loss = loss_fn(model, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()

    # ---- data parallel: the global batch's gradient and loss, a mean weighted by rows
    if layout.distributed:
        loss = loss.detach().clone()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        distributed.sum_across_ranks_([*grads, loss], scale=len(x) / train_spec.batch_size)

    # ---- gradient RMS normalisation, Adam step
    if train_spec.grad_rms_norm:
        grad_norm = normalize_grad_rms_(model.parameters())
    else:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.get_total_norm(grads))
    optimizer.step()

    # ---- project every sparse tensor to its top-k (grads and Adam moments stay dense)
    project_tensors_(((p, floor_axis(name)) for name, p in sparse), kept, min_per_neuron)
    return float(loss.detach()), grad_norm  # float() syncs the device: step times are honest


def measured_sparsity(sparse: list[tuple[str, Tensor]]) -> dict[str, Any]:
    """Measured, not assumed (method §2): the kept (nonzero) fraction overall and per tensor."""
    counts = nonzero_counts(p for _, p in sparse)
    return {
        "kept_fraction": sum(counts) / sum(p.numel() for _, p in sparse),
        "kept_fraction_per_tensor": {
            name: count / p.numel() for (name, p), count in zip(sparse, counts, strict=True)
        },
    }


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics logged after ``last_step`` by a run killed after its last checkpoint, and a
    line the kill cut short (it lacks its newline)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines(keepends=True)
             if line.endswith("\n") and json.loads(line)["step"] <= last_step]
    data = "".join(lines).encode()
    write_atomic(path, data)


def train(
    cfg: GPTConfig,
    train_spec: TrainSpec,
    sparsity: SparsitySpec,
    seed: int,
    train_data: np.ndarray,
    heldout_data: np.ndarray,
    out_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 1,
    layout: Layout = SINGLE_PROCESS,
) -> TrainResult:
    """Train a ``SparseGPT`` on uint16 token arrays, resuming from ``out_dir/checkpoints``.

    Writes ``out_dir/metrics.jsonl`` (a line every ``log_every`` steps and at every evaluation)
    and checkpoints; returns the final model and its summary. With a ``layout`` of several
    processes the caller has joined its process group (``distributed.process_group``); every
    rank returns the same result, and only rank 0 writes.
    """
    for name, data in (("train", train_data), ("heldout", heldout_data)):
        if len(data) <= cfg.context:
            raise ValueError(f"{name} data has {len(data)} tokens; need more than the context "
                             f"({cfg.context})")
    if train_spec.batch_size < layout.world_size:
        raise ValueError(f"batch_size {train_spec.batch_size} is smaller than the "
                         f"{layout.world_size} data-parallel ranks; each needs a row")
    started = time.time()
    device = pick_device(train_spec.device, layout.local_rank)
    tokens_per_step = train_spec.batch_size * cfg.context
    total_steps = max(1, train_spec.tokens // tokens_per_step)
    kept_final = kept_fraction_at(1.0, sparsity)

    # ---- set up: model, optimizer, data sampler, all seeded from the recipe seed
    torch.manual_seed(seed)
    model = SparseGPT(cfg).to(device)
    sparse = sparse_parameters(model)
    optimizer = make_optimizer(model, train_spec)
    # torch.compile (a GPU option) wraps the same parameters; only the training forward/backward
    # goes through it, so checkpoints, the projection and evaluation see the plain model.
    # (torch.compile of a Module returns an OptimizedModule, a Module; it is typed as a callable.)
    step_model: nn.Module = cast(nn.Module, torch.compile(model)) if train_spec.compile else model
    generator = torch.Generator().manual_seed(seed)  # data order; CPU so it is checkpointable

    # ---- resume from the newest valid checkpoint
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    metrics_path = out_dir / METRICS_FILE
    step = 0
    if (checkpoint := load_latest_checkpoint(checkpoint_dir)) is not None:
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
        generator.set_state(checkpoint.rng["data"])
        step = checkpoint.step
        print(f"resuming from {checkpoint.path} at step {step}", file=sys.stderr, flush=True)
    if layout.distributed:  # rank 0 writes checkpoints only once every rank has read one
        distributed.assert_same_on_all_ranks([torch.tensor(step, device=device),
                                              *model.parameters()], "checkpoints")
    if layout.is_main:
        _truncate_metrics(metrics_path, step)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        if layout.distributed:  # what rank 0 saves must be what every rank trains on
            distributed.assert_same_on_all_ranks(model.parameters())
        if layout.is_main:
            save_checkpoint(checkpoint_dir, step, model, optimizer,
                            {"data": generator.get_state()})
            remove_old_checkpoints(checkpoint_dir, KEEP_CHECKPOINTS)

    train_time, steps_here = 0.0, 0
    # Ranks other than 0 log to /dev/null, so the loop reads the same on every rank.
    with (metrics_path if layout.is_main else Path(os.devnull)).open("a") as metrics_file:
        while step < total_steps:
            t0 = time.perf_counter()
            # Progress after this step, so the last step projects to exactly the final target.
            kept = kept_fraction_at((step + 1) / total_steps, sparsity)
            lr = lr_at(step, total_steps, train_spec, kept, kept_final)
            for group in optimizer.param_groups:
                group["lr"] = lr

            x, y = sample_batch(train_data, train_spec.batch_size, cfg.context, generator, device,
                                layout.rows(train_spec.batch_size))
            loss_value, grad_norm = train_step(step_model, optimizer, sparse, x, y, kept,
                                               train_spec,
                                               sparsity.min_per_neuron, layout)
            step += 1
            steps_here += 1
            train_time += time.perf_counter() - t0

            # ---- evaluate, log, checkpoint
            record: dict[str, Any] = {}
            if step % train_spec.eval_every == 0 or step == total_steps:
                record["heldout_loss"] = evaluate(model, heldout_data, train_spec.eval_tokens,
                                                  train_spec.batch_size, device, layout)
            info = {"step": step, "total_steps": total_steps, "loss": loss_value, **record,
                    "lr": lr, "tokens_per_s": steps_here * tokens_per_step / train_time,
                    "kept_fraction_scheduled": kept}
            if record or step % log_every == 0:
                metrics_file.write(json.dumps({
                    **info, "tokens": step * tokens_per_step, "grad_norm": grad_norm,
                    **measured_sparsity(sparse),
                }) + "\n")
                metrics_file.flush()
            if step % train_spec.checkpoint_every == 0 or step == total_steps:
                save()
            if progress is not None and layout.is_main:
                progress(info)

    # ---- final numbers
    heldout_loss = evaluate(model, heldout_data, train_spec.eval_tokens, train_spec.batch_size,
                            device, layout)
    train_loss = evaluate(model, train_data, train_spec.eval_tokens, train_spec.batch_size,
                          device, layout)
    n_sparse_params = sum(p.numel() for _, p in sparse)
    n_nonzero = sum(nonzero_counts(p for _, p in sparse))
    return TrainResult(
        model=model,
        heldout_loss=heldout_loss,
        train_loss=train_loss,
        n_params=sum(p.numel() for p in model.parameters()),
        n_sparse_params=n_sparse_params,
        n_nonzero=n_nonzero,
        kept_fraction=n_nonzero / n_sparse_params,
        tokens=total_steps * tokens_per_step,
        steps=total_steps,
        wall_time_s=time.time() - started,
        device=describe_device(device, layout.world_size),
        tokens_per_s=steps_here * tokens_per_step / train_time if train_time else 0.0,
    )
