"""The overlay painter: vectorised coverage against the per-triangle OpenCV fill it replaced.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_painter [--repeats 30] [--json benchmarks/results/painter.json]

``dfmvr.face.paint.paint_mesh`` on one 512 px panel (the overlay's height) of the synthetic face
model's mean face, frontal, at two sizes: the bundled model's (3,105 vertices, 5,995 triangles) and
BFM's (~37k vertices, ~74k triangles; BFM itself cannot be downloaded here), each with every triangle
and with the overlay's simplification (``overlay_triangles``). Candidates, timed round-robin in one run:
``vectorised`` (``dfmvr.face.raster.nearest_triangle_image``, what ships) and ``opencv_fill`` (one
``cv2.fillConvexPoly`` per triangle, ``nearest_triangle_image_opencv``: the method before); everything
else in ``paint_mesh`` is shared. Also the share of pixels whose colour differs by more than 30 levels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from benchmarks._common import RESULTS, painter_coverage
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import environment_stamp

PANEL = 512


def _painter(method: str):
    from dfmvr.face import paint

    def run(*args, **kwargs):
        with painter_coverage(method):
            return paint.paint_mesh(*args, **kwargs)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", default=str(RESULTS / "painter.json"))
    args = ap.parse_args(argv)

    from dfmvr.face.camera import Camera, project
    from dfmvr.face.synthetic import synthetic_face_model
    from dfmvr.runtime.overlay import overlay_triangles

    candidates = {name: _painter(name) for name in ("vectorised", "opencv_fill")}
    report = {"benchmark": "overlay painter, one 512 px panel: vectorised coverage vs per-triangle OpenCV fill",
              "command": "OMP_NUM_THREADS=1 python -m benchmarks.bench_painter "
                         + " ".join(argv if argv is not None else sys.argv[1:]),
              "load_average_1min_before": round(os.getloadavg()[0], 2), "repeats": args.repeats,
              "environment": environment_stamp(1), "cases": {}}
    camera = Camera(image_size=PANEL, focal=Camera().focal * PANEL / 224)
    image = np.full((PANEL, PANEL, 3), 100, np.uint8)
    for label, vertices in (("bundled_size", 3000), ("bfm_size", 36000)):
        model = synthetic_face_model(0, num_vertices=vertices)
        verts = model.mean_shape
        pixels, depth = project(verts, camera), camera.distance - verts[:, 2]
        for which, tris in (("all", model.triangles), ("simplified", overlay_triangles(verts, model.triangles))):
            call = {n: (lambda f=f: f(image, pixels, depth, tris, model.mean_albedo)) for n, f in candidates.items()}
            times = {n: [] for n in call}
            for f in call.values():
                f()
            for _ in range(args.repeats):
                for n, f in call.items():
                    t0 = time.perf_counter()
                    f()
                    times[n].append((time.perf_counter() - t0) * 1e3)
            med = {n: round(statistics.median(t), 2) for n, t in times.items()}
            diff = np.abs(call["vectorised"]().astype(int) - call["opencv_fill"]().astype(int)).max(axis=2)
            case = {"vertices": int(len(verts)), "triangles": int(len(tris)), "median_ms": med,
                    "speedup": round(med["opencv_fill"] / med["vectorised"], 2),
                    "pixels_differing_over_30_levels": round(float((diff > 30).mean()), 4)}
            report["cases"][f"{label}/{which}"] = case
            print(f"{label}/{which}: {case}", flush=True)
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    atomic_write_text(args.json, json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
