"""Mesh assembly micro-benchmark: numpy reference vs torch mirror vs CUDA kernel (numbers, not tests).

    python -m benchmarks.bench_mesh [--vertices 35709] [--batch 1,4,16] [--repeats 5]

Coefficients [B, 269] -> shape, albedo, normals, per-view posed vertices, SH colours and landmarks for a
synthetic face model of BFM's size (~35.7k vertices; BFM itself cannot be downloaded here):
- ``numpy``  ``dfmvr.face.geometry.assemble_mesh`` (the reference);
- ``numpy_runtime``  ``dfmvr.runtime.assembly.CpuMeshAssembler`` (what the CPU runtime runs: bases laid
             out once, sparse adjacency), when that module exists;
- ``torch``  ``dfmvr.synth.face_torch.FaceModelTorch`` on CPU, no grad (the training mirror);
- ``cuda``   ``dfmvr.kernels.mesh_gpu.CudaMeshAssembler``, only where a CUDA GPU exists (not here).
torch and CUDA outputs are checked against numpy (max abs vertex diff). Writes
benchmarks/results/bench_mesh.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import REPO
from dfmvr.atomic import atomic_write_text
from dfmvr.bench.environment import _gpu, environment_stamp
from dfmvr.bench.stats import summarize, time_calls
from dfmvr.face.camera import Camera
from dfmvr.face.geometry import assemble_mesh
from dfmvr.face.layout import COEFFS, VIEW_YAW_DEG
from dfmvr.face.synthetic import synthetic_face_model
from dfmvr.synth.face_torch import FaceModelTorch


def coefficients(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = COEFFS.split(np.clip(rng.normal(0, 1, (batch, COEFFS.size)), -2.5, 2.5).astype(np.float32))
    c.lighting[:] *= 0.1
    c.rotation[:] = np.radians(np.array(VIEW_YAW_DEG, np.float32))[None, :, None] * np.array([0, 1, 0], np.float32)
    return c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", type=int, default=35709)
    ap.add_argument("--batch", default="1,4,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_mesh.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cam = synthetic_face_model(num_vertices=args.vertices), Camera()
    tmodel = FaceModelTorch(model, cam).eval()
    gpu = _gpu()
    cuda = None
    if gpu:   # pragma: no cover - no GPU here
        from dfmvr.kernels.mesh_gpu import CudaMeshAssembler
        cuda = CudaMeshAssembler(model, cam)
    try:
        from dfmvr.runtime.assembly import CpuMeshAssembler
        cpu = CpuMeshAssembler(model, cam)
    except ImportError:
        cpu = None
    rows, load_before = [], os.getloadavg()[0]
    for b in [int(v) for v in args.batch.split(",")]:
        c = coefficients(b)
        flat = torch.from_numpy(COEFFS.join(c))
        ref = assemble_mesh(model, c, cam)

        def torch_run():
            with torch.inference_mode():
                return tmodel(flat)
        row = {"batch": b, "vertices": model.num_vertices, "triangles": model.num_triangles,
               "numpy_ms": summarize(time_calls(lambda: assemble_mesh(model, c, cam), args.repeats, 1))["median_ms"],
               "torch_ms": summarize(time_calls(torch_run, args.repeats, 1))["median_ms"],
               "torch_max_abs_diff": float(np.abs(torch_run().vertices.numpy() - ref.vertices).max())}
        if cpu is not None:
            row["numpy_runtime_ms"] = summarize(time_calls(lambda: cpu.assemble(c), args.repeats, 1))["median_ms"]
            row["numpy_runtime_max_abs_diff"] = float(np.abs(cpu.assemble(c).vertices - ref.vertices).max())
        if cuda is not None:   # pragma: no cover
            row["cuda_ms"] = summarize(time_calls(lambda: cuda.assemble(c), args.repeats, 1))["median_ms"]
            row["cuda_max_abs_diff"] = float(np.abs(cuda.assemble(c).vertices - ref.vertices).max())
        rows.append(row)
        print(row, flush=True)
    result = {"benchmark": "mesh assembly: numpy reference vs runtime CPU assembler vs torch (CPU) vs CUDA", "repeats": args.repeats,
              "threads": args.threads, "rows": rows,
              "cuda": "measured on " + gpu if gpu else "not measured: no CUDA GPU on this machine",
              "environment": environment_stamp(args.threads),
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
