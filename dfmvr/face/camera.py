"""The project camera: pinhole, square image, principal point at the centre, on the +z axis.

Conventions (one home for them):
- Model space: right-handed; with the face looking at the camera, x points to the viewer's right
  (the subject's left), y up, z towards the camera. Units are BFM/Deep3D decimetres.
- The camera sits at (0, 0, distance) and looks down -z. Camera-space depth is ``distance - z``.
- Image coordinates are continuous pixels: u to the right, v downwards, origin at the top-left
  corner of the top-left pixel, so pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).
  u = cx + f * x / depth,  v = cy - f * y / depth   (cx = cy = size / 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Camera", "DEEP3D_CAMERA", "OFFICIAL_CAMERA", "project"]


@dataclass(frozen=True)
class Camera:
    focal: float = 1015.0          # pixels, at ``image_size``
    image_size: int = 224          # square images
    distance: float = 10.0         # camera z position in model units

    @property
    def center(self) -> float:
        return self.image_size / 2.0

    @property
    def fov_deg(self) -> float:
        return float(np.degrees(2.0 * np.arctan(self.image_size / 2.0 / self.focal)))

    def downscaled(self, factor: int) -> "Camera":
        """The same camera imaging 1/``factor`` of the pixels per side (focal and size divided): a point
        at pixel (u, v) here lands at (u / factor, v / factor) there, so a photo box-averaged by
        ``factor`` is what this camera sees. Coarse renders use it (refinement, training's photo term)."""
        if factor < 1 or self.image_size % factor:
            raise ValueError(f"downscale factor {factor} must be >= 1 and divide the image size {self.image_size}")
        return Camera(focal=self.focal / factor, image_size=self.image_size // factor, distance=self.distance)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(focal=float(d["focal"]), image_size=int(d["image_size"]), distance=float(d["distance"]))


DEEP3D_CAMERA = Camera(distance=10.0)   # Deep3DFaceRecon convention, translation z near 0
OFFICIAL_CAMERA = Camera(distance=1.0)  # official DF-MVR weights: learned translation z near -9


def project(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Posed model-space points [..., 3] -> pixel coordinates [..., 2] (u right, v down), float32.

    Points at or behind the camera plane get non-finite coordinates; callers that care test depth.
    """
    points = np.asarray(points, dtype=np.float32)
    depth = np.float32(camera.distance) - points[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.center + camera.focal * points[..., 0] / depth
        v = camera.center - camera.focal * points[..., 1] / depth
    return np.stack([u, v], axis=-1).astype(np.float32)
