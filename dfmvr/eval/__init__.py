"""dfmvr.eval: NoW-style evaluation of a model over a dataset of triplets, without torch.

Where it sits (imports point down only)::

    cli -> bench / export / train -> models / synth -> eval -> runtime / kernels -> face -> errors

``eval`` scores any predictor (a callable with a ``card``: normalised images -> coefficients) against
ground-truth shapes with ``dfmvr.face.metrics``; its ONNX predictor runs through ``dfmvr.runtime``.
It never imports torch or the torch rooms (``dfmvr.train``, ``dfmvr.models``, ``dfmvr.synth``):
``dfmvr eval --onnx`` runs on the base install, and the
trainer's validation (``dfmvr.train.trainer``) wraps its torch model in
``dfmvr.models.predictor.TorchPredictor`` and calls down into ``evaluate_dataset``. (It lived in
``dfmvr/train/evaluate.py`` before, which made ``dfmvr eval --onnx`` reach a torch-free path through
``dfmvr.train``.) ``tests/test_layering.py`` checks these arrows on the source.
"""

from .dataset import (METHODS, EvalSample, OnnxPredictor, evaluate_dataset, find_eval_folders,
                      load_eval_sample)

__all__ = ["EvalSample", "find_eval_folders", "load_eval_sample", "OnnxPredictor", "evaluate_dataset", "METHODS"]
