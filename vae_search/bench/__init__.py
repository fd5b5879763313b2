"""Benchmarks: the trainer and trial throughput (``vae-search bench``), and the storage load
test with its worker processes."""
