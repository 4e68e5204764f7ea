"""What pruning costs (issue 11): batched mask settings vs one, a 16-trial search vs training the
model, and one batched mask step at the paper's shape.

1. Quickstart shape (``--recipe``, default recipes/quickstart.yaml: its model, training and prune
   settings, the base point's sparsity): the real pipeline in memory (corpus, BPE tokenizer, the
   recipe's training, mean-ablation stats, task pairs), then per task
   - mask optimisation of 1 setting vs ``--settings`` (8) batched: ``optimise_masks`` for the
     recipe's steps and batch with ``settle_steps=0``, so both run every step (goal: 8 ≤ 2× one);
   - ``prune()`` end to end with a ``--trials`` (16) search, divided by the training time
     (goal ≤ 1×).
   Trials whose masks are equal share a slice of the batch (``distinct_gates``): every trial
   keeps every node until some τ crosses 0, so the first steps of the 8 cost what 1 does.
2. Paper shape (d_model 2048, 8 layers, d_mlp 8192, vocab 2048, context 256; random weights,
   zero-ablation fill): one mask step (forward + backward through the gated model) for
   ``--settings`` distinct random masks batched vs 1, on ``--paper-pairs`` pairs of
   ``--paper-tokens`` tokens: the compute of a step once the trials' masks have parted.
3. Where the time goes: a cProfile of one run of each (forward, backward, discretisation,
   calibration, validation), as shares of its total.

Times are process CPU seconds with torch pinned to one thread: per-core figures that a loaded
machine disturbs less than wall time (wall seconds are printed beside them). Each figure is the
range over ``--repeats`` runs, interleaved so drift in load hits all alike.

    python bench/prune.py                               # the quickstart, 3 repeats, paper shape
    python bench/prune.py --repeats 1 --skip-paper --set train.tokens=200k
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import os
import pstats
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from runtime.data.corpus import load_corpus, split_corpus
from runtime.data.tokenizer import encode_documents, train_tokenizer
from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.ablation import compute_site_means
from runtime.pruning.circuit import NodeLayout
from runtime.pruning.gates import GateHook, ablation_values, heaviside_ste
from runtime.pruning.pairs import PairBatch, draw_pairs
from runtime.pruning.prune import bucketed_set_losses, optimise_masks, prune, search_settings
from runtime.tasks import get_task
from runtime.tasks.base import Split
from runtime.training.train import train
from spec.loader import load_recipe
from spec.recipe import PruneSpec, Recipe
from spec.tasks import all_candidates

PAPER = GPTConfig(vocab_size=2048, context=256, n_layer=8, d_model=2048, d_mlp=8192)
STATS_BATCH = 64  # sequences per forward of the mean-ablation stats (as the CPU stats job)

# (label, function, only when called from these) for the profile: cumulative seconds of each.
PHASES = [
    ("forward (masks, attribution)", "bucketed_set_losses", None),
    ("backward", "backward", ("optimise_masks",)),  # Tensor.backward, not a Function's
    ("mask optimisation", "optimise_masks", None),
    ("attribution (ties)", "attributions", None),
    ("circuit forwards (judge)", "two_logits", None),
    ("calibration (forwards and fits)", "calibrations", None),
    ("k search", "search_k", None),
    ("greedy dropping", "greedy_drop", None),
    ("calibration fits", "fit_calibration", None),
    ("validation", "validate", None),
]


@dataclasses.dataclass
class Times:
    """CPU and wall seconds of each repeat of one measurement."""

    cpu: list[float] = dataclasses.field(default_factory=list)
    wall: list[float] = dataclasses.field(default_factory=list)

    def measure(self, fn: Callable[[], Any]) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result


def span(values: Sequence[float], spec: str = ".2f") -> str:
    low, high = min(values), max(values)
    return format(low, spec) if format(low, spec) == format(high, spec) else \
        f"{low:{spec}}–{high:{spec}}"


def load_average() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def profile_phases(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """Total CPU seconds of ``fn`` and the cumulative seconds of each ``PHASES`` entry in it."""
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(fn)
    summary = pstats.Stats(profiler)
    stats, total = summary.stats, summary.total_tt  # type: ignore[attr-defined]
    phases: dict[str, float] = {}
    for label, name, caller in PHASES:
        seconds = 0.0
        for (_, _, func), (_, _, _, cumulative, callers) in stats.items():
            if func != name:
                continue
            if caller is None:
                seconds += cumulative
            else:
                seconds += sum(edge[3] for (_, _, f), edge in callers.items() if f in caller)
        if seconds:
            phases[label] = seconds
    return total, phases


def print_profile(title: str, fn: Callable[[], Any]) -> None:
    total, phases = profile_phases(fn)
    shares = ", ".join(f"{label} {seconds / total:.0%}" for label, seconds in phases.items())
    print(f"  profile, {title}: {total:.1f} s CPU; {shares}")


# ---------------------------------------------------------------------------------------------
# The quickstart pipeline, in memory


@dataclasses.dataclass
class Quickstart:
    recipe: Recipe
    model: SparseGPT
    means: dict[str, torch.Tensor]
    tokenizer: Any
    train_cpu_s: float
    train_wall_s: float
    heldout_loss: float


def build_quickstart(recipe: Recipe) -> Quickstart:
    """Tokenize, train and take the mean-ablation stats as the recipe's jobs do."""
    data = recipe.data
    train_docs, heldout_docs = split_corpus(load_corpus(data.corpus, data.max_bytes),
                                            data.heldout_fraction)
    tokenizer = train_tokenizer((d.text for d in train_docs), data.vocab_size, all_candidates())
    train_ids = encode_documents(tokenizer, [d.text for d in train_docs])
    heldout_ids = encode_documents(tokenizer, [d.text for d in heldout_docs])
    cfg = GPTConfig.from_specs(recipe.model, data)
    timer = Times()
    with tempfile.TemporaryDirectory() as out_dir:
        result = timer.measure(lambda: train(cfg, recipe.train, recipe.sparsity, recipe.seed,
                                             train_ids, heldout_ids, Path(out_dir)))
    means = compute_site_means(result.model, train_ids, recipe.prune.mean_tokens, STATS_BATCH,
                               cfg.context)
    return Quickstart(recipe, result.model, means, tokenizer, timer.cpu[0], timer.wall[0],
                      result.heldout_loss)


def task_pairs(qs: Quickstart, task_name: str) -> tuple[PairBatch, PairBatch, PairBatch]:
    """Train, held-out and test pairs, drawn as the prune job draws them."""
    task, spec, seed = get_task(task_name), qs.recipe.prune, qs.recipe.seed
    context = qs.recipe.data.context

    def pairs(n: int, split: Split) -> PairBatch:
        return draw_pairs(task, qs.tokenizer, context, n, split, seed)

    heldout = pairs(spec.heldout_pairs, "heldout")
    return pairs(spec.train_pairs, "train"), heldout, pairs(spec.test_pairs, "test").without(
        heldout)


def mask_runner(model: SparseGPT, fill: dict[str, torch.Tensor], pairs: PairBatch,
                spec: PruneSpec, n_settings: int, steps: int, batch_size: int,
                seed: int) -> Callable[[], Any]:
    """``optimise_masks`` for the first ``n_settings`` of the search's settings, every step."""
    layout = NodeLayout.from_model(model)
    search = spec.model_copy(update={"search": spec.search.model_copy(
        update={"trials": max(n_settings, spec.search.trials)})})
    settings = search_settings(search, seed)[:n_settings]
    return lambda: optimise_masks(model, layout, fill, pairs, settings, steps, batch_size,
                                  sample_seed=seed + 1, settle_steps=0)


def bench_quickstart(qs: Quickstart, tasks: Sequence[str], n_settings: int, trials: int,
                     mask_steps: int, repeats: int, search_repeats: int, profile: bool) -> None:
    spec, model = qs.recipe.prune, qs.model
    model.eval()
    model.requires_grad_(False)
    layout = NodeLayout.from_model(model)
    fill = ablation_values(layout, qs.means, spec.ablation, torch.device("cpu"))
    search_spec = spec.model_copy(update={"search": spec.search.model_copy(
        update={"trials": trials})})
    print(f"masks: {mask_steps} steps, settle_steps 0; search: {spec.steps} steps × "
          f"{spec.batch_size} pairs, {spec.train_pairs} train / "
          f"{spec.heldout_pairs} held-out pairs, threshold {spec.loss_threshold}, "
          f"settle_steps {spec.settle_steps} in the search")
    print(f"{'task':<18}{'1 setting s':>13}{f'{n_settings} batched s':>15}{'ratio':>11}"
          f"{f'{trials}-trial prune() s':>20}{'/ train':>11}{'edges':>7}{'circuits judged':>17}"
          f"   load")
    for name in tasks:
        train_pairs, heldout, test = task_pairs(qs, name)
        one, many, search = Times(), Times(), Times()
        runs = {n: mask_runner(model, fill, train_pairs, spec, n, mask_steps, spec.batch_size,
                               qs.recipe.seed) for n in (1, n_settings)}
        run_search = functools.partial(prune, model, train_pairs, heldout, test, qs.means,
                                       search_spec, seed=qs.recipe.seed)
        found = None
        for repeat in range(repeats):
            one.measure(runs[1])
            many.measure(runs[n_settings])
            # at once: a search can take many times longer, and a cut-short run keeps these
            print(f"  {name} repeat {repeat}: 1 setting {one.cpu[-1]:.2f} s, {n_settings} batched "
                  f"{many.cpu[-1]:.2f} s CPU   {load_average()}")
            if repeat < search_repeats:
                found = search.measure(run_search)
        ratios = [b / a for a, b in zip(one.cpu, many.cpu, strict=True)]
        edges = "-" if found is None or found.circuit is None else \
            str(min(t.n_edges for t in found.trials if t.n_edges is not None))
        judged = "-" if found is None else str(sum(t.evaluations for t in found.trials))
        searched = span(search.cpu, ".1f") if search.cpu else "-"
        per_train = f"{span([s / qs.train_cpu_s for s in search.cpu])}×" if search.cpu else "-"
        print(f"{name:<18}{span(one.cpu):>13}{span(many.cpu):>15}{span(ratios):>10}×"
              f"{searched:>20}{per_train:>11}{edges:>7}{judged:>17}   {load_average()}")
        print(f"{'  (wall s)':<18}{span(one.wall):>13}{span(many.wall):>15}{'':>11}"
              f"{span(search.wall, '.1f') if search.wall else '-':>20}")
        if profile:
            print_profile(f"{name}, 1 setting", runs[1])
            print_profile(f"{name}, {n_settings} batched", runs[n_settings])
            print_profile(f"{name}, {trials}-trial prune()", run_search)


# ---------------------------------------------------------------------------------------------
# The paper's shape, random weights


def random_pairs(cfg: GPTConfig, n_pairs: int, tokens: int, seed: int) -> PairBatch:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.vocab_size, (2 * n_pairs, tokens), generator=generator)
    answers = torch.randint(cfg.vocab_size, (n_pairs, 2), generator=generator)
    return PairBatch(ids, torch.full((2 * n_pairs,), tokens - 1),
                     torch.cat([answers, answers.flip(1)], 1).view(-1, 2))


def distinct_mask_step(model: SparseGPT, fill: dict[str, torch.Tensor], pairs: PairBatch,
                       n_masks: int, seed: int) -> Callable[[], Any]:
    """One step of ``optimise_masks``' forward and backward for ``n_masks`` masks that differ
    (each node on with probability 1/2), so that none shares a slice of the batch."""
    layout = NodeLayout.from_model(model)
    tau = torch.randn(n_masks, layout.n_nodes, generator=torch.Generator().manual_seed(seed))

    def step() -> None:
        leaf = tau.clone().requires_grad_()
        gates = heaviside_ste(leaf, 1.0)
        bucketed_set_losses(model, pairs, GateHook(layout, gates, fill), n_masks,
                            freeze_norms=False).sum().backward()
    return step


def bench_paper(n_settings: int, n_pairs: int, tokens: int, repeats: int, profile: bool) -> None:
    torch.manual_seed(0)
    model = SparseGPT(PAPER)
    model.eval()
    model.requires_grad_(False)
    fill = ablation_values(NodeLayout.from_model(model), None, "zero", torch.device("cpu"))
    pairs = random_pairs(PAPER, n_pairs, tokens, seed=0)
    runs = {n: distinct_mask_step(model, fill, pairs, n, seed=0) for n in (1, n_settings)}
    print(f"paper shape: n_layer {PAPER.n_layer}, d_model {PAPER.d_model}, d_mlp {PAPER.d_mlp}, "
          f"vocab {PAPER.vocab_size}, random weights; one mask step of distinct masks on "
          f"{n_pairs} pairs × {tokens} tokens ({NodeLayout.from_model(model).n_nodes:,} nodes)")
    one, many = Times(), Times()
    for _ in range(repeats):
        one.measure(runs[1])
        many.measure(runs[n_settings])
    ratios = [b / a for a, b in zip(one.cpu, many.cpu, strict=True)]
    print(f"  1 setting {span(one.cpu, '.1f')} s, {n_settings} batched {span(many.cpu, '.1f')} s"
          f" CPU ({span(ratios)}×); wall {span(one.wall, '.1f')} s, {span(many.wall, '.1f')} s"
          f"   {load_average()}")
    if profile:
        print_profile(f"{n_settings} batched step", runs[n_settings])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="PATH=VALUE", help="override a recipe field, as xcompile does")
    parser.add_argument("--tasks", nargs="+", help="default: the recipe's prune.tasks")
    parser.add_argument("--settings", type=int, default=8, help="mask settings batched")
    parser.add_argument("--trials", type=int, default=16, help="trials of the timed search")
    parser.add_argument("--mask-steps", type=int, help="steps of the 1-vs-batched timing "
                        "(default: the recipe's; time is linear in steps at settle_steps 0)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--search-repeats", type=int, default=3, help="at most --repeats")
    parser.add_argument("--paper-pairs", type=int, default=4)
    parser.add_argument("--paper-tokens", type=int, default=64)
    parser.add_argument("--paper-repeats", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-quickstart", action="store_true")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-core figures, less sensitive to the neighbours' load

    if not args.skip_quickstart:
        recipe, _ = load_recipe(args.recipe, args.overrides)
        qs = build_quickstart(recipe)
        print(f"model: {recipe.model.n_layer} layers, d_model {recipe.model.d_model}, "
              f"{recipe.train.tokens:,} tokens, kept {recipe.sparsity.target}, held-out loss "
              f"{qs.heldout_loss:.3f}; training {qs.train_cpu_s:.1f} s CPU "
              f"({qs.train_wall_s:.1f} s wall)   {load_average()}")
        bench_quickstart(qs, args.tasks or recipe.prune.tasks, args.settings, args.trials,
                         args.mask_steps or recipe.prune.steps, args.repeats,
                         args.search_repeats, args.profile)
    if not args.skip_paper:
        bench_paper(args.settings, args.paper_pairs, args.paper_tokens, args.paper_repeats,
                    args.profile)


if __name__ == "__main__":
    main()
