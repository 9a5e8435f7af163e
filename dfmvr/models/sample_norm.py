"""Batch norm that normalises with each sample's own statistics: at inference, or always.

Why: a briefly trained involution network blows up in eval mode on some inputs. RedNet multiplies each
feature map by a kernel computed from that map, so any gap between a sample's statistics and the
running ones compounds from block to block. The first bundled demo, trained 1,500 steps, reached
|coefficient| 1e5-1e6 on 3 of 64 held-out triplets with its running statistics. With per-sample
statistics, measured on the same checkpoint, none of the 64 blew up, the largest |coefficient| was 2,
and the rotations still correlated 0.979 with the truth. In training, the layer is an ordinary
BatchNorm2d.

Why in training too: the same amplification makes batch statistics useless for learning. Measured on
a tiny model after 250 steps, the per-sample RMS entering ``layer4.0.bn2`` ranged from 0.07 to 44 within
one batch of 8: the batch statistics are the outlier's, every other sample is squashed towards a
constant, and the supervised shape error did not fall below the mean face's in 350 steps. Normalising
each sample by its own statistics in training as well removes both the squashing and the train /
inference mismatch (``dfmvr-train --per-sample-norm``).

Which statistics: ``per_sample`` uses instance statistics (each channel of each sample over H x W).
That loses what a regressor needs: a block whose residual branch and shortcut both end in instance
norm has a per-channel spatial mean fixed by the affine bias, so after ReLU and global average pooling
the pooled feature carries almost nothing but the shape of each channel's distribution. The tiny
RedNet ends in exactly such a block on a 7 x 7 map. ``per_sample_layer`` normalises each sample over
all of C x H x W (group norm with one group, the batch norm's per-channel affine): still independent of
the batch and of the sample's overall scale, but the channels keep their relative means.

Enabled by the card: ``architecture["inference_norm"] = "per_sample"`` or ``"per_sample_layer"``
(``dfmvr convert half --sample-statistics`` sets ``per_sample``) for inference only;
``architecture["training_norm"]`` (with ``inference_norm``) for training too. It applies to every
batch norm except the frozen parse net's. Instance statistics export to ONNX as InstanceNormalization
with the batch norm's affine parameters, layer statistics as two-stage ReduceMeans and the affine
(``_layer_norm`` says why not GroupNorm). The running-statistics buffers stay (unused), so checkpoints
keep the batch-norm layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SampleStatisticsBatchNorm2d", "SampleNorm2d", "SampleLayerNorm2d", "use_sample_statistics",
           "INFERENCE_NORM_KEY", "TRAINING_NORM_KEY", "PER_SAMPLE", "PER_SAMPLE_LAYER", "SAMPLE_STATISTICS",
           "NORM_CHOICES"]

INFERENCE_NORM_KEY = "inference_norm"
TRAINING_NORM_KEY = "training_norm"
PER_SAMPLE = "per_sample"               # instance statistics (per sample and channel)
PER_SAMPLE_LAYER = "per_sample_layer"   # layer statistics (per sample, over all channels)
NORM_CHOICES = {"instance": PER_SAMPLE, "layer": PER_SAMPLE_LAYER}   # dfmvr-train --per-sample-norm value -> card


class SampleStatisticsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d in training; instance statistics with the same affine parameters in eval mode.
    Same parameters and buffers, so checkpoints load unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return _instance_norm(self, x)


class SampleNorm2d(SampleStatisticsBatchNorm2d):
    """Instance statistics with the batch norm's affine parameters in training and in eval mode: a
    sample's output never depends on the rest of its batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _instance_norm(self, x)


class SampleLayerNorm2d(SampleNorm2d):
    """Layer statistics (each sample over C x H x W) with the batch norm's per-channel affine
    parameters, in training and in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_norm(self, x)


class _LayerStatisticsAtInference(SampleStatisticsBatchNorm2d):
    """BatchNorm2d in training; layer statistics in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return nn.BatchNorm2d.forward(self, x)
        return _layer_norm(self, x)


def _layer_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if not torch.onnx.is_in_onnx_export():
        return F.group_norm(x, 1, weight=bn.weight, bias=bn.bias, eps=bn.eps)
    # The exporter writes group_norm as one InstanceNormalization over C*H*W values, and ONNX Runtime's
    # CPU kernel sums them in float32: measured 2e-5 error on an 8 x 224 x 224 map (torch: 5e-7), which a
    # random tiny net amplified to 3.5e-4 on the coefficients, over the export tolerance. The same
    # function in two stages (per channel, then across channels; centred variance) stays at 2e-6.
    mean = x.mean(dim=(2, 3), keepdim=True).mean(dim=1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=(2, 3), keepdim=True).mean(dim=1, keepdim=True)
    scale = bn.weight[None, :, None, None] * torch.rsqrt(var + bn.eps)
    return centred * scale + bn.bias[None, :, None, None]


def _instance_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, weight=bn.weight, bias=bn.bias, use_input_stats=True, eps=bn.eps)


# card value -> (layer class at inference only, layer class in training too)
SAMPLE_STATISTICS = {PER_SAMPLE: (SampleStatisticsBatchNorm2d, SampleNorm2d),
                     PER_SAMPLE_LAYER: (_LayerStatisticsAtInference, SampleLayerNorm2d)}


def use_sample_statistics(model: nn.Module, skip: nn.Module | None = None, in_training: bool = False,
                          statistics: str = PER_SAMPLE) -> int:
    """Switch every batch norm of ``model`` (outside ``skip``) to per-sample ``statistics`` (a key of
    ``SAMPLE_STATISTICS``) at inference (and in training with ``in_training``). Returns how many layers
    were switched."""
    if statistics not in SAMPLE_STATISTICS:
        raise ValueError(f"unknown per-sample statistics '{statistics}'; known: {sorted(SAMPLE_STATISTICS)}")
    skipped = {id(m) for m in skip.modules()} if skip is not None else set()
    target = SAMPLE_STATISTICS[statistics][1 if in_training else 0]
    switchable = (nn.BatchNorm2d, *(cls for pair in SAMPLE_STATISTICS.values() for cls in pair))
    count = 0
    for module in model.modules():
        if type(module) in switchable and id(module) not in skipped:
            module.__class__ = target
            count += 1
    return count
