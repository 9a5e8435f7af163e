// dfmvr::Involution CUDA kernels: fp32 and fp16 storage (fp32 accumulation), kernel sizes 3 and 7.
//
// Entry points (extern "C", so that names are stable for cuModuleGetFunction and the TensorRT AOT
// plugin):  dfmvr_involution_k{3,7}_{f32,f16}(x, w, batch, channels, height, width, groups, stride, y)
//   x [B, C, H, W], w [B, G*K*K, Ho, Wo] (ordered (G, K*K)), y [B, C, Ho, Wo], all contiguous NCHW.
// Argument order is inputs, int32 scalars, output: the order TensorRT's AOT plugin launch uses
// (input pointers, then the plugin's extra SymInt32 arguments, then output pointers).
// Launch: 1-D grid of any size (grid-stride loop), block size from dfmvr.kernels.launch.
#include "involution.cuh"

namespace dfmvr {

template <int K, typename T>
__device__ __forceinline__ void involution_grid(const T* __restrict__ x, const T* __restrict__ w,
                                                int batch, int channels, int height, int width,
                                                int groups, int stride, T* __restrict__ y) {
    const InvolutionShape s = make_involution_shape(batch, channels, height, width, groups, K, stride);
    const long long total = involution_work_items(s);
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < total; item += step)
        involution_work_item<K, T>(x, w, y, s, item);
}

}  // namespace dfmvr

#define DFMVR_INVOLUTION_ENTRY(K, SUFFIX, T)                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                              \
    dfmvr_involution_k##K##_##SUFFIX(const T* __restrict__ x, const T* __restrict__ w, int batch,  \
                                     int channels, int height, int width, int groups, int stride,  \
                                     T* __restrict__ y) {                                          \
        dfmvr::involution_grid<K, T>(x, w, batch, channels, height, width, groups, stride, y);     \
    }

DFMVR_INVOLUTION_ENTRY(3, f32, float)
DFMVR_INVOLUTION_ENTRY(7, f32, float)
DFMVR_INVOLUTION_ENTRY(3, f16, dfmvr::half_bits)
DFMVR_INVOLUTION_ENTRY(7, f16, dfmvr::half_bits)
