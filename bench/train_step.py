"""Training-step time of weight-sparse vs dense training at the same shape, measured in one run.

The sparse step is the dense step plus the top-k projection of every sparse tensor (method §2),
so the ratio is the projection's overhead; the goal is a projection of ≤ 5 % of a dense step.
Sparse steps run at the default target (kept 5%, min 4 per neuron), i.e. the steady state after
annealing; the projection alone is timed on the weights as an Adam step leaves them. On CUDA the
script also reports tokens/s and MFU for a paper-shape model (8 layers, context 256, bf16
autocast).

    OMP_NUM_THREADS=1 python bench/train_step.py   # d_model 256, 4 layers, context 256, batch 4
    python bench/train_step.py --repeats 5 --steps 5
    python bench/train_step.py --device cuda --compile   # the train.compile path
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from runtime.model import GPTConfig, SparseGPT, floor_axis, sparse_parameters
from runtime.training.sparsity import project_tensors_
from runtime.training.train import describe_device, make_optimizer, pick_device, train_step
from spec.recipe import SparsitySpec, TrainSpec

# Dense bf16 tensor-core peaks (FLOP/s) for MFU; other cards get no MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def flops_per_token(cfg: GPTConfig) -> float:
    """Training FLOPs per token (PaLM appendix B, as nanoGPT): 6 per matmul weight plus attention
    scores and values, 12·n_layer·d_model·context. Embedding lookups are not matmuls."""
    per_layer = 4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_mlp
    matmul_weights = cfg.n_layer * per_layer + cfg.d_model * cfg.vocab_size
    return 6 * matmul_weights + 12 * cfg.n_layer * cfg.d_model * cfg.context


def seconds_per_step(
    cfg: GPTConfig, batch_size: int, device: torch.device, steps: int, repeats: int,
    compile_model: bool = False,
) -> dict[str, float]:
    """Median seconds per dense step (kept 1.0), sparse step (target) and projection alone,
    interleaved in blocks so drift in machine load hits all alike."""
    torch.manual_seed(0)
    model = SparseGPT(cfg).to(device)
    train_spec = TrainSpec(batch_size=batch_size)
    sparsity = SparsitySpec()
    optimizer = make_optimizer(model, train_spec)
    sparse = sparse_parameters(model)
    # as train.compile does; the compiled module is called like the model itself
    step_model = cast(nn.Module, torch.compile(model)) if compile_model else model
    x, y = (torch.randint(cfg.vocab_size, (batch_size, cfg.context), device=device)
            for _ in range(2))

    # On a shared CPU, wall time mostly measures the neighbours; process CPU time measures the
    # work (run with OMP_NUM_THREADS=1 so it also excludes threads spinning while they wait).
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def step(kept: float) -> float:
        start = clock()
        train_step(step_model, optimizer, sparse, x, y, kept, train_spec,
                   sparsity.min_per_neuron)
        return clock() - start  # train_step syncs the device through the loss

    for kept in (1.0, 1.0, sparsity.target, sparsity.target):
        step(kept)  # warm up the allocator, the kernels and the optimizer state
    # What the projection sees inside a sparse step: a sparse model just after an Adam step
    # (dense moments make every entry nonzero again). Projecting an already projected tensor
    # would time an easier input.
    step(1.0)
    after_adam = [p.detach().clone() for _, p in sparse]

    def project() -> float:
        with torch.no_grad():
            for (_, param), snapshot in zip(sparse, after_adam, strict=True):
                param.copy_(snapshot)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        project_tensors_(((p, floor_axis(name)) for name, p in sparse), sparsity.target,
                         sparsity.min_per_neuron)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    modes: dict[str, Callable[[], float]] = {
        "dense": lambda: step(1.0), "sparse": lambda: step(sparsity.target), "projection": project,
    }
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode, run in modes.items():  # interleaved, so drift in load hits all modes alike
            samples[mode].append(sum(run() for _ in range(steps)) / steps)
    return {mode: statistics.median(times) for mode, times in samples.items()}


def report(name: str, cfg: GPTConfig, batch_size: int, device: torch.device, steps: int,
           repeats: int, compile_model: bool = False) -> None:
    times = seconds_per_step(cfg, batch_size, device, steps, repeats, compile_model)
    tokens = batch_size * cfg.context
    peak = next((flops for card, flops in PEAK_BF16.items()
                 if device.type == "cuda" and card in torch.cuda.get_device_name(device)), None)
    print(f"\n{name}: n_layer {cfg.n_layer}, d_model {cfg.d_model}, context {cfg.context}, "
          f"vocab {cfg.vocab_size}, batch {batch_size} on {describe_device(device)}")
    clock = "wall" if device.type == "cuda" else "process CPU"
    print(f"{'mode':<8}{'ms/step':>10}{'tokens/s':>12}{'MFU':>8}   ({clock} time)")
    for mode in ("dense", "sparse"):
        seconds = times[mode]
        mfu = f"{flops_per_token(cfg) * tokens / seconds / peak:.1%}" if peak else "-"
        print(f"{mode:<8}{seconds * 1e3:>10.1f}{tokens / seconds:>12,.0f}{mfu:>8}")
    print(f"sparse / dense step time (measured):  {times['sparse'] / times['dense']:.3f}")
    print(f"projection alone: {times['projection'] * 1e3:.1f} ms = "
          f"{times['projection'] / times['dense']:.1%} of a dense step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per mode")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model, as train.compile does (the warm-up "
                        "steps pay the compile)")
    args = parser.parse_args()
    device = pick_device(args.device)
    small = GPTConfig(vocab_size=2048, context=256, n_layer=4, d_model=256, d_head=16,
                      d_mlp=1024)
    report("bench shape", small, args.batch_size, device, args.steps, args.repeats, args.compile)
    if device.type == "cuda":
        paper = GPTConfig(vocab_size=2048, context=256, n_layer=8, d_model=1024, d_head=16,
                          d_mlp=4096)
        report("paper shape", paper, 32, device, args.steps * 3, args.repeats, args.compile)


if __name__ == "__main__":
    main()
