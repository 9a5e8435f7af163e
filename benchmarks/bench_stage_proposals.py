"""Before/after of two proposed CPU-stage changes outside the network (numbers, not tests).

    python -m benchmarks.bench_stage_proposals [--repeats 15]

- normalise (``dfmvr.runtime.pipeline.Pipeline.normalise``): "before" = the shipped 256-entry LUT
  gather on [B, V, S, S, 3] then a float32 transpose copy to [B, V, 3, S, S]; "after" = transpose the
  uint8 crops first (1 byte per value), convert once and scale/shift in place. Max abs difference
  recorded (float rounding only).
- overlay PNG encoding (``dfmvr.runtime.overlay.write_overlay``): "before" = ``IMWRITE_PNG_COMPRESSION=1``,
  "after" = OpenCV's default PNG settings; on the real overlay size (3 views x 512 px), file sizes recorded.
Candidates are interleaved round-robin. Writes benchmarks/results/bench_stage_proposals.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import REPO
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp
from dfmvr.bench.inputs import painted_crops
from dfmvr.face.camera import DEEP3D_CAMERA
from dfmvr.face.synthetic import default_face_model

MEAN, STD = 0.5, 0.5


def interleaved(cands: dict, repeats: int) -> dict:
    for f in cands.values():
        f()
    times = {k: [] for k in cands}
    for _ in range(repeats):
        for k, f in cands.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_stage_proposals.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    lut = ((np.arange(256, dtype=np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)
    scale, shift = np.float32(1.0 / (255.0 * STD)), np.float32(MEAN / STD)
    face = painted_crops(default_face_model(), DEEP3D_CAMERA)              # [3, 224, 224, 3]
    normalise = []
    for b in (1, 4, 16):
        crops = np.ascontiguousarray(np.broadcast_to(face, (b,) + face.shape))

        def before():
            return np.ascontiguousarray(lut[crops].transpose(0, 1, 4, 2, 3))

        def after():
            x = np.ascontiguousarray(crops.transpose(0, 1, 4, 2, 3)).astype(np.float32)
            x *= scale
            x -= shift
            return x
        ms = interleaved({"before": before, "after": after}, args.repeats)
        normalise.append({"batch": b, "before_ms": ms["before"], "after_ms": ms["after"],
                          "speedup": ms["before"] / ms["after"],
                          "max_abs_diff": float(np.abs(before() - after()).max())})
        print("normalise", normalise[-1], flush=True)
    image = np.ascontiguousarray(np.concatenate([cv2.resize(c, (512, 512)) for c in face], axis=1))
    sizes = {}

    def enc(name, params):
        def run():
            ok, buf = cv2.imencode(".png", image[:, :, ::-1], params)
            sizes[name] = int(buf.size)
        return run
    ms = interleaved({"before": enc("before", [cv2.IMWRITE_PNG_COMPRESSION, 1]), "after": enc("after", [])},
                     args.repeats)
    png = {"image": list(image.shape), "before_ms": ms["before"], "after_ms": ms["after"],
           "speedup": ms["before"] / ms["after"], "before_bytes": sizes["before"], "after_bytes": sizes["after"]}
    print("png", png)
    result = {"benchmark": "CPU stage proposals: normalise and overlay PNG encoding, before/after",
              "repeats": args.repeats, "normalise": normalise, "overlay_png": png,
              "environment": environment_stamp(None),
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
