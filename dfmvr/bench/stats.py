"""Latency statistics: warm-up excluded by the caller; times in milliseconds."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["summarize", "time_calls"]


def summarize(times_ms, batch: int = 1) -> dict[str, float]:
    """min / median / p90 / p99 / mean latency (ms) and throughput (items/s from the median)."""
    t = np.asarray(times_ms, np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarize")
    median = float(np.median(t))
    return {
        "iters": int(t.size), "min_ms": float(t.min()), "median_ms": median,
        "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()), "throughput_per_s": float(batch * 1000.0 / median) if median > 0 else float("inf"),
    }


def time_calls(fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
    """Call ``fn`` warmup + iters times; return the last ``iters`` wall times in ms."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out
