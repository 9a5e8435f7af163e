"""Benchmark scripts (numbers in files, not tests). Run each from the repository root as a module:

    python -m benchmarks.bench_network --help

Shared helpers live in ``benchmarks._common``; the measurement code the ``dfmvr bench`` command uses
lives in ``dfmvr.bench``. Nothing here is shipped in the ``dfmvr`` package.
"""
