"""What the exported graph computes, in torch: the one home of its outputs on the torch side.

``graph_outputs(model)`` names them in order (``dfmvr.card``'s contract: ``coefficients``, ``labels``,
and ``keypoints`` for a network that predicts them); ``graph_forward(model, images)`` computes them
with the graph's dtypes (coefficients and keypoints float32, labels uint8); ``GraphModule`` wraps a
model so that its ``forward`` is that (what the export traces and ``dfmvr bench`` compiles). The
export, the torch runner (the parity reference), the torch predictor and the bench all call these.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..card import GRAPH_KEYPOINTS, GRAPH_OUTPUTS

__all__ = ["graph_outputs", "graph_forward", "graph_forward_given_labels", "GraphModule"]


def graph_outputs(model) -> list[str]:
    """The output names of ``model``'s graph: the contract's two, and ``keypoints`` when it predicts them."""
    return list(GRAPH_OUTPUTS) + ([GRAPH_KEYPOINTS] if getattr(model, "predicts_keypoints", False) else [])


def graph_forward(model, images: Tensor) -> tuple[Tensor, ...]:
    """``model``'s graph outputs for ``images``, in ``graph_outputs`` order and the graph's dtypes."""
    if GRAPH_KEYPOINTS in graph_outputs(model):
        coefficients, labels, keypoints = model.forward_with_keypoints(images)
        return coefficients.float(), labels.to(torch.uint8), keypoints.float()
    coefficients, labels = model(images)
    return coefficients.float(), labels.to(torch.uint8)


def graph_forward_given_labels(model, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """``graph_forward`` with the parser's labels replaced by ``labels`` [B, 3, H, W] (``DFMVRNet.forward_given_labels``)."""
    out = model.forward_given_labels(images, labels)
    coefficients, labels = out[0].float(), out[1].to(torch.uint8)
    return (coefficients, labels, out[2].float()) if GRAPH_KEYPOINTS in graph_outputs(model) else (coefficients, labels)


class GraphModule(nn.Module):
    """``model`` (eval mode) whose ``forward`` is ``graph_forward``."""

    def __init__(self, model):
        super().__init__()
        self.net = model
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return graph_forward(self.net, images)
