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
        return _in_graph_dtypes(model, *model.forward_with_keypoints(images))
    return _in_graph_dtypes(model, *model(images))


def graph_forward_given_labels(model, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """``graph_forward`` with the parser's labels replaced by ``labels`` [B, 3, H, W] (``DFMVRNet.forward_given_labels``)."""
    return _in_graph_dtypes(model, *model.forward_given_labels(images, labels))


def _in_graph_dtypes(model, coefficients: Tensor, labels: Tensor, keypoints: Tensor | None = None) -> tuple[Tensor, ...]:
    """The graph's dtypes (coefficients and keypoints float32, labels uint8), keypoints where the graph has them."""
    out = (coefficients.float(), labels.to(torch.uint8))
    return out + (keypoints.float(),) if GRAPH_KEYPOINTS in graph_outputs(model) else out


class GraphModule(nn.Module):
    """``model`` (eval mode) whose ``forward`` is ``graph_forward``."""

    def __init__(self, model):
        super().__init__()
        self.net = model
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return graph_forward(self.net, images)
