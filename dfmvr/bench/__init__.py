"""dfmvr.bench: measurement helpers behind ``dfmvr bench`` (statistics, environment, FLOPs, GEMM rate).

torch is imported only by the torch backend, so the bench runs with the base install.
"""
