"""Per-sample batch-norm statistics at inference (the bundled demo's fix for eval-mode blow-ups)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfmvr.train.models.sample_norm import (INFERENCE_NORM_KEY, PER_SAMPLE, TRAINING_NORM_KEY, SampleNorm2d,
                                            SampleStatisticsBatchNorm2d)
from dfmvr.train.precise_bn import recalibrate_batch_norm
from dfmvr.train.models.variants import build_model, make_card


def test_eval_uses_each_samples_statistics_and_training_is_plain_batch_norm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.uniform_(-1.0, 1.0)
        plain.running_mean.fill_(100.0)                         # deliberately wrong running statistics
    layer = SampleStatisticsBatchNorm2d(4)
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(3, 4, 5, 6) * 3 + 1
    layer.eval()
    want = F.instance_norm(x, eps=layer.eps) * layer.weight[:, None, None] + layer.bias[:, None, None]
    torch.testing.assert_close(layer(x), want)
    torch.testing.assert_close(layer(x[1:2]), want[1:2])        # a sample's output ignores the batch
    plain.train(), layer.train()
    torch.testing.assert_close(layer(x), plain(x))


def test_the_card_switches_every_batch_norm_except_the_frozen_parse_nets():
    card = make_card("tiny")
    card.architecture[INFERENCE_NORM_KEY] = PER_SAMPLE
    model = build_model(card)
    parse = {id(m) for m in model.mask_model.modules()}
    kinds = [(id(m) in parse, type(m)) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(k is nn.BatchNorm2d for inside, k in kinds if inside)
    outside = [k for inside, k in kinds if not inside]
    assert outside and all(k is SampleStatisticsBatchNorm2d for k in outside)
    assert not any(type(m) is SampleStatisticsBatchNorm2d for m in build_model("tiny").modules())


def test_training_norm_is_per_sample_in_training_too():
    """With ``training_norm`` a sample's training output ignores its batch: an outlier sample (the
    involution nets' failure, see sample_norm.py) no longer squashes the others."""
    torch.manual_seed(0)
    layer = SampleNorm2d(4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = torch.randn(3, 4, 5, 6)
    with_outlier = torch.cat([x, 1000 * torch.randn(1, 4, 5, 6)])
    layer.train()
    torch.testing.assert_close(layer(with_outlier)[:3], layer(x))
    plain = nn.BatchNorm2d(4).train()                    # control: batch statistics do depend on the outlier
    assert not torch.allclose(plain(with_outlier)[:3], plain(x), atol=1e-3)

    card = make_card("tiny")
    card.architecture[TRAINING_NORM_KEY] = PER_SAMPLE
    model = build_model(card)
    parse = {id(m) for m in model.mask_model.modules()}
    outside = [type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in parse]
    assert outside and all(k is SampleNorm2d for k in outside)
    # nothing left for the end-of-epoch recalibration: it must not touch the unused running buffers
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    recalibrate_batch_norm(model.rednet_fc, [torch.randn(1, model.uuunet.out_features, 64, 64)])
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k.startswith("rednet_fc"))
