"""dfmvr.kernels: CUDA kernels (involution, mesh assembly), their build helpers and launchers.

cuda/*.cu(h)      kernel sources; arithmetic in __host__ __device__ headers that g++ also compiles
op                the involution op spec and numpy reference
build             nvcc / NVRTC compilation, ptxas register reports, on-disk cache
launch            grid/block logic (plain functions)
host              g++ host shim over the kernels' arithmetic (tests)
mesh_gpu          CudaMeshAssembler: mesh assembly through cuda-python
trt_plugin        the TensorRT plugin for dfmvr::Involution (register_involution_plugin)
trt_version       supported TensorRT range; NVRTC's CUDA major matched to TensorRT's
cuda_driver       the one CUDA layer (cuda-python driver API): contexts, streams, buffers, launches

No module here imports torch, cuda-python or tensorrt at import time.
"""
