"""Float tolerances shared by the tests, each with the measurement that justifies it.

Never compare separately computed floats bit for bit: BLAS, oneDNN and MLAS choose kernels (and so
summation orders) by CPU, thread count and memory alignment, so two forward passes over equal weights
and inputs can differ in the last bits, and do on some machines and not on others.
"""

from __future__ import annotations

# Two separately run float32 forward passes of the same weights on the same input (a model and its
# reloaded copy, a graph and its --compact twin). Measured: the tiny model and its reloaded checkpoint
# differ by up to 1.5e-8 on outputs of about 0.1 (a few float32 ulps; AMD EPYC, torch 2.13.0, 1 thread),
# bit-identical on the Intel machine that wrote the first tests. The bound leaves ~60x margin and is still
# ~1e4x below any real defect (a wrong or missing weight moves these outputs by > 1e-2).
SAME_COMPUTATION_FP32 = {"rtol": 1e-5, "atol": 1e-6}
