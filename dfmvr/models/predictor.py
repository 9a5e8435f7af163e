"""A torch model as a ``dfmvr.eval`` predictor (the evaluation itself is torch-free: ``dfmvr.eval``)."""

from __future__ import annotations

import numpy as np

__all__ = ["TorchPredictor"]


class TorchPredictor:
    """A DFMVRNet (eval mode) as a predictor: images [B, 3, 3, H, W] normalised -> [B, 269] float32
    (``predict``: and the parse labels and the keypoints)."""

    def __init__(self, model, device: str = "cpu"):
        import torch

        self._torch = torch
        self.model = model.eval().to(device)
        self.device = device
        self.card = model.card

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)[0]

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """-> (coefficients [B, 269] float32, the parse net's labels [B, 3, H, W] uint8, keypoints
        [B, 3, 68, 2] float32 crop px or None: what the exported graph outputs)."""
        from .graph import graph_forward

        torch = self._torch
        with torch.inference_mode():
            values = [v.cpu().numpy() for v in graph_forward(self.model, torch.from_numpy(images).to(self.device))]
        return values[0], values[1], (values[2] if len(values) > 2 else None)
