"""Weight-sparse training: the loop, the top-k projection, checkpoints, data parallelism."""
