"""Launch configuration logic: grid sizes, limits, tails, and the mesh launcher's argument plan."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.camera import DEEP3D_CAMERA
from dfmvr.kernels import launch
from dfmvr.kernels.mesh_buffers import MeshOutputs, pack_model
from dfmvr.kernels.mesh_gpu import MESH_PARAMS, mesh_launch_plan


@pytest.mark.parametrize("items", [0, 1, 31, 127, 128, 129, 1000, 4097])
@pytest.mark.parametrize("block", [32, 128, 256])
def test_grid_covers_every_item_once(items, block):
    cfg = launch.grid_stride_launch(items, block)
    assert cfg.block == (block, 1, 1)
    assert cfg.empty == (items == 0)
    assert np.all(launch.grid_stride_coverage(cfg) == 1)
    assert 0 <= cfg.tail < block
    assert cfg.threads == launch.ceil_div(items, block) * block


def test_capped_grid_loops_over_the_rest():
    cfg = launch.grid_stride_launch(10_000, 128, max_blocks=7)
    assert cfg.grid == (7, 1, 1) and cfg.tail == 0
    assert np.all(launch.grid_stride_coverage(cfg) == 1)


def test_warp_per_item_launch():
    cfg = launch.grid_stride_launch(1001, 256, threads_per_item=32)   # 8 rows per block
    assert cfg.grid[0] == launch.ceil_div(1001, 8)
    assert cfg.tail == cfg.grid[0] * 8 - 1001
    assert np.all(launch.grid_stride_coverage(cfg) == 1)


def test_grid_is_capped_at_the_cuda_limit():
    cfg = launch.grid_stride_launch(2 ** 40, 256)
    assert cfg.grid[0] == launch.MAX_GRID_X


@pytest.mark.parametrize("block", [0, 16, 100, 512])
def test_rejects_bad_block_sizes(block):
    with pytest.raises(ValueError):
        launch.grid_stride_launch(10, block)


def test_rejects_negative_items_and_divisors():
    with pytest.raises(ValueError):
        launch.grid_stride_launch(-1)
    with pytest.raises(ValueError):
        launch.ceil_div(3, 0)


def test_involution_launch_counts_group_pixels():
    # RedNet stage 2 bottleneck: C=128 (G=8), 56x56 in, stride 2 -> 28x28 out
    cfg = launch.involution_launch(2, 128, 56, 56, 7, 2, 8)
    assert cfg.items == 2 * 8 * 28 * 28
    assert np.all(launch.grid_stride_coverage(cfg) == 1)
    with pytest.raises(ValueError):
        launch.involution_launch(1, 30, 8, 8, 3, 1, 4)   # channels not divisible by groups
    with pytest.raises(ValueError):
        launch.involution_launch(1, 32, 8, 8, 5, 1, 2)   # no kernel for K=5


def test_involution_kernel_names():
    assert launch.involution_kernel_name(3, "float32") == "dfmvr_involution_k3_f32"
    assert launch.involution_kernel_name(7, "float16") == "dfmvr_involution_k7_f16"
    with pytest.raises(ValueError):
        launch.involution_kernel_name(7, "bfloat16")


def test_mesh_launches_cover_each_pass():
    cfg = launch.mesh_launches(batch=2, views=3, num_vertices=35709, num_triangles=70789, num_landmarks=68)
    assert cfg["dfmvr_mesh_shape_albedo"].items == 3 * 35709
    assert cfg["dfmvr_mesh_triangle_normals"].items == 2 * (70789 + 3)
    assert cfg["dfmvr_mesh_vertices"].items == 2 * 35709
    assert cfg["dfmvr_mesh_landmarks"].items == 2 * 3 * 68
    for c in cfg.values():
        assert c.threads // c.threads_per_item >= c.items


@pytest.mark.parametrize("basis_dtype", ["float32", "float16"])
def test_mesh_launch_plan_passes_each_buffer_where_the_kernel_expects_it(small_model, basis_dtype):
    pm = pack_model(small_model, basis_dtype)
    out = MeshOutputs.empty(2, 3, pm)
    fields = ["id_basis", "exp_basis", "tex_basis", "mean_shape", "mean_albedo", "triangles",
              "vertex_triangles", "keypoints"]
    model_ptrs = {k: 0x1000_0000 * (i + 1) for i, k in enumerate(fields)}
    io_names = ["coeffs", "poses", "lighting", *out.__dataclass_fields__]
    io_ptrs = {k: 0x7000_0000_0000 + 0x100_0000 * i for i, k in enumerate(io_names)}
    pointers = set(model_ptrs.values()) | set(io_ptrs.values())
    plan = mesh_launch_plan(pm, 2, 3, DEEP3D_CAMERA, model_ptrs, io_ptrs)
    assert [p[0] for p in plan] == [f"dfmvr_mesh_shape_albedo_{pm.suffix}", "dfmvr_mesh_triangle_normals",
                                    "dfmvr_mesh_vertices", "dfmvr_mesh_landmarks"]
    for name, cfg, values, kinds in plan:
        assert len(values) == len(kinds), name
        for v, k in zip(values, kinds):
            if k == "ptr":
                assert v in pointers, (name, v)
            else:
                assert v not in pointers and np.isfinite(v), (name, v)
    # each output is written by exactly one pass (its last pointer arguments)
    written = [v for _, _, values, kinds in plan for v, k in zip(values[-3:], kinds[-3:]) if k == "ptr"]
    assert len(written) == len(set(written))
    assert MESH_PARAMS.keys() == launch.mesh_launches(1, 1, 3, 1, 1).keys()


def test_pack_kernel_args_stores_each_value_in_its_c_type():
    import ctypes

    from dfmvr.kernels.cuda_driver import KernelArg, pack_kernel_args

    values = [0x7F00_0000_1234, -5, 2.5, 7]
    addrs, _keep = pack_kernel_args(values, KernelArg.kinds(["ptr", "i32", "f32", "i32"]))
    assert addrs.dtype == np.uint64 and len(addrs) == 4
    assert ctypes.c_uint64.from_address(int(addrs[0])).value == values[0]
    assert ctypes.c_int32.from_address(int(addrs[1])).value == -5
    assert ctypes.c_float.from_address(int(addrs[2])).value == 2.5
    assert ctypes.c_int32.from_address(int(addrs[3])).value == 7
    with pytest.raises(ValueError):
        pack_kernel_args([1, 2], KernelArg.kinds(["ptr"]))


def test_cuda_mesh_assembler_without_a_gpu_is_unavailable(small_model):
    pytest.importorskip("cuda.bindings.driver")
    from dfmvr.errors import UnavailableError
    from dfmvr.kernels.cuda_driver import CudaContext
    from dfmvr.kernels.mesh_gpu import CudaMeshAssembler

    try:
        CudaContext(0).close()
    except UnavailableError:
        with pytest.raises(UnavailableError, match="device cpu"):
            CudaMeshAssembler(small_model, DEEP3D_CAMERA)
    else:
        pytest.skip("a CUDA device is present: the GPU tests cover the assembler")
