"""Launch configurations for dfmvr's kernels, as plain functions (no CUDA import; unit-tested).

Every kernel uses a 1-D grid-stride loop over its work items, so any grid is correct; these
functions pick the grid that gives each thread one item (capped at ``max_blocks``), check the
limits (block size <= the kernels' ``__launch_bounds__(256)``, a multiple of the 32-thread warp;
grid x <= 2^31 - 1) and name the tail (threads past the last item, which exit the loop at once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WARP", "MAX_BLOCK", "MAX_GRID_X", "LaunchConfig", "ceil_div", "grid_stride_launch",
           "grid_stride_coverage", "INVOLUTION_KERNEL_SIZES", "involution_kernel_name", "involution_work_items",
           "involution_launch", "mesh_launches"]

WARP = 32
MAX_BLOCK = 256              # __launch_bounds__(256) on every dfmvr kernel
MAX_GRID_X = 2 ** 31 - 1     # CUDA limit on gridDim.x
INVOLUTION_KERNEL_SIZES = (3, 7)
_DTYPE_SUFFIX = {"float32": "f32", "float16": "f16"}


@dataclass(frozen=True)
class LaunchConfig:
    """grid and block (x, y, z), dynamic shared memory bytes, and the work items they cover."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int = 0
    items: int = 0
    threads_per_item: int = 1

    @property
    def threads(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2] * self.block[0] * self.block[1] * self.block[2]

    @property
    def empty(self) -> bool:
        """No work: the launcher must skip the launch (a zero grid is a CUDA error)."""
        return self.grid[0] == 0

    @property
    def tail(self) -> int:
        """Threads (or warps, for warp-per-item kernels) of the first sweep that have no item."""
        return max(0, self.threads // self.threads_per_item - self.items)


def ceil_div(a: int, b: int) -> int:
    if b <= 0:
        raise ValueError(f"divisor must be positive, got {b}")
    return -(-int(a) // int(b))


def grid_stride_launch(items: int, block: int = MAX_BLOCK, threads_per_item: int = 1,
                       max_blocks: int = MAX_GRID_X) -> LaunchConfig:
    """1-D launch for ``items`` work items of ``threads_per_item`` threads each (1, or 32 for a warp)."""
    if items < 0:
        raise ValueError(f"work item count must be >= 0, got {items}")
    if block <= 0 or block % WARP or block > MAX_BLOCK:
        raise ValueError(f"block size must be a multiple of {WARP} in [{WARP}, {MAX_BLOCK}], got {block}")
    if threads_per_item not in (1, WARP):
        raise ValueError(f"threads_per_item must be 1 or {WARP}, got {threads_per_item}")
    blocks = min(ceil_div(items * threads_per_item, block), int(max_blocks), MAX_GRID_X)
    return LaunchConfig((blocks, 1, 1), (block, 1, 1), 0, int(items), threads_per_item)


def grid_stride_coverage(cfg: LaunchConfig) -> np.ndarray:
    """How many times each work item is visited by the kernels' grid-stride loop under ``cfg``:
    int64 [items]. Every entry must be 1 (the loop is simulated exactly as the kernels write it)."""
    workers = cfg.threads // cfg.threads_per_item
    counts = np.zeros(cfg.items, np.int64)
    if cfg.items == 0 or workers == 0:
        return counts
    for start in range(workers):
        counts[start: cfg.items: workers] += 1
    return counts


def involution_kernel_name(kernel_size: int, dtype: str) -> str:
    """Entry point of the involution kernel for K and "float32"/"float16": dfmvr_involution_k3_f32 ..."""
    if kernel_size not in INVOLUTION_KERNEL_SIZES:
        raise ValueError(f"involution kernel_size must be one of {INVOLUTION_KERNEL_SIZES}, got {kernel_size}")
    if dtype not in _DTYPE_SUFFIX:
        raise ValueError(f"involution dtype must be one of {sorted(_DTYPE_SUFFIX)}, got {dtype!r}")
    return f"dfmvr_involution_k{kernel_size}_{_DTYPE_SUFFIX[dtype]}"


def involution_work_items(batch: int, groups: int, out_height: int, out_width: int) -> int:
    """One work item per (b, g, i, j): a pixel of a group, all C/G channels of it."""
    return int(batch) * int(groups) * int(out_height) * int(out_width)


def involution_launch(batch: int, channels: int, height: int, width: int, kernel_size: int, stride: int,
                      groups: int, block: int = 128) -> LaunchConfig:
    """Launch for ``dfmvr_involution_k{K}_*``; validates the attributes like the plugin does."""
    from .op import involution_output_size

    if kernel_size not in INVOLUTION_KERNEL_SIZES:
        raise ValueError(f"involution kernel_size must be one of {INVOLUTION_KERNEL_SIZES}, got {kernel_size}")
    if stride < 1 or groups < 1 or channels % groups:
        raise ValueError(f"need stride >= 1 and channels ({channels}) divisible by groups ({groups}); "
                         f"got stride {stride}, groups {groups}")
    ho, wo = involution_output_size(height, kernel_size, stride), involution_output_size(width, kernel_size, stride)
    return grid_stride_launch(involution_work_items(batch, groups, ho, wo), block)


def mesh_launches(batch: int, views: int, num_vertices: int, num_triangles: int, num_landmarks: int,
                  block: int = MAX_BLOCK) -> dict[str, LaunchConfig]:
    """Launches of the four mesh-assembly passes, keyed by kernel entry point (without dtype suffix):

    shape_albedo      one warp per basis row: 3N rows (the batch loops inside)
    triangle_normals  one thread per (b, t), then one per (b, v) for the rotation matrices
    vertices          one thread per (b, n)
    landmarks         one thread per (b, v, l)
    """
    return {
        "dfmvr_mesh_shape_albedo": grid_stride_launch(3 * num_vertices, block, threads_per_item=WARP),
        "dfmvr_mesh_triangle_normals": grid_stride_launch(batch * (num_triangles + views), block),
        "dfmvr_mesh_vertices": grid_stride_launch(batch * num_vertices, block),
        "dfmvr_mesh_landmarks": grid_stride_launch(batch * views * num_landmarks, block),
    }
