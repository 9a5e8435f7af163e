"""Mesh assembly on an NVIDIA GPU through cuda-python: the runtime's ``--device cuda`` path.

    asm = CudaMeshAssembler(model, camera)          # compiles (NVRTC, cached) and uploads the bases
    mesh = asm.assemble(coeffs)                     # MeshResult, same layout as geometry.assemble_mesh
    asm.close()                                     # or use it as a context manager

The kernels (``cuda/mesh_assembly.cu``) are compiled for the device's own architecture by NVRTC, or
nvcc if NVRTC is missing, cached on disk. The model's bases go to the device once; output buffers
are allocated for the largest batch seen and reused. Without cuda-python the constructor raises
MissingExtraError naming the ``gpu`` extra (exit code 2); without a driver or a GPU, UnavailableError
(exit code 3). Importing this module needs none of them.
"""

from __future__ import annotations

from ..face.camera import Camera
from ..face.geometry import MeshResult
from ..face.layout import Coefficients
from ..face.model import MorphableModel
from .cuda_driver import CudaContext, CudaModule, DeviceBuffer, KernelArg
from .launch import LaunchConfig, mesh_launches
from .mesh_buffers import MeshOutputs, PackedModel, camera_args, pack_coefficients, pack_model

__all__ = ["CudaMeshAssembler", "MESH_PARAMS", "mesh_launch_plan"]

# Parameter kinds of each mesh kernel, in order (checked against the compiled PTX in the tests).
MESH_PARAMS: dict[str, tuple[str, ...]] = {
    "dfmvr_mesh_shape_albedo": ("ptr",) * 6 + ("i32",) * 5 + ("ptr",) * 2,
    "dfmvr_mesh_triangle_normals": ("ptr",) * 3 + ("i32",) * 4 + ("ptr",) * 2,
    "dfmvr_mesh_vertices": ("ptr",) * 4 + ("i32",) + ("ptr",) * 3 + ("i32",) * 4 + ("ptr",) * 3,
    "dfmvr_mesh_landmarks": ("ptr",) * 2 + ("i32",) * 4 + ("f32",) * 3 + ("ptr",),
}
_MODEL_ARRAYS = ("id_basis", "exp_basis", "tex_basis", "mean_shape", "mean_albedo", "triangles",
                 "vertex_triangles", "keypoints")
_OUTPUTS = ("shape", "albedo", "tri_normals", "rotations", "vertices", "normals", "colors", "landmarks")


def mesh_launch_plan(pm: PackedModel, batch: int, views: int, camera: Camera, model_ptrs: dict[str, int],
                     io_ptrs: dict[str, int]) -> list[tuple[str, LaunchConfig, list, tuple[str, ...]]]:
    """The four launches of one assemble call: (kernel name, LaunchConfig, argument values, kinds).

    model_ptrs: device addresses of the PackedModel arrays by field name; io_ptrs: of "coeffs",
    "poses", "lighting" and the MeshOutputs fields. Pure function (no CUDA), tested on the host.
    """
    b, v, n, t, l = batch, views, pm.num_vertices, pm.num_triangles, pm.keypoints.shape[0]
    n_id, n_exp, n_tex = pm.dims
    m, p = model_ptrs, io_ptrs
    cfg = mesh_launches(b, v, n, t, l)
    args = {
        "dfmvr_mesh_shape_albedo": [m["id_basis"], m["exp_basis"], m["tex_basis"], m["mean_shape"],
                                    m["mean_albedo"], p["coeffs"], b, 3 * n, n_id, n_exp, n_tex, p["shape"],
                                    p["albedo"]],
        "dfmvr_mesh_triangle_normals": [p["shape"], m["triangles"], p["poses"], b, n, t, v, p["tri_normals"],
                                        p["rotations"]],
        "dfmvr_mesh_vertices": [p["shape"], p["albedo"], p["tri_normals"], m["vertex_triangles"],
                                pm.vertex_triangles.shape[1], p["poses"], p["rotations"], p["lighting"], b, n, t,
                                v, p["vertices"], p["normals"], p["colors"]],
        "dfmvr_mesh_landmarks": [p["vertices"], m["keypoints"], l, b, n, v, *camera_args(camera), p["landmarks"]],
    }
    names = {"dfmvr_mesh_shape_albedo": f"dfmvr_mesh_shape_albedo_{pm.suffix}"}
    return [(names.get(k, k), cfg[k], args[k], MESH_PARAMS[k]) for k in MESH_PARAMS]


class CudaMeshAssembler:
    """GPU counterpart of ``dfmvr.face.geometry.assemble_mesh`` for one face model and camera.

    model        MorphableModel (bases uploaded once, fp32 or fp16 per ``basis_dtype``)
    camera       Camera used for the 2D landmarks
    basis_dtype  "float32" (default) or "float16" (halves basis memory and traffic; ~1e-4 relative
                 error in shape and colour)
    device       CUDA device ordinal
    image        optional precompiled PTX/cubin of cuda/mesh_assembly.cu (else NVRTC compiles it)
    """

    def __init__(self, model: MorphableModel, camera: Camera, basis_dtype: str = "float32", device: int = 0,
                 image: bytes | None = None):
        from .build import kernel_image

        self.camera = camera
        self.packed = pack_model(model, basis_dtype)
        self.ctx = CudaContext(device)
        try:
            self.module = CudaModule(image if image is not None else kernel_image("mesh_assembly", self.ctx.arch))
            self._model = {k: DeviceBuffer() for k in _MODEL_ARRAYS}
            for k, buf in self._model.items():
                buf.upload(getattr(self.packed, k), self.ctx.stream)
            self._inputs = {k: DeviceBuffer() for k in ("coeffs", "poses", "lighting")}
            self._outputs = {k: DeviceBuffer() for k in _OUTPUTS}
            self.ctx.synchronize()
        except BaseException:
            self.close()
            raise

    def assemble(self, coeffs: Coefficients) -> MeshResult:
        """Coefficients [B, ...] -> MeshResult (numpy float32, on the host). Blocks until done."""
        pm, pc = self.packed, pack_coefficients(coeffs)
        if pc.coeffs.shape[1] != sum(pm.dims):
            raise ValueError(f"coefficients have {pc.coeffs.shape[1]} identity+expression+texture numbers, "
                             f"the face model's bases take {sum(pm.dims)}")
        stream, ptr = self.ctx.stream, {}
        for k in ("coeffs", "poses", "lighting"):
            ptr[k] = self._inputs[k].upload(getattr(pc, k), stream)
        host = MeshOutputs.empty(pc.batch, pc.views, pm)
        for k in _OUTPUTS:
            ptr[k] = self._outputs[k].ensure(getattr(host, k).nbytes)
        mp = {k: int(buf.ptr) for k, buf in self._model.items()}
        for name, cfg, values, kinds in mesh_launch_plan(pm, pc.batch, pc.views, self.camera, mp, ptr):
            self.module.launch(name, cfg, values, KernelArg.kinds(kinds), stream)
        for k in ("shape", "albedo", "vertices", "normals", "colors", "landmarks"):
            self._outputs[k].download(getattr(host, k), stream)
        self.ctx.synchronize()
        return host.result()

    def close(self) -> None:
        """Free device memory and release the context (idempotent)."""
        for group in ("_model", "_inputs", "_outputs"):
            for buf in getattr(self, group, {}).values():
                buf.free()
        if getattr(self, "module", None) is not None:
            self.module.unload()
            self.module = None
        if getattr(self, "ctx", None) is not None:
            self.ctx.close()
            self.ctx = None

    def __enter__(self) -> "CudaMeshAssembler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
