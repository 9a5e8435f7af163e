"""Per-sample batch-norm statistics: instance or layer statistics, at inference or in training too."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pytest

from dfmvr.models.rednet import Bottleneck
from dfmvr.models.sample_norm import (INFERENCE_NORM_KEY, PER_SAMPLE, PER_SAMPLE_LAYER, TRAINING_NORM_KEY,
                                            SampleLayerNorm2d, SampleNorm2d, SampleStatisticsBatchNorm2d,
                                            use_sample_statistics)
from dfmvr.train.precise_bn import recalibrate_batch_norm
from dfmvr.models.variants import build_model, make_card


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


def test_layer_statistics_normalise_each_sample_over_all_channels_in_training_and_eval():
    torch.manual_seed(0)
    layer = SampleLayerNorm2d(4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None] + 2
    flat = x.flatten(1)
    mean, var = flat.mean(1), flat.var(1, unbiased=False)
    want = (x - mean[:, None, None, None]) / torch.sqrt(var + layer.eps)[:, None, None, None]
    want = want * layer.weight[:, None, None] + layer.bias[:, None, None]
    for mode in (True, False):
        layer.train(mode)
        torch.testing.assert_close(layer(x), want)
    with_outlier = torch.cat([x, 1000 * torch.randn(1, 4, 5, 6)])
    layer.train()
    torch.testing.assert_close(layer(with_outlier)[:3], layer(x))   # an outlier sample changes nothing else
    torch.testing.assert_close(layer(50 * x), layer(x), atol=1e-4, rtol=1e-4)   # nor the sample's own scale


@pytest.mark.parametrize("statistics, blind", [(PER_SAMPLE, True), (PER_SAMPLE_LAYER, False)])
def test_what_a_pooled_downsampling_block_can_see(statistics, blind):
    """Why layer statistics: the tiny RedNet ends in a downsampling block whose branches both end in
    a norm, then global average pooling. With instance statistics, inputs that differ only in their
    per-channel means (a constant offset per channel) pool to the same feature: the regressor cannot
    see them. Layer statistics keep the channels' relative means."""
    torch.manual_seed(0)
    block = Bottleneck(8, 16, stride=2, group_channels=4)
    use_sample_statistics(block, in_training=True, statistics=statistics)
    block.eval()
    x = torch.randn(1, 8, 14, 14)
    shifted = x + 3 * torch.randn(1, 8, 1, 1)
    pooled = lambda t: block(t).mean(dim=(2, 3))   # noqa: E731
    same = torch.allclose(pooled(x), pooled(shifted), atol=1e-5)
    assert same is blind


def test_the_card_chooses_the_statistics_and_rejects_unknown_ones():
    card = make_card("tiny")
    card.architecture[TRAINING_NORM_KEY] = card.architecture[INFERENCE_NORM_KEY] = PER_SAMPLE_LAYER
    model = build_model(card)
    parse = {id(m) for m in model.mask_model.modules()}
    outside = [type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in parse]
    assert outside and all(k is SampleLayerNorm2d for k in outside)
    card.architecture[TRAINING_NORM_KEY] = "per_pixel"
    with pytest.raises(ValueError, match="per_pixel"):
        build_model(card)

    # inference only: plain batch norm in training, layer statistics in eval mode
    card = make_card("tiny")
    card.architecture[INFERENCE_NORM_KEY] = PER_SAMPLE_LAYER
    layer = build_model(card).rednet_fc.rednet.layer1[0].bn2
    assert type(layer) is not SampleLayerNorm2d and isinstance(layer, nn.BatchNorm2d)
    x = torch.randn(2, layer.num_features, 5, 6) * 3 + 1
    layer.eval()
    torch.testing.assert_close(layer(x), F.group_norm(x, 1, layer.weight, layer.bias, layer.eps))
    layer.train()
    torch.testing.assert_close(layer(x), F.batch_norm(x, None, None, layer.weight, layer.bias, training=True))


def test_layer_statistics_export_matches_a_float64_reference_in_onnx_runtime(tmp_path):
    """The exported form (two-stage ReduceMeans, see ``_layer_norm``) against numpy in float64, on the
    largest map the tiny net normalises (8 x 224 x 224), with a mean offset that punishes float32 sums."""
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    layer = SampleLayerNorm2d(8).eval()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 8, 224, 224) * 2 + 5
    path = tmp_path / "layer_norm.onnx"
    torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=20,
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    x64 = x.numpy().astype(np.float64)
    mean = x64.mean(axis=(1, 2, 3), keepdims=True)
    var = x64.var(axis=(1, 2, 3), keepdims=True)
    w, b = (t.detach().numpy().astype(np.float64)[None, :, None, None] for t in (layer.weight, layer.bias))
    want = (x64 - mean) / np.sqrt(var + layer.eps) * w + b
    assert np.abs(got - want).max() < 5e-6                        # GroupNorm's export gave 2e-5 here
    np.testing.assert_allclose(layer(x).detach().numpy(), want, atol=5e-6)   # and PyTorch itself
