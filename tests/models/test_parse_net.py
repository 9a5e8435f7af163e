"""BiSeNet parse net: outputs, the 19 -> 10 class merge, and loading both public weight files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfmvr.errors import InputError
from dfmvr.face.layout import PARSE_CLASSES
from dfmvr.models.convert import attach_parse_net, load_parse_net
from dfmvr.models.parse_net import (CELEBAMASK_CLASSES, CELEBAMASK_TO_PARSE, BiSeNet,
                                          celebamask_class_map)
from dfmvr.models.variants import _tiny, build_model

TINY_PARSE = {k: v for k, v in _tiny()["parse"].items() if k not in ("num_classes", "class_map")}


def test_outputs_in_eval_and_train_modes():
    net = BiSeNet(num_classes=7, **TINY_PARSE)
    x = torch.randn(2, 3, 64, 96)
    net.train()
    main, out16, out32 = net(x)
    assert main.shape == out16.shape == out32.shape == (2, 7, 64, 96)
    net.eval()
    with torch.no_grad():
        main = net(x)
        labels = net.labels(x)
    assert main.shape == (2, 7, 64, 96)
    # each label is a most probable class (ties may resolve either way on another CPU's kernels)
    torch.testing.assert_close(main.gather(1, labels.unsqueeze(1)).squeeze(1), main.max(dim=1).values,
                               rtol=0, atol=0)
    assert labels.dtype == torch.int64 and float((labels == main.argmax(dim=1)).float().mean()) > 0.999


def test_detail_head_classifies_from_the_quarter_resolution_map():
    """--parse-detail: the main output comes from the trunk's 1/4 map (DetailHead), the official 1/8
    classifier stays as a fourth, auxiliary output; 0 keeps the official topology and its keys."""
    torch.manual_seed(0)
    plain = BiSeNet(num_classes=7, **TINY_PARSE)
    fine = BiSeNet(num_classes=7, **TINY_PARSE, detail_channels=12)
    assert not any(k.startswith("detail.") for k in plain.state_dict())
    assert set(plain.state_dict()) < set(fine.state_dict())
    x = torch.randn(2, 3, 64, 96)
    fine.train()
    outs = fine(x)
    assert len(outs) == 4 and all(o.shape == (2, 7, 64, 96) for o in outs)
    fine.eval()
    calls = []
    hook = fine.conv_out.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        main = fine(x)
    hook.remove()
    assert not calls                                               # inference skips the 1/8 classifier
    with torch.no_grad():
        feat4, feat8, cp8, _ = fine.cp(x)
        fused = fine.ffm(feat8, cp8)
        detail = fine.detail(feat4, fused)
        coarse = F.interpolate(fine.conv_out(fused), size=(64, 96), mode="bilinear", align_corners=True)
    assert feat4.shape[2:] == detail.shape[2:] == (16, 24)         # logits at 1/4, not 1/8
    torch.testing.assert_close(main, F.interpolate(detail, size=(64, 96), mode="bilinear", align_corners=True))
    assert (main - coarse).abs().max() > 1e-2                      # not the 1/8 classifier's output


def test_detail_head_exports_to_onnx_with_parity(tmp_path):
    """The parser sits inside the exported graph: the detail head must export (standard ops) and match."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = BiSeNet(**TINY_PARSE, detail_channels=12).eval()
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "parse.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"], output_names=["logits"])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_celebamask_mapping_covers_every_class_and_keeps_face_parts():
    table = celebamask_class_map()
    assert len(table) == 19 and set(CELEBAMASK_TO_PARSE) == set(CELEBAMASK_CLASSES)
    named = {src: PARSE_CLASSES[dst] for src, dst in zip(CELEBAMASK_CLASSES, table)}
    assert named["nose"] == "nose" and named["u_lip"] == "upper_lip" and named["l_lip"] == "lower_lip"
    assert named["l_eye"] == "left_eye" and named["r_brow"] == "right_brow" and named["mouth"] == "mouth"
    assert named["hair"] == named["neck"] == named["l_ear"] == "background"
    assert named["eye_g"] == "skin"


def test_class_merge_sums_probabilities_of_merged_classes():
    torch.manual_seed(0)
    net = BiSeNet(num_classes=19, class_map=celebamask_class_map(), **TINY_PARSE)
    logits = torch.randn(2, 19, 5, 6)
    merged = net._merge(logits).exp().numpy()
    probs = logits.softmax(dim=1).numpy()
    want = np.zeros((2, 10, 5, 6), np.float32)
    for src, dst in enumerate(celebamask_class_map()):
        want[:, dst] += probs[:, src]
    np.testing.assert_allclose(merged, want, rtol=1e-5, atol=1e-6)


def test_load_face_parsing_19_class_weights(tmp_path):
    torch.manual_seed(1)
    source = BiSeNet(num_classes=19).eval()
    path = tmp_path / "79999_iter.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)   # DDP-style keys
    net = load_parse_net(path)
    assert net.num_outputs == 10 and not net.training
    loaded = net.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        low19 = source.conv_out(source.ffm(*source.cp(x)[1:3]))      # [1, 19, 8, 8] before upsampling
        want = F.interpolate(torch.log(torch.einsum("bchw,tc->bthw", low19.softmax(1), net.class_merge)),
                             size=(64, 64), mode="bilinear", align_corners=True)
    assert out.shape == (1, 10, 64, 64)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_load_face_mask_10_class_weights_and_attach(tmp_path):
    torch.manual_seed(2)
    source = BiSeNet().eval()
    path = tmp_path / "face_mask.pth"
    # explicit zip format: in the full suite this load once failed as if a legacy file had been written
    torch.save(source.state_dict(), path, _use_new_zipfile_serialization=True)
    net = load_parse_net(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), source(x))
    model = build_model("paper")
    attach_parse_net(model, path)
    with torch.no_grad():
        torch.testing.assert_close(model.parse_net(x), source(x))
    assert model.card.provenance["parse_net"] == "face_mask.pth"
    with pytest.raises(InputError, match="widths"):
        attach_parse_net(build_model("tiny"), path)


def test_wrong_parse_files_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv_out.conv_out.weight": torch.zeros(5, 256, 1, 1)}, bad)
    with pytest.raises(InputError, match="5 classes"):
        load_parse_net(bad)
    partial = tmp_path / "partial.pth"
    sd = BiSeNet().state_dict()
    sd.pop("cp.arm16.conv_atten.weight")
    torch.save(sd, partial)
    with pytest.raises(InputError, match="missing keys 1: cp.arm16.conv_atten.weight"):
        load_parse_net(partial)
