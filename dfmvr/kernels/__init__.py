"""dfmvr.kernels."""
