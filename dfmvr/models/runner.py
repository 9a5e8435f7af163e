"""The torch model as a runner of the runtime's family (``dfmvr.runtime.runners.Runner``).

``TorchRunner`` has the runtime runners' lifecycle -- ``activate`` / ``infer`` / ``deactivate``, a context
manager -- and the exported graph's signature: ``infer({"images": [B, 3, 3, S, S] float32})`` returns
``{"coefficients": [B, 269] float32, "labels": [B, 3, S, S] uint8}`` and, for a network that predicts
them, ``"keypoints": [B, 3, 68, 2] float32`` px (``dfmvr.card.GRAPH_INPUT`` / ``GRAPH_OUTPUTS`` /
``GRAPH_KEYPOINTS``; computed by ``dfmvr.models.graph.graph_forward``). It is the reference of the export's parity reports: ``dfmvr.export.parity.RunnerCall``
adapts it exactly as it adapts the runtime's ``OnnxrtRunner`` and ``TensorrtRunner``.

Activation puts the model in eval mode on ``device``; deactivation gives the model back in the mode
(train / eval) it was in before. Inference runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import numpy as np

from ..card import GRAPH_INPUT
from ..errors import InputError
from ..runtime.runners import Runner
from .graph import graph_forward, graph_forward_given_labels, graph_outputs

__all__ = ["TorchRunner"]


class TorchRunner(Runner):
    """A DFMVRNet (or any module ``images -> (coefficients, labels)``) as a runner."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", labels: np.ndarray | None = None):
        """labels: label indices [B, 3, H, W] to run instead of the parser's (``graph_forward_given_labels``),
        for every call: the export parity's reference for a graph whose argmax fell the other way at a near tie."""
        super().__init__()
        self.model = model
        self.device = device
        self.labels = None if labels is None else np.asarray(labels).astype(np.int64)
        self._was_training: bool | None = None

    def _activate(self):
        self._was_training = bool(self.model.training)
        self.model.eval().to(self.device)

    def _infer(self, feed):
        import torch

        if GRAPH_INPUT not in feed:
            raise InputError(None, f"torch runner input '{GRAPH_INPUT}' was not fed")
        images = torch.from_numpy(np.ascontiguousarray(feed[GRAPH_INPUT], np.float32)).to(self.device)
        with torch.inference_mode():
            if self.labels is None:
                values = graph_forward(self.model, images)
            else:
                values = graph_forward_given_labels(self.model, images, torch.from_numpy(self.labels).to(self.device))
        return {name: value.cpu().numpy() for name, value in zip(graph_outputs(self.model), values)}

    def _deactivate(self):
        if self._was_training:
            self.model.train()
        self._was_training = None
