"""dfmvr: DF-MVR multi-view 3D face reconstruction from three photos (left, front, right).

Subpackages: ``face`` (numpy face maths, the reference), ``kernels`` (CUDA sources and their numpy
references), ``train`` (torch), ``export`` (torch -> ONNX / TensorRT), ``runtime`` (no torch),
``eval`` (dataset evaluation, no torch), ``bench`` (``dfmvr bench``), ``cli`` (click commands).
Imports point down only: cli -> bench / export / train -> eval -> runtime / kernels -> face -> errors.
See ARCHITECTURE.md in the design docs for the contracts.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
