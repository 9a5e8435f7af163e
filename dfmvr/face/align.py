"""Five-point similarity alignment of a photo to the network's 224x224 crop, and its inverse.

Pixel convention (the one of ``camera.py``): continuous coordinates, u right, v down, origin at the
top-left *corner* of the image, so the centre of pixel (row i, col j) is (j + 0.5, i + 0.5). OpenCV puts
pixel centres at integers; ``Similarity.cv2_matrix`` converts, so ``align_image`` and every landmark or
mesh overlay agree to the sub-pixel.

The template. ``TEMPLATE_224`` is where Deep3DFaceRecon's crop puts the five points, so that a
frontal face fills our crop as it fills Deep3D's.
Deep3D fits its "standard 5 landmarks" (``TEMPLATE_3D``: BFM model space, decimetres, y up; the
numbers published with Deep3DFaceRecon, mirror-averaged here so the template is exactly symmetric)
to the detected points with an orthographic scale + translation, then rescales the photo so that one
decimetre spans ``DEEP3D_CROP_SCALE`` = 102 pixels and the model origin lands on the crop centre. So
the template is u = 112 + 102·x, v = 112 - 102·y: eyes at v = 82 (37% of the height), nose tip near
the centre (v = 117), mouth corners at v = 151. Deep3D's own camera (focal 1015 px at distance 10 dm)
magnifies the origin by 101.5 px/dm, which is why 102 matches a face rendered with zero pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = [
    "FIVE_POINT_NAMES", "TEMPLATE_3D", "DEEP3D_CROP_SCALE", "TEMPLATE_224", "Similarity", "five_points_from_68",
    "umeyama", "estimate_similarity", "template_for_size", "align_image",
]

# Order of the five points, in image terms (the subject's right eye appears on the image's left).
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")

# 0-based iBUG-68 indices: eye corners (image-left eye 36, 39; image-right 42, 45), nose tip, mouth corners.
_LEFT_EYE_68 = [36, 39]
_RIGHT_EYE_68 = [42, 45]
_NOSE_TIP_68 = 30
_MOUTH_CORNERS_68 = (48, 54)

# Deep3DFaceRecon's standard five landmarks (decimetres, x right as seen by the camera, y up, z to the
# camera), mirror-averaged: left/right pairs differ by under 2e-3 dm in the published numbers.
TEMPLATE_3D = np.array(
    [
        [-0.31064, 0.29004, 0.13279],    # left eye centre (image left)
        [0.31064, 0.29004, 0.13279],     # right eye centre
        [0.00000, -0.04618, 0.55244],    # nose tip
        [-0.25032, -0.38131, 0.22321],   # left mouth corner
        [0.25032, -0.38131, 0.22321],    # right mouth corner
    ],
    dtype=np.float32,
)
DEEP3D_CROP_SCALE = 102.0   # pixels per decimetre in a 224 crop (Deep3D's rescale_factor)

TEMPLATE_224: np.ndarray = np.stack(
    [112.0 + DEEP3D_CROP_SCALE * TEMPLATE_3D[:, 0], 112.0 - DEEP3D_CROP_SCALE * TEMPLATE_3D[:, 1]], axis=1,
).astype(np.float32)
"""[5, 2] float32 pixel positions of the five points in a 224x224 crop (see the module docstring)."""
TEMPLATE_224.setflags(write=False)


def template_for_size(size: int) -> np.ndarray:
    """The template scaled to a ``size`` x ``size`` crop: [5, 2] float32 pixels (corner origin)."""
    return (TEMPLATE_224 * np.float32(size / 224.0)).astype(np.float32)


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare .matrix with a tolerance
class Similarity:
    """A 2D similarity transform p' = A·p + b (A = s·R, det R = +1) in continuous pixel coordinates.

    ``matrix`` [2, 3] float64 is [A | b]. ``apply`` maps points [..., 2]; ``inverse`` maps back.
    """

    matrix: np.ndarray

    def __post_init__(self):
        m = np.array(self.matrix, dtype=np.float64).reshape(2, 3)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    @classmethod
    def from_params(cls, scale: float, angle: float, translation) -> "Similarity":
        """scale (unitless), angle (radians, counter-clockwise in u-right/v-down axes), translation [2] px."""
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        tx, ty = np.asarray(translation, np.float64)
        return cls(np.array([[c, -s, tx], [s, c, ty]]))

    @property
    def scale(self) -> float:
        a = self.matrix[:, :2]
        return float(np.sqrt(abs(np.linalg.det(a))))

    @property
    def angle(self) -> float:
        """Rotation angle in radians."""
        return float(np.arctan2(self.matrix[1, 0], self.matrix[0, 0]))

    @property
    def translation(self) -> np.ndarray:
        return self.matrix[:, 2].copy()

    def apply(self, points) -> np.ndarray:
        """Points [..., 2] (pixels) -> transformed points [..., 2], float32."""
        p = np.asarray(points, dtype=np.float64)
        out = p @ self.matrix[:, :2].T + self.matrix[:, 2]
        return out.astype(np.float32)

    def inverse(self) -> "Similarity":
        a_inv = np.linalg.inv(self.matrix[:, :2])
        return Similarity(np.concatenate([a_inv, -(a_inv @ self.matrix[:, 2])[:, None]], axis=1))

    def compose(self, first: "Similarity") -> "Similarity":
        """The transform that applies ``first`` then ``self``."""
        a = self.matrix[:, :2] @ first.matrix[:, :2]
        b = self.matrix[:, :2] @ first.matrix[:, 2] + self.matrix[:, 2]
        return Similarity(np.concatenate([a, b[:, None]], axis=1))

    def cv2_matrix(self) -> np.ndarray:
        """The same map for OpenCV's integer-centred pixels: [2, 3] float64 for ``cv2.warpAffine``.

        With q = p - 0.5:  q' = A·q + (b + A·(0.5, 0.5) - (0.5, 0.5)).
        """
        a, b = self.matrix[:, :2], self.matrix[:, 2]
        half = np.array([0.5, 0.5])
        return np.concatenate([a, (b + a @ half - half)[:, None]], axis=1)


def five_points_from_68(landmarks) -> np.ndarray:
    """iBUG-68 landmarks [..., 68, 2] -> five points [..., 5, 2] float32, order ``FIVE_POINT_NAMES``.

    Eye centres are the midpoints of each eye's two corners (36/39, 42/45), as in Deep3D, whose
    template numbers were made that way (and the eyelids, which move when people blink, stay out);
    the nose tip is point 30; mouth corners are 48 and 54 (0-based). Coordinates pass through
    unchanged (any units, any pixel origin).
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim < 2 or lm.shape[-2:] != (68, 2):
        raise ValueError(f"expected landmarks of shape [..., 68, 2], got {lm.shape}")
    left_eye = lm[..., _LEFT_EYE_68, :].mean(axis=-2)
    right_eye = lm[..., _RIGHT_EYE_68, :].mean(axis=-2)
    nose = lm[..., _NOSE_TIP_68, :]
    mouth_l, mouth_r = lm[..., _MOUTH_CORNERS_68[0], :], lm[..., _MOUTH_CORNERS_68[1], :]
    return np.stack([left_eye, right_eye, nose, mouth_l, mouth_r], axis=-2).astype(np.float32)


def umeyama(src, dst, with_scale: bool = True, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity in any dimension D (Umeyama 1991), never a reflection.

    src, dst [K, D] float; weights [K] >= 0 or None. Returns (scale, R [D, D], t [D]), float64, that
    minimise sum_k w_k |scale·R·src_k + t - dst_k|^2 (scale = 1 when ``with_scale`` is False).
    Raises ValueError when ``src`` has no spread.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = float(w @ (xs ** 2).sum(axis=1))
    if var_s < 1e-12 * max(1.0, float(np.abs(src).max(initial=0.0)) ** 2):
        raise ValueError("source points have no spread")
    cov = (xd * w[:, None]).T @ xs                  # [D, D]
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(len(d))
    if np.linalg.det(u) * np.linalg.det(vt) < 0:    # forbid reflections
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s) if with_scale else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def estimate_similarity(src, dst, source=None) -> Similarity:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` onto ``dst``.

    src, dst [K, 2] (K >= 2) pixel coordinates. Minimises sum_k |s·R·src_k + t - dst_k|^2.
    ``source`` names the file the points came from, for the error raised when they are degenerate.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"expected two [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputError(source, "landmarks contain NaN or infinite values",
                         "check the landmark detector output or the landmark file")
    try:
        scale, rot, t = umeyama(src, dst)
    except ValueError as exc:
        raise InputError(source, "the landmarks all coincide, so no alignment can be estimated",
                         "check the landmark detector output or the landmark file") from exc
    return Similarity(np.concatenate([scale * rot, t[:, None]], axis=1))


def align_image(image, points5, size: int = 224, template=None, border: str = "replicate",
                source=None) -> tuple[np.ndarray, Similarity]:
    """Warp a photo so that its five points land on the template: (crop, photo->crop Similarity).

    image   [H, W, C] or [H, W], any dtype cv2 accepts (uint8 RGB/BGR is passed through unchanged)
    points5 [5, 2] the photo's five points (``five_points_from_68``), continuous pixels (corner origin)
    size    output side in pixels; the template is scaled by size / 224
    border  "replicate" (default: repeats edge pixels, so a face near the photo's edge gets no black
            wedge that the parse net would read as background) or "constant" (black)
    Returns crop [size, size, C] of the image's dtype (bilinear) and the Similarity photo -> crop;
    ``sim.inverse().apply`` maps crop pixels (landmarks, mesh overlays) back onto the photo.
    """
    import cv2  # lazy: opencv is needed only when pixels are warped

    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(source, f"expected an image [H, W] or [H, W, C], got shape {image.shape}",
                         "pass a decoded photo")
    borders = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
    if border not in borders:
        raise ValueError(f"border must be one of {sorted(borders)}, got {border!r}")
    dst = template_for_size(size) if template is None else np.asarray(template, np.float32)
    sim = estimate_similarity(points5, dst, source=source)
    crop = cv2.warpAffine(image, sim.cv2_matrix(), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=borders[border], borderValue=0)
    if crop.ndim == 2 and image.ndim == 3:      # cv2 drops a trailing channel axis of 1
        crop = crop[..., None]
    return crop, sim
