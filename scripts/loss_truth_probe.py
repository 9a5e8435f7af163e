"""Are the weak losses minimal at the truth? Loss terms on synthetic triplets at three points.

For each triplet (rendered in memory by ``TripletGenerator``, exact ground truth) the unweighted terms
of ``TrainingLoss`` (the default recipe plus PRDL and the 3D landmark term) are evaluated at
    truth        the true coefficients
    id0          the truth with identity zeroed
    mean         the truth with identity, expression and texture zeroed (pose and light kept)
and, for the photometric term, the level of 8-bit rounding alone: the loss between the clipped
render of the truth and that render rounded to 1/255 (same weight map and coverage); at id0 and
mean, the gradient norms (identity + expression) of the 2D and 3D landmark terms at their weights.

    python scripts/loss_truth_probe.py --triplets 8 --seed 23 [--clean] [--json out.json]

--clean renders without blur and noise (then the photo term at the truth is clipping and rounding).
One torch thread. Prints one line per triplet and the means; writes a JSON record when asked.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from dfmvr.face.camera import Camera
from dfmvr.face.layout import COEFFS
from dfmvr.face.synthetic import default_face_model
from dfmvr.synth.face_torch import FaceModelTorch
from dfmvr.train.losses.photo import photo_weight_map, photometric_loss
from dfmvr.train.losses.prdl import PRDLConfig
from dfmvr.train.losses.total import LossWeights, TrainingLoss
from dfmvr.synth.render import render_mesh
from dfmvr.synth.dataset import SynthConfig, TripletGenerator


def batch_of(triplet) -> dict:
    t = lambda a: torch.from_numpy(np.asarray(a))[None]          # noqa: E731
    return {"photos": t(triplet.images).permute(0, 1, 4, 2, 3).float() / 255.0,
            "labels": t(triplet.gt["labels"].astype(np.int64)),
            "landmarks": t(triplet.gt["landmarks"]), "landmark_visible": t(triplet.gt["landmarks_visible"]),
            "landmarks_3d": t(triplet.gt["landmarks3d"]), "gt_coefficients": t(triplet.gt["coefficients"])}


def variants(gt: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"truth": gt}
    for name, keys in (("id0", ("identity",)), ("mean", ("identity", "expression", "texture"))):
        c = gt.clone()
        for k in keys:
            c[:, COEFFS.shared_slices()[k]] = 0.0
        out[name] = c
    return out


def rounding_level(face: FaceModelTorch, gt: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(photo loss of the clipped true render against itself rounded to 8 bits, fraction of covered
    pixels with a rendered channel outside [0, 1])."""
    mesh = face(gt)
    n = mesh.vertices.shape[2]
    r = render_mesh(mesh.vertices.reshape(3, n, 3), face.triangles, face.camera, colors=mesh.colors.reshape(3, n, 3))
    image = r.image.clamp(0, 1).reshape(1, 3, 224, 224, 3).permute(0, 1, 4, 2, 3)
    rounded = torch.round(image * 255.0) / 255.0
    level = photometric_loss(image, rounded, r.mask.reshape(1, 3, 224, 224).float(), photo_weight_map(labels))
    outside = ((r.image < 0) | (r.image > 1)).any(-1)[r.mask].float().mean()
    return float(level), float(outside)


def landmark_gradients(face: FaceModelTorch, coeffs: torch.Tensor, batch: dict) -> tuple[float, float]:
    """Norms of the gradients w.r.t. identity and expression of 0.02 x the 2D landmark term and of
    1.0 x the 3D one (their default / official weights)."""
    off = dict(photo=0.0, landmark_2d=0.0, landmark_3d=0.0, coefficient_reg=0.0, gamma=0.0, reflectance=0.0)
    sl = COEFFS.shared_slices()
    out = []
    for name, weight in (("landmark_2d", 0.02), ("landmark_3d", 1.0)):
        c = coeffs.clone().requires_grad_(True)
        TrainingLoss(face, LossWeights(**dict(off, **{name: weight})))(c, batch)[0].backward()
        out.append(float(torch.cat([c.grad[:, sl["identity"]], c.grad[:, sl["expression"]]], 1).norm()))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triplets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--clean", action="store_true", help="no blur, no noise")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = default_face_model()
    face = FaceModelTorch(model, Camera())
    synth = SynthConfig(blur_sigma_max=0.0, noise_sigma_max=0.0) if args.clean else SynthConfig()
    gen = TripletGenerator(model, Camera(), synth, seed=args.seed)
    # The default recipe plus PRDL at 3DDFA-V3's weight, and the 3D landmark term at the official
    # weight 1 (off by default) so that it is reported.
    weights = LossWeights(prdl=8e-4, landmark_3d=1.0)
    full = TrainingLoss(face, weights)
    skin = TrainingLoss(face, replace(weights, prdl_config=dict(PRDLConfig().to_dict(), parts=[1])))
    rows = []
    for i in range(args.triplets):
        batch = batch_of(gen.sample(i))
        level, outside = rounding_level(face, batch["gt_coefficients"], batch["labels"])
        row = {"triplet": i, "photo_rounding": level, "render_outside_01": outside}
        for name, coeffs in variants(batch["gt_coefficients"]).items():
            with torch.no_grad():
                torch.manual_seed(0)                 # PRDL's random subset of each point set
                total, terms = full(coeffs, batch)
                torch.manual_seed(0)
                _, skin_terms = skin(coeffs, batch)
            row[name] = {k: float(v) for k, v in terms.items()}
            row[name]["prdl_skin"] = float(skin_terms["prdl"])
            row[name]["total"] = float(total)
            if name != "truth":
                g2, g3 = landmark_gradients(face, coeffs, batch)
                row[name]["grad_ratio_lm2d_lm3d"] = g2 / g3
        rows.append(row)
        print(f"{i}: prdl truth {row['truth']['prdl']:.3f} (skin {row['truth']['prdl_skin']:.3f}) "
              f"id0 {row['id0']['prdl']:.3f} mean {row['mean']['prdl']:.3f} | "
              f"photo truth {row['truth']['photo']:.5f} id0 {row['id0']['photo']:.5f} "
              f"rounding {row['photo_rounding']:.5f} (outside [0,1] {outside:.1%}) | "
              f"lm2d id0 {row['id0']['landmark_2d']:.3f} lm3d id0 {row['id0']['landmark_3d']:.3e}", flush=True)
    means = {}
    for name in ("truth", "id0", "mean"):
        means[name] = {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]}
    for name in ("id0", "mean"):
        ratios = [r[name]["grad_ratio_lm2d_lm3d"] for r in rows]
        print(f"{name}: |grad 0.02*lm2d| / |grad 1.0*lm3d| (identity+expression) {min(ratios):.0f}-{max(ratios):.0f}")
    means["photo_rounding"] = float(np.mean([r["photo_rounding"] for r in rows]))
    prefers_truth = sum(r["truth"]["prdl"] < r["id0"]["prdl"] for r in rows)
    print("mean:", json.dumps(means, indent=1))
    print(f"PRDL lower at the truth than at id0 on {prefers_truth}/{len(rows)} triplets")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "means": means}, f, indent=1)


if __name__ == "__main__":
    main()
