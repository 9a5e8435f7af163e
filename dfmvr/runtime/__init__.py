"""dfmvr.runtime: the torch-free inference path (ONNX Runtime / TensorRT + numpy or CUDA assembly).

Never import torch or dfmvr.train here; tests/runtime/test_no_torch.py enforces it.
"""
