"""dfmvr.runtime: the torch-free inference path (ONNX Runtime / TensorRT + numpy or CUDA assembly).

Never import torch or dfmvr.train / models / synth here; tests/test_no_torch_imports.py enforces it (every module of
this package imported with torch blocked), as does tests/runtime/test_cli_run.py for a whole run.
"""
