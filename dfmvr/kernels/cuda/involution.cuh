// dfmvr::Involution arithmetic, shared by the CUDA kernel (involution.cu) and the g++ host shim.
//
// Semantics: dfmvr/kernels/op.py. With p = (K - 1) / 2, Ho = (H + 2p - K) / S + 1:
//   Y[b, c, i, j] = sum_{di, dj < K} W[b, c / (C/G), di*K + dj, i, j] * X[b, c, S*i - p + di, S*j - p + dj]
// with X read as zero outside the image. No unfolded tensor is built: each work item reads its
// K*K kernel weights once into registers and reuses them for the C/G channels of its group.
#pragma once

#include "common.cuh"

namespace dfmvr {

// Sizes of one involution call (NCHW, contiguous). All counts are elements.
struct InvolutionShape {
    int batch, channels, height, width;  // X [B, C, H, W]
    int groups, kernel, stride, pad;     // G, K, S, p = (K - 1) / 2
    int out_height, out_width;           // Ho, Wo
};

DFMVR_HD int involution_out_size(int size, int kernel, int stride) {
    return (size + 2 * ((kernel - 1) / 2) - kernel) / stride + 1;
}

DFMVR_HD InvolutionShape make_involution_shape(int batch, int channels, int height, int width,
                                               int groups, int kernel, int stride) {
    InvolutionShape s;
    s.batch = batch; s.channels = channels; s.height = height; s.width = width;
    s.groups = groups; s.kernel = kernel; s.stride = stride; s.pad = (kernel - 1) / 2;
    s.out_height = involution_out_size(height, kernel, stride);
    s.out_width = involution_out_size(width, kernel, stride);
    return s;
}

// Number of work items: one per (b, g, i, j) output pixel of a group.
DFMVR_HD long long involution_work_items(const InvolutionShape& s) {
    return (long long)s.batch * s.groups * s.out_height * s.out_width;
}

// One work item: output pixel (i, j) of group g in image b, all C/G channels of the group.
// Work item index = ((b * G + g) * Ho + i) * Wo + j, so neighbouring threads write neighbouring j
// (coalesced W reads and Y writes). T is float or half_bits; accumulation is fp32.
template <int K, typename T>
DFMVR_HD void involution_work_item(const T* x, const T* w, T* y, const InvolutionShape& s,
                                   long long item) {
    const int j = (int)(item % s.out_width);
    long long rest = item / s.out_width;
    const int i = (int)(rest % s.out_height);
    rest /= s.out_height;
    const int g = (int)(rest % s.groups);
    const int b = (int)(rest / s.groups);

    const long long out_plane = (long long)s.out_height * s.out_width;
    const long long pixel = (long long)i * s.out_width + j;
    // W [B, G, K*K, Ho, Wo]: the K*K weights of this pixel are out_plane apart.
    const long long w_base = ((long long)b * s.groups + g) * (K * K) * out_plane + pixel;
    float wk[K * K];
    DFMVR_UNROLL
    for (int kk = 0; kk < K * K; ++kk) wk[kk] = load_elem(w, w_base + kk * out_plane);

    const int row0 = i * s.stride - s.pad;
    const int col0 = j * s.stride - s.pad;
    const int per_group = s.channels / s.groups;
    const long long in_plane = (long long)s.height * s.width;
    for (int cc = 0; cc < per_group; ++cc) {
        const int c = g * per_group + cc;
        const long long x_base = ((long long)b * s.channels + c) * in_plane;
        float acc = 0.0f;
        DFMVR_UNROLL
        for (int di = 0; di < K; ++di) {
            const int r = row0 + di;
            if (r < 0 || r >= s.height) continue;          // zero padding rows
            DFMVR_UNROLL
            for (int dj = 0; dj < K; ++dj) {
                const int q = col0 + dj;
                if (q < 0 || q >= s.width) continue;       // zero padding columns
                acc += wk[di * K + dj] * load_elem(x, x_base + (long long)r * s.width + q);
            }
        }
        store_elem(y, ((long long)b * s.channels + c) * out_plane + pixel, acc);
    }
}

}  // namespace dfmvr
