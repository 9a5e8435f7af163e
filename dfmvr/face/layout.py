"""The contracts every part of dfmvr shares: view order, parse classes, the coefficient layout.

Nothing else in the project slices a coefficient vector by hand: use ``COEFFS.split`` / ``COEFFS.join``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = [
    "VIEWS", "VIEW_SUFFIXES", "NUM_VIEWS", "VIEW_YAW_DEG",
    "PARSE_CLASSES", "NUM_PARSE_CLASSES",
    "Coefficients", "CoefficientLayout", "COEFFS",
]

# View order everywhere: index 0 left, 1 front, 2 right. The official checkpoint names the per-view
# heads with these suffixes.
VIEWS: tuple[str, ...] = ("left", "front", "right")
VIEW_SUFFIXES: tuple[str, ...] = ("_lt", "_ft", "_rt")
NUM_VIEWS = len(VIEWS)
# Nominal head yaw of each view in degrees (rotation about +y, R = Rz Ry Rx). In the left view the
# camera sees the subject's left cheek: the head is turned by -45 degrees.
VIEW_YAW_DEG: tuple[float, ...] = (-45.0, 0.0, 45.0)

# The 10 parse classes. "left"/"right" are the subject's own left and right.
PARSE_CLASSES: tuple[str, ...] = (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye",
    "nose", "mouth", "upper_lip", "lower_lip",
)
NUM_PARSE_CLASSES = len(PARSE_CLASSES)


@dataclass
class Coefficients:
    """One or more reconstructions, batch-first numpy arrays (float32 unless stated).

    identity    [B, 80]     identity (shape) coefficients, in units of the basis' standard deviation
    expression  [B, 64]     expression coefficients
    texture     [B, 80]     albedo coefficients
    lighting    [B, 27]     SH lighting, 3 colour channels x 9 bands (channel-major), shared by views
    rotation    [B, V, 3]   per-view Euler angles (x, y, z) in radians, R = Rz @ Ry @ Rx
    translation [B, V, 3]   per-view translation in model units (decimetres)
    """

    identity: np.ndarray
    expression: np.ndarray
    texture: np.ndarray
    lighting: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.identity.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, index) -> "Coefficients":
        """Rows ``index`` of the batch (an int keeps a batch axis of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Coefficients(**{k: v[index] for k, v in self.as_dict().items()})

    def with_views(self, sources) -> "Coefficients":
        """The same faces with view slot k holding the pose of view ``sources[k]``: what the true
        coefficients become when slot k is shown view ``sources[k]``'s photo (the pose belongs to the
        photo; identity, expression, texture and light to the face). Used by slot-broken training rows
        (dfmvr/train/slot_breaks.py) and ``dfmvr eval --slot-order``."""
        src = list(sources)
        return replace(self, rotation=self.rotation[:, src], translation=self.translation[:, src])


@dataclass(frozen=True)
class CoefficientLayout:
    """Where each block lives in the flat coefficient vector the network emits.

    Order (the official head order): identity, expression, texture, lighting, then for each view in
    ``VIEWS`` order: rotation (3), translation x/y (2), translation z (1). 269 numbers for 3 views.
    """

    identity: int = 80
    expression: int = 64
    texture: int = 80
    lighting: int = 27
    rotation: int = 3
    translation: int = 3
    views: int = NUM_VIEWS

    @property
    def shared(self) -> int:
        return self.identity + self.expression + self.texture + self.lighting

    @property
    def per_view(self) -> int:
        return self.rotation + self.translation

    @property
    def size(self) -> int:
        return self.shared + self.views * self.per_view

    def shared_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name in ("identity", "expression", "texture", "lighting"):
            n = getattr(self, name)
            out[name] = slice(start, start + n)
            start += n
        return out

    def split(self, flat) -> Coefficients:
        """``flat`` [B, size] (numpy; torch tensors work too) -> Coefficients (views unpacked)."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"coefficient vector has {flat.shape[-1]} numbers, layout expects {self.size}")
        parts = {k: flat[..., s] for k, s in self.shared_slices().items()}
        poses = flat[..., self.shared:].reshape(*flat.shape[:-1], self.views, self.per_view)
        parts["rotation"] = poses[..., : self.rotation]
        parts["translation"] = poses[..., self.rotation:]
        return Coefficients(**parts)

    def join(self, c: Coefficients) -> np.ndarray:
        """Coefficients -> flat [B, size] float32 (numpy)."""
        b = c.identity.shape[0]
        poses = np.concatenate([np.asarray(c.rotation), np.asarray(c.translation)], axis=-1)
        return np.concatenate(
            [np.asarray(c.identity), np.asarray(c.expression), np.asarray(c.texture),
             np.asarray(c.lighting), poses.reshape(b, -1)], axis=-1,
        ).astype(np.float32)

    def zeros(self, batch: int = 1) -> Coefficients:
        return self.split(np.zeros((batch, self.size), np.float32))

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COEFFS = CoefficientLayout()
