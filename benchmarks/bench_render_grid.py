"""Renderer micro-benchmark over triangles x batch (3 views each), reusing benchmarks/bench_render.py.

    python -m benchmarks.bench_render_grid [--vertices 1500,5100,18000] [--batch 1,4] [--repeats 3]

Each cell calls ``bench_render.bench_render(batch, vertices, repeats)`` (the renderer engineer's
benchmark: rasterize only, render_mesh forward, rasterize + interpolate forward and backward, at
1 thread and at torch's default thread count) and records triangles, images (= batch x 3 views) and
seconds per image. Writes benchmarks/results/bench_render_grid.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks._common import RESULTS
from benchmarks.bench_render import _machine, bench_render
from dfmvr.atomic import atomic_write_text


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", default="1500,5100,18000")
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "bench_render_grid.json"))
    args = ap.parse_args(argv)
    cells, load_before = [], os.getloadavg()[0]
    for v in [int(x) for x in args.vertices.split(",")]:
        for b in [int(x) for x in args.batch.split(",")]:
            r = bench_render(b, v, args.repeats)
            for key, val in list(r.items()):
                if key.startswith("threads_"):
                    val["render_mesh_forward_ms_per_image"] = 1e3 * val["render_mesh_forward_s"] / r["images"]
            cells.append(r)
            print({k: r[k] for k in ("batch", "images", "triangles")},
                  {k: round(1e3 * x["render_mesh_forward_s"], 1) for k, x in r.items() if k.startswith("threads_")},
                  flush=True)
    result = {"benchmark": "renderer grid: triangles x views x batch (pure torch, CPU)", "cells": cells,
              "machine": _machine(), "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
