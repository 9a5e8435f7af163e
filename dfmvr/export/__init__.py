"""dfmvr.export: torch -> one ONNX graph with the ``dfmvr::Involution`` custom op (+ fp16, TensorRT).

Modules (import the one you need; none imports torch at import time except through its functions):
- ``involution_onnx``  the op's ONNX schema, its standard-op FunctionProto, the exporter translation
- ``onnx_export``      ``export_onnx(model, out_path)``: dynamo export, function, card, checker, onnxslim
- ``parity``           torch vs ONNX Runtime / TensorRT reports (coefficients, labels, mesh mm)
- ``fp16``             ``convert_to_fp16``: fp16 graph with fp32 I/O
- ``tensorrt_build``   ``build_engine`` (TensorRT imported lazily), ``TensorrtRunner``
- ``pipeline``         ``export_all``: what ``dfmvr-export`` runs

The measurements of the involution function body and of whole graphs are a benchmark script,
``benchmarks/bench_export_body.py`` (``python -m benchmarks.bench_export_body``), outside the package.
"""
