"""Benchmark: generated snapshots at scale, the sync and read paths measured and verified."""
