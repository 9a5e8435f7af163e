"""This machine's own fp32 GEMM rate, measured in the same run as the model (numpy/BLAS and ORT).

The rate is the yardstick for "what fraction of the machine does the network use".
"""

from __future__ import annotations

import numpy as np

from .stats import time_calls

__all__ = ["gemm_rate_gflops"]


def gemm_rate_gflops(n: int = 1024, iters: int = 10, warmup: int = 2, threads: int | None = None) -> dict:
    """Median GFLOP/s of an n×n×n fp32 matmul in ONNX Runtime (the engine the CPU path uses) and numpy;
    ``best_gflops`` is the rate of the fastest single call of either (the yardstick for the network's
    fraction of the machine: conservative, it is compared with the network's median)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9          # onnx >= 1.23 writes IR 14 by default, newer than ONNX Runtime reads
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    t_ort = time_calls(lambda: sess.run(None, {"A": a, "B": b}), iters, warmup)
    t_np = time_calls(lambda: a @ b, iters, warmup)
    rates = {"onnxruntime_gflops": flops / (float(np.median(t_ort)) * 1e-3) / 1e9,
             "numpy_gflops": flops / (float(np.median(t_np)) * 1e-3) / 1e9}
    peaks = {"onnxruntime_peak_gflops": flops / (float(np.min(t_ort)) * 1e-3) / 1e9,
             "numpy_peak_gflops": flops / (float(np.min(t_np)) * 1e-3) / 1e9}
    # The yardstick: the fastest call of the faster BLAS is what this machine can do (on a shared
    # machine the median is depressed by other people's load; the fastest call much less so).
    return {"n": n, "threads": threads, **rates, **peaks, "best_gflops": max(peaks.values())}
