"""The full DF-MVR network: parse net x3 (frozen) -> MulEn-Unet -> RedNet -> coefficient heads.

Top-level module names match the official checkpoint: ``mask_model`` (the parse net, also exposed
as ``.parse_net``), ``uuunet`` (MulEn-Unet), ``rednet_fc`` (RedNet + heads).

Missing views: a view whose normalised image is exactly all zeros (what the data pipeline and the
exported graph feed for a missing view, paper section 5.3) gets label 0 (background) everywhere, so
its whole 4-channel input is zeros, independent of what the parse net would say about a grey image.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dfmvr.card import ModelCard
from dfmvr.face.layout import COEFFS, NUM_VIEWS, VIEWS

from .lite import LiteFusion, LiteRegressor
from .heads import RedNetRegressor
from .parse_net import BiSeNet
from .unet import MulEnUnet

__all__ = ["DFMVRNet", "pack_views", "fusion_input"]


def pack_views(views: Mapping[str, Tensor]) -> Tensor:
    """{view name: [B, 3, H, W]} for one to three of VIEWS -> images [B, 3, 3, H, W], missing views zero."""
    unknown = set(views) - set(VIEWS)
    if unknown or not views:
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {sorted(views)}")
    ref = next(iter(views.values()))
    return torch.stack([views[name] if name in views else torch.zeros_like(ref) for name in VIEWS], dim=1)


def fusion_input(images: Tensor, labels: Tensor) -> Tensor:
    """images [B, 3, 3, H, W] and label indices [B, 3, H, W] -> what the fusion reads per view,
    [B, 3, 4, H, W]: RGB, then the label index as a fourth channel (the fusion one-hots it)."""
    return torch.cat([images, labels.unsqueeze(2).to(images.dtype)], dim=2)


class DFMVRNet(nn.Module):
    """DF-MVR from three normalised views to coefficients and parse labels.

    Built from a ``ModelCard`` whose ``architecture`` has the keys ``parse`` (BiSeNet args),
    ``unet`` (MulEnUnet args) and ``rednet`` (RedNet args); see ``variants.py``.
    """

    def __init__(self, card: ModelCard):
        super().__init__()
        arch = card.architecture
        self.card = card
        self.mask_model = BiSeNet(**arch["parse"])
        if arch.get("design", "official") == "lite":     # variants.py: 'lite'
            self.uuunet = LiteFusion(**arch["unet"])
            self.rednet_fc = LiteRegressor(card.layout_obj(), in_channels=self.uuunet.out_features,
                                              **arch["rednet"])
        else:
            self.uuunet = MulEnUnet(**arch["unet"])
            rednet_args = dict(arch["rednet"])
            rednet_args.setdefault("in_channels", self.uuunet.out_features)
            self.rednet_fc = RedNetRegressor(card.layout_obj(), **rednet_args)
        # The parse net is frozen: its weights come from a parse checkpoint, never from this loss.
        for p in self.mask_model.parameters():
            p.requires_grad_(False)
        self.mask_model.eval()

    @property
    def parse_net(self) -> BiSeNet:
        return self.mask_model

    @property
    def last_keypoints(self) -> Tensor | None:
        """[B, views, K, 2] px from the last forward pass, for the keypoint loss, or None: the official
        design's keypoint readout (read by its heads) or the lite design's training target."""
        for module in (self.rednet_fc, self.uuunet):
            keypoints = getattr(module, "last_keypoints", None)
            if keypoints is not None:
                return keypoints
        return None

    def train(self, mode: bool = True) -> "DFMVRNet":
        super().train(mode)
        self.mask_model.eval()   # always: frozen BN statistics, main output only
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3 views, 3, H, W] float32, RGB in [-1, 1], views in VIEWS order, missing = 0.

        Returns (coefficients [B, COEFFS.size] float32 in COEFFS order, labels [B, 3, H, W] int64).
        """
        x, labels = self.view_inputs(images)
        coefficients, _ = self._after_parser(x, keypoints=False)
        return coefficients, labels

    @property
    def predicts_keypoints(self) -> bool:
        """Whether the network predicts each view's 2D landmarks (the lite design's keypoint heads, or
        the official design's keypoint readout): the exported graph then has a ``keypoints`` output."""
        if isinstance(self.uuunet, LiteFusion):
            return bool(self.uuunet.keypoints)
        return getattr(self.rednet_fc, "keypoint_readout", None) is not None

    def forward_with_keypoints(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` plus keypoints [B, 3 views, K, 2] in input pixels (x right, y down), in any mode;
        the coefficients are ``forward``'s. ValueError when the network predicts none."""
        if not self.predicts_keypoints:
            raise ValueError("this network predicts no keypoints (architecture unet.keypoints / "
                             "rednet.keypoints = 0)")
        x, labels = self.view_inputs(images)
        coefficients, keypoints = self._after_parser(x, keypoints=True)
        return coefficients, labels, keypoints

    def _after_parser(self, x: Tensor, keypoints: bool) -> tuple[Tensor, Tensor | None]:
        """The layers after the parser on the fusion input x [B, 3, 4, H, W] (``view_inputs``): (coefficients,
        keypoints [B, 3, K, 2] px when asked for, else None). The one home of that path for ``forward``,
        ``forward_with_keypoints`` and ``forward_given_labels``, so the export's parity reference on given
        labels is the very computation the graph traces."""
        if keypoints and isinstance(self.uuunet, LiteFusion):
            feature, points = self.uuunet.fuse_with_keypoints(x[:, 0], x[:, 1], x[:, 2])
            return self.rednet_fc(feature), points
        coefficients = self.rednet_fc(self.uuunet(x[:, 0], x[:, 1], x[:, 2]))
        # the official design's keypoint readout, which its heads read, is kept by the regressor
        return coefficients, (self.rednet_fc.last_keypoints if keypoints else None)

    def drop_keypoint_heads(self) -> "DFMVRNet":
        """Remove the lite design's keypoint heads (in place): the exported graph then has no ``keypoints``
        output and does not pay for them (``dfmvr-export --no-keypoints``; the coefficients do not read
        them). ValueError for the official design's keypoint readout, which its heads read."""
        if isinstance(self.uuunet, LiteFusion):
            for v in range(self.uuunet.num_views):
                if hasattr(self.uuunet, f"kp_{v}"):
                    delattr(self.uuunet, f"kp_{v}")
            self.uuunet.keypoints = 0
        elif self.predicts_keypoints:
            raise ValueError("this network's heads read its keypoints (rednet.keypoints): they cannot be dropped")
        return self

    def view_inputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, 3, H, W] -> (what the fusion reads [B, 3, 4, H, W]: RGB + label index, labels)."""
        if images.dim() != 5 or images.shape[1] != NUM_VIEWS or images.shape[2] != 3:
            raise ValueError(f"images must be [B, {NUM_VIEWS}, 3, H, W] (use pack_views for fewer views), "
                             f"got {tuple(images.shape)}")
        b, v, c, h, w = images.shape
        logits = self.mask_model(images.reshape(b * v, c, h, w))
        # max(dim).indices: same labels as argmax, ~3x faster on CPU for a channel-dim reduction.
        return self._with_labels(images, logits.detach().max(dim=1).indices.reshape(b, v, h, w))

    @staticmethod
    def _with_labels(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(fusion input, labels) for given label indices [B, 3, H, W]; a missing view's labels are 0."""
        present = images.detach().flatten(2).abs().amax(dim=2) > 0          # [B, V] bool
        labels = labels.to(torch.int64) * present[:, :, None, None].to(torch.int64)
        return fusion_input(images, labels), labels

    def forward_given_labels(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        """The graph's outputs (``forward``'s, plus keypoints where it predicts them) with the parser's labels
        replaced by ``labels`` [B, 3, H, W]: what the layers after the parser make of them. The export's
        parity check scores a graph whose argmax fell the other way at a near tie against this, so that one
        flipped pixel is judged by the label gate, not as a coefficient error (dfmvr/export/parity.py)."""
        x, labels = self._with_labels(images, labels)
        coefficients, keypoints = self._after_parser(x, keypoints=self.predicts_keypoints)
        return (coefficients, labels) if keypoints is None else (coefficients, labels, keypoints)

    def split(self, coefficients: Tensor):
        """Flat [B, 269] -> ``Coefficients`` of torch tensors (through the card's layout)."""
        return self.card.layout_obj().split(coefficients)


assert COEFFS.views == NUM_VIEWS  # the network's view count and the layout's must agree
