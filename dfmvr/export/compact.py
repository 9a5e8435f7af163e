"""Smaller ONNX files: float32 weights stored as float16, cast back to float32 inside the graph.

The file halves, and ONNX Runtime folds the Casts into float32 constants when the session is created
(graph optimisation level basic and up), so inference still computes in float32 at the same speed.
With ``lossless=True`` only initializers that are exact float16 numbers are converted (bit-identical
results). A checkpoint stored in float16 (``dfmvr convert half``) has such weights, except those the
exporter folds (e.g. conv x batch-norm scale); ``dfmvr-export --compact`` uses ``lossless=True``,
because rounding the folded ones too measurably broke the fp32 parity gates on the first bundled demo
(coefficients 2.1e-4, mesh 0.027 mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CompactionReport", "store_weights_as_fp16"]

_SUFFIX = "__fp16"


@dataclass
class CompactionReport:
    converted: int            # initializers now stored as float16
    rounded: int              # ... of which were not exact float16 numbers (lossless=False only)
    kept: int                 # float32 initializers left as they were (lossless=True, not exact)
    bytes_before: int
    bytes_after: int


def store_weights_as_fp16(model, min_elements: int = 16, lossless: bool = True):
    """-> (new ModelProto, CompactionReport). ``model`` is not modified."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts, kept_inits = [], []
    report = CompactionReport(0, 0, 0, 0, 0)
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        report.bytes_before += array.nbytes
        if init.data_type != TensorProto.FLOAT or array.size < min_elements:
            kept_inits.append(init)
            report.bytes_after += array.nbytes
            continue
        with np.errstate(over="ignore"):
            half = array.astype(np.float16)
        exact = np.array_equal(half.astype(np.float32), array)
        if not np.isfinite(half).all() or (lossless and not exact):
            kept_inits.append(init)
            report.kept += 1
            report.bytes_after += array.nbytes
            continue
        kept_inits.append(numpy_helper.from_array(half, init.name + _SUFFIX))
        casts.append(helper.make_node("Cast", [init.name + _SUFFIX], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
        report.converted += 1
        report.rounded += int(not exact)
        report.bytes_after += half.nbytes
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    # graph inputs that merely declared an initializer (IR < 4 style) would now dangle: drop them
    converted = {c.output[0] for c in casts}
    keep_inputs = [i for i in graph.input if i.name not in converted]
    del graph.input[:]
    graph.input.extend(keep_inputs)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)          # Casts first: the graph stays topologically sorted
    return out, report
