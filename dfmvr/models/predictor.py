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
        torch = self._torch
        x = torch.from_numpy(images).to(self.device)
        keypoints = None
        with torch.inference_mode():
            if getattr(self.model, "predicts_keypoints", False):
                coeffs, labels, keypoints = self.model.forward_with_keypoints(x)
                keypoints = keypoints.float().cpu().numpy()
            else:
                coeffs, labels = self.model(x)
        return coeffs.float().cpu().numpy(), labels.cpu().numpy().astype(np.uint8), keypoints
