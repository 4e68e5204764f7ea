"""Wall time to prune one task, next to the time to train the same tiny model, in one run.

Runs the real pipeline in memory: a BPE tokenizer on the synthetic corpus (task answers forced to
single tokens), weight-sparse training (runtime/training/train.py), the mean-ablation stats
(runtime/pruning/ablation.py), then pruning (runtime/pruning/prune.py) of each task, and prints
seconds for each phase plus the circuit found. Pruning cost scales with steps × batch pairs ×
prompt length, not with the training tokens, so the ratio depends on both recipes; the defaults are
PruneSpec's.

    python bench/prune.py                                  # 2 layers, d_model 64, 1M tokens
    python bench/prune.py --tokens 200k --prune-steps 300 --tasks single_double_quote
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from runtime.data.synthetic import synthetic_programs
from runtime.data.tokenizer import encode_documents, train_tokenizer
from runtime.model import GPTConfig
from runtime.pruning.ablation import compute_site_means
from runtime.pruning.circuit import count_edges
from runtime.pruning.pairs import encode_pairs
from runtime.pruning.prune import prune
from runtime.tasks import all_candidates, get_task
from runtime.training.train import describe_device, pick_device, train
from spec.recipe import PruneSpec, SparsitySpec, TrainSpec
from spec.units import parse_count


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-bytes", default="4M", help="synthetic corpus size")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--tokens", default="1M", help="training tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="training sequences per step")
    parser.add_argument("--sparsity", type=float, default=0.1, help="kept fraction of weights")
    parser.add_argument("--prune-steps", type=int, default=PruneSpec().steps)
    parser.add_argument("--prune-batch", type=int, default=PruneSpec().batch_size)
    parser.add_argument("--tasks", nargs="+", default=["single_double_quote", "bracket_counting"])
    parser.add_argument("--threshold", type=float, default=PruneSpec().loss_threshold)
    args = parser.parse_args()
    device = pick_device("auto")
    timings: dict[str, float] = {}

    # Tokenizer and token arrays.
    t0 = time.perf_counter()
    texts = [text for _, text in synthetic_programs(0, parse_count(args.corpus_bytes))]
    split = max(1, len(texts) // 20)
    tokenizer = train_tokenizer(texts[split:], args.vocab, all_candidates())
    train_ids = encode_documents(tokenizer, texts[split:])
    heldout_ids = encode_documents(tokenizer, texts[:split])
    timings["tokenize"] = time.perf_counter() - t0

    # Weight-sparse training.
    cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size(), context=args.context,
                    n_layer=args.n_layer, d_model=args.d_model, d_head=16,
                    d_mlp=4 * args.d_model)
    train_spec = TrainSpec(tokens=parse_count(args.tokens), batch_size=args.batch_size,
                           eval_every=10**9, checkpoint_every=10**9, eval_tokens=16384)
    with tempfile.TemporaryDirectory() as out_dir:
        result = train(cfg, train_spec, SparsitySpec(target=args.sparsity), seed=0,
                       train_data=train_ids, heldout_data=heldout_ids, out_dir=Path(out_dir))
    timings["train"] = result.wall_time_s
    model = result.model

    # Mean-ablation stats.
    spec = PruneSpec(steps=args.prune_steps, batch_size=args.prune_batch,
                     loss_threshold=args.threshold)
    t0 = time.perf_counter()
    means = compute_site_means(model, train_ids, spec.mean_tokens, 64, cfg.context)
    timings["stats"] = time.perf_counter() - t0

    print(f"model: n_layer {cfg.n_layer}, d_model {cfg.d_model}, context {cfg.context}, "
          f"vocab {cfg.vocab_size}, {result.tokens:,} tokens, kept {args.sparsity}, "
          f"heldout loss {result.heldout_loss:.3f}, on {describe_device(device)}")
    print(f"tokenize {timings['tokenize']:.1f}s  train {timings['train']:.1f}s  "
          f"stats {timings['stats']:.1f}s ({spec.mean_tokens:,} tokens)")
    print(f"prune: {spec.steps} steps × {spec.batch_size} pairs, {spec.train_pairs} train / "
          f"{spec.heldout_pairs} held-out pairs, threshold {spec.loss_threshold}")
    print(f"{'task':<26}{'prune s':>9}{'/ train':>9}{'full':>8}{'circuit':>9}"
          f"{'nodes':>7}{'edges':>7}{'necess.':>9}")
    for name in args.tasks:
        task = get_task(name)
        t0 = time.perf_counter()
        split_pairs = {split: encode_pairs(task.pairs(n, split, 0), tokenizer, task.candidates,
                                           cfg.context)
                       for split, n in (("train", spec.train_pairs),
                                        ("heldout", spec.heldout_pairs),
                                        ("test", spec.test_pairs))}
        pruned = prune(model, split_pairs["train"], split_pairs["heldout"],
                       split_pairs["test"].without(split_pairs["heldout"]), means, spec, seed=0)
        seconds = time.perf_counter() - t0
        n_edges = (sum(count_edges(pruned.circuit, model).values())
                   if pruned.circuit is not None else None)
        print(f"{name:<26}{seconds:>9.1f}{seconds / timings['train']:>9.2f}"
              f"{pruned.full_model_loss:>8.3f}{fmt(pruned.achieved_loss, '.3f'):>9}"
              f"{fmt(pruned.circuit.n_nodes if pruned.circuit else None, 'd'):>7}"
              f"{fmt(n_edges, 'd'):>7}{fmt(pruned.necessity_loss, '.3f'):>9}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
