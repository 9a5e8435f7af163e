"""The photometric loss treats saturated photo values (0 or 255) as bounds on the rendered colour."""

import numpy as np
import pytest
import torch

from dfmvr.train.losses.photo import clip_to_saturation, photometric_loss


def test_clip_to_saturation_only_where_the_photo_saturates():
    target = torch.tensor([1.0, 1.0, 200 / 255, 0.0, 0.0, 1 / 255])
    rendered = torch.tensor([1.3, 0.9, 1.3, -0.2, 0.1, -0.2])
    got = clip_to_saturation(rendered, target)
    assert got.tolist() == pytest.approx([1.0, 0.9, 1.3, 0.0, 0.1, -0.2])


def _one_pixel(render_value, photo_value):
    rendered = torch.full((1, 1, 3, 1, 1), render_value, requires_grad=True)
    target = torch.full((1, 1, 3, 1, 1), photo_value)
    loss = photometric_loss(rendered, target, torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    loss.backward()
    return loss.item(), rendered.grad.abs().sum().item()


def test_overexposed_render_costs_nothing_over_a_saturated_pixel_only():
    loss, grad = _one_pixel(1.3, 1.0)                   # the photo says "1 or brighter": consistent
    assert loss == pytest.approx(0.0, abs=1e-4) and grad == 0.0
    loss, grad = _one_pixel(1.3, 200 / 255)             # not saturated: an error, with a gradient
    assert loss == pytest.approx(np.sqrt(3) * (1.3 - 200 / 255), rel=1e-5) and grad > 0
    loss, grad = _one_pixel(0.9, 1.0)                   # too dark under a saturated pixel: an error
    assert loss == pytest.approx(np.sqrt(3) * 0.1, rel=1e-4) and grad > 0
    loss, grad = _one_pixel(-0.2, 0.0)
    assert loss == pytest.approx(0.0, abs=1e-4) and grad == 0.0


def test_photo_loss_at_the_truth_is_8_bit_rounding_on_clean_triplets(face_model, one_torch_thread):
    """Noise- and blur-free synthetic triplets: at the true coefficients the photo term is the level
    of 8-bit rounding alone (triplets 5 and 6 of this seed render channels above 1; comparing the
    unclipped render with the photo gave 1.8x the rounding level there)."""
    from dfmvr.face.camera import Camera
    from dfmvr.synth.face_torch import FaceModelTorch
    from dfmvr.train.losses.photo import photo_weight_map
    from dfmvr.synth.render import render_mesh
    from dfmvr.synth.dataset import SynthConfig, TripletGenerator

    face = FaceModelTorch(face_model, Camera())
    gen = TripletGenerator(face_model, Camera(), SynthConfig(blur_sigma_max=0.0, noise_sigma_max=0.0), seed=23)
    for i in range(8):
        t = gen.sample(i)
        mesh = face(torch.from_numpy(t.gt["coefficients"])[None])
        r = render_mesh(mesh.vertices[0], face.triangles, face.camera, colors=mesh.colors[0])
        image = r.image.permute(0, 3, 1, 2)[None]                         # [1, 3, 3, H, W], unclipped
        photo = torch.from_numpy(t.images).permute(0, 3, 1, 2)[None].float() / 255.0
        cover, w = r.mask[None].float(), photo_weight_map(torch.from_numpy(t.gt["labels"].astype(np.int64))[None])
        rounding = photometric_loss(image.clamp(0, 1), torch.round(image.clamp(0, 1) * 255) / 255, cover, w)
        assert photometric_loss(image, photo, cover, w) == pytest.approx(rounding.item(), rel=1e-3), i
