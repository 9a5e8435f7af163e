"""Benchmark the pure-torch rasterizer and the synthetic dataset generator (numbers, not tests).

    python -m benchmarks.bench_render                 # render: 3 views x batch 8 at 224^2, ~10k triangles
    python -m benchmarks.bench_render --synth 100     # synth: 100 triplets, extrapolated to 1000

Writes benchmarks/results/render.json or benchmarks/results/synth.json. The machine's load average
is recorded beside the numbers: development machines are shared, so compare runs with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import REPO
from dfmvr.atomic import atomic_write_text
from dfmvr.face import geometry
from dfmvr.face.camera import Camera
from dfmvr.face.layout import COEFFS, VIEW_YAW_DEG
from dfmvr.face.synthetic import default_face_model, synthetic_face_model
from dfmvr.synth.render import interpolate, rasterize, render_mesh
from dfmvr.synth.face_torch import project_with_depth

RESULTS = REPO / "benchmarks" / "results"


def _machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "processor": platform.processor() or platform.machine()}


def _median_time(fn, repeats: int) -> float:
    fn()                                       # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_render(batch: int, vertices: int, repeats: int) -> dict:
    model = synthetic_face_model(num_vertices=vertices)
    rng = np.random.default_rng(0)
    c = COEFFS.split(np.clip(rng.normal(0, 1, (batch, COEFFS.size)), -2.5, 2.5).astype(np.float32))
    c.lighting[:] *= 0.1
    c.rotation[:] = np.radians(np.array(VIEW_YAW_DEG))[None, :, None] * np.array([0, 1, 0])
    c.translation[:] = np.array([0.0, 0.0, -1.3])
    mesh = geometry.assemble_mesh(model, c, Camera())
    verts = torch.from_numpy(mesh.vertices.reshape(-1, model.num_vertices, 3))     # [B*V, N, 3]
    colors = torch.from_numpy(mesh.colors.reshape(-1, model.num_vertices, 3))
    tris = torch.from_numpy(model.triangles.astype(np.int64))
    parts = torch.from_numpy(model.parts.astype(np.int64))
    cam = Camera()

    def raster_only():
        with torch.no_grad():
            rasterize(project_with_depth(verts, cam), tris, 224)

    def render_forward():
        with torch.no_grad():
            render_mesh(verts, tris, cam, colors=colors, parts=parts)

    def forward_backward():
        v = verts.clone().requires_grad_(True)
        col = colors.clone().requires_grad_(True)
        r = rasterize(project_with_depth(v, cam), tris, 224)
        interpolate(col, r, tris).square().mean().backward()

    out = {"images": int(verts.shape[0]), "views": 3, "batch": batch, "size": 224,
           "triangles": model.num_triangles, "vertices": model.num_vertices,
           "covered_fraction": float(rasterize(project_with_depth(verts, cam), tris, 224).mask.float().mean())}
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        out[f"threads_{n}"] = {
            "rasterize_s": _median_time(raster_only, repeats),
            "render_mesh_forward_s": _median_time(render_forward, repeats),
            "rasterize_interpolate_forward_backward_s": _median_time(forward_backward, repeats),
        }
    torch.set_num_threads(threads)
    return out


def bench_synth(triplets: int) -> dict:
    from dfmvr.synth.dataset import write_dataset

    model = default_face_model()
    with tempfile.TemporaryDirectory() as tmp:
        report = write_dataset(Path(tmp) / "ds", triplets, seed=0, model=model, progress=True)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file() and p.parent.name != "ds")
    per = report.seconds / max(report.written, 1)
    return {"triplets": report.written, "seconds": report.seconds, "seconds_per_triplet": per,
            "extrapolated_1000_triplets_minutes": per * 1000 / 60.0,
            "bytes_per_triplet": size / max(report.written, 1), "face_model": model.identity()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", type=int, default=0, help="benchmark the generator on N triplets")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vertices", type=int, default=5100, help="synthetic model size (~2x triangles)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.synth:
        result, name = bench_synth(args.synth), "synth.json"
    else:
        result, name = bench_render(args.batch, args.vertices, args.repeats), "render.json"
    result = {"benchmark": name[:-5], "command": " ".join(["python"] + sys.argv),
              "machine": _machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
    atomic_write_text(RESULTS / name, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
