"""A torch model as a ``dfmvr.eval`` predictor (the evaluation itself is torch-free: ``dfmvr.eval``)."""

from __future__ import annotations

import numpy as np

__all__ = ["TorchPredictor"]


class TorchPredictor:
    """A DFMVRNet (eval mode) as a predictor: images [B, 3, 3, H, W] normalised -> [B, 269] float32
    (``predict``: and the parse labels)."""

    def __init__(self, model, device: str = "cpu"):
        import torch

        self._torch = torch
        self.model = model.eval().to(device)
        self.device = device
        self.card = model.card

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)[0]

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (coefficients [B, 269] float32, the parse net's labels [B, 3, H, W] uint8)."""
        torch = self._torch
        with torch.inference_mode():
            coeffs, labels = self.model(torch.from_numpy(images).to(self.device))
        return coeffs.float().cpu().numpy(), labels.cpu().numpy().astype(np.uint8)
