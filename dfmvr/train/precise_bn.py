"""Batch-norm statistics recomputed for inference at the end of every epoch ("precise BN").

Why: during training the running statistics average batches that differ from inference (views
dropped to zeros by the single-view training, colour jitter and blur, weights moving at every step).
RedNet's involution multiplies a feature map by a kernel computed from that same map, so a running
variance off by a factor k scales a layer's output by about k, and the error compounds from block to
block: measured on the demo model after 250 steps, batch and running variances differed up to 4.6x
per layer and the eval-mode coefficients reached 1e11 while the train-mode ones were right. Recomputing
the statistics as exact averages over clean, all-view training batches removes the mismatch.

Deterministic (the first N triplets of the dataset, in order, no augmentation, no dropout), so every
DDP rank computes the same buffers. Training-mode forwards never read running statistics (checked),
so the recalibration cannot change a training step's logic; its extra forward passes do change which
CPU kernels later steps pick, so a resumed run matches an uninterrupted one to float rounding
(measured 3e-5 relative on the next-step loss), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["recalibrate_batch_norm"]


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute the running mean/var of ``model``'s batch-norm layers as the plain average over
    ``batches`` (network inputs). Layers that stay in eval mode under ``model.train()`` (a frozen
    sub-network, e.g. DFMVRNet's parse net) and per-sample layers (``SampleNorm2d``) are left alone. Returns the number of layers recalibrated
    (0 if ``batches`` was empty: then nothing changes). ``model`` is left in its previous mode."""
    was_training = model.training
    model.train()
    from ..models.sample_norm import SampleNorm2d   # per-sample in training too: no running statistics in use

    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
              and not isinstance(m, SampleNorm2d)]
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None              # cumulative moving average = the plain mean over the batches
    seen = 0
    try:
        for images in batches:
            model(images)
            seen += 1
    finally:
        for m, (momentum, mean, var, count) in saved.items():
            m.momentum = momentum
            if seen == 0:              # nothing ran: keep what was there
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
    return len(layers) if seen else 0
