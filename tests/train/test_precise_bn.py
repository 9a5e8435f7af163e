"""End-of-epoch batch-norm recalibration: exact averages over the given batches, frozen parts untouched."""

from __future__ import annotations

import torch
from torch import nn

from dfmvr.train.precise_bn import recalibrate_batch_norm


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.frozen = nn.BatchNorm2d(4)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()          # like DFMVRNet's parse net: always eval
        return self

    def forward(self, x):
        return self.frozen(self.bn(self.conv(x)))


def test_statistics_become_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    net = _Net().eval()
    net.bn.running_mean.fill_(5.0)
    net.frozen.running_var.fill_(3.0)
    batches = [torch.randn(4, 3, 8, 8) * (1 + i) + i for i in range(3)]
    assert recalibrate_batch_norm(net, batches) == 1
    with torch.no_grad():
        feats = [net.conv(b) for b in batches]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, want_mean)
    torch.testing.assert_close(net.bn.running_var, want_var)
    assert net.bn.momentum == 0.1 and not net.training            # settings and mode restored
    assert torch.equal(net.frozen.running_var, torch.full((4,), 3.0))   # the frozen layer is untouched


def test_no_batches_changes_nothing():
    net = _Net().train()
    net.bn.running_mean.fill_(2.0)
    assert recalibrate_batch_norm(net, []) == 0
    assert torch.equal(net.bn.running_mean, torch.full((4,), 2.0)) and net.training
