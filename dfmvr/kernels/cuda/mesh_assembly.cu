// Mesh assembly on the GPU: the counterpart of dfmvr.face.geometry.assemble_mesh in four passes.
//
//   1. dfmvr_mesh_shape_albedo_{f32,f16}  one warp per basis row (3N rows): shape and albedo [B, 3N]
//   2. dfmvr_mesh_triangle_normals        one thread per (b, t): unit triangle normals [B, T, 3], then
//                                         one per (b, v): rotation matrices [B, V, 9]
//   3. dfmvr_mesh_vertices                one thread per (b, n): vertex normal, then per view the
//                                         posed vertex, rotated normal and SH colour [B, V, N, 3]
//   4. dfmvr_mesh_landmarks               one thread per (b, v, l): projected keypoints [B, V, L, 2]
// Every pass uses a grid-stride loop, so any grid size is correct (dfmvr.kernels.launch picks it).
// Bases are [3N, K] row-major (MorphableModel's [N, 3, K]), fp32 or fp16; everything else is fp32.
#include "mesh_assembly.cuh"

namespace dfmvr {

__device__ __forceinline__ float warp_sum(float v) {
    DFMVR_UNROLL
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// coeffs [B, n_id + n_exp + n_tex] packed identity | expression | texture.
template <typename B>
__device__ __forceinline__ void shape_albedo_rows(const B* __restrict__ id_basis, const B* __restrict__ exp_basis,
                                                  const B* __restrict__ tex_basis,
                                                  const float* __restrict__ mean_shape,
                                                  const float* __restrict__ mean_albedo,
                                                  const float* __restrict__ coeffs, int batch, int rows,
                                                  int n_id, int n_exp, int n_tex,
                                                  float* __restrict__ shape, float* __restrict__ albedo) {
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const int n_coef = n_id + n_exp + n_tex;
    for (long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const B* id_row = id_basis + r * n_id;
        const B* exp_row = exp_basis + r * n_exp;
        const B* tex_row = tex_basis + r * n_tex;
        // The batch loop re-reads the row from L1: basis bytes leave DRAM once per call.
        for (int b = 0; b < batch; ++b) {
            const float* c = coeffs + (long long)b * n_coef;
            float s = basis_row_dot(id_row, c, n_id, lane, 32) + basis_row_dot(exp_row, c + n_id, n_exp, lane, 32);
            float a = basis_row_dot(tex_row, c + n_id + n_exp, n_tex, lane, 32);
            s = warp_sum(s);
            a = warp_sum(a);
            if (lane == 0) {
                shape[(long long)b * rows + r] = mean_shape[r] + s;
                albedo[(long long)b * rows + r] = mean_albedo[r] + a;
            }
        }
    }
}

}  // namespace dfmvr

#define DFMVR_GRID_LOOP(item, total)                                                              \
    for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < (total);       \
         item += (long long)gridDim.x * blockDim.x)

#define DFMVR_SHAPE_ALBEDO_ENTRY(SUFFIX, B)                                                         \
    extern "C" __global__ void __launch_bounds__(256) dfmvr_mesh_shape_albedo_##SUFFIX(            \
        const B* __restrict__ id_basis, const B* __restrict__ exp_basis, const B* __restrict__ tex_basis, \
        const float* __restrict__ mean_shape, const float* __restrict__ mean_albedo,               \
        const float* __restrict__ coeffs, int batch, int rows, int n_id, int n_exp, int n_tex,     \
        float* __restrict__ shape, float* __restrict__ albedo) {                                   \
        dfmvr::shape_albedo_rows<B>(id_basis, exp_basis, tex_basis, mean_shape, mean_albedo, coeffs, \
                                    batch, rows, n_id, n_exp, n_tex, shape, albedo);               \
    }

DFMVR_SHAPE_ALBEDO_ENTRY(f32, float)
DFMVR_SHAPE_ALBEDO_ENTRY(f16, dfmvr::half_bits)

extern "C" __global__ void __launch_bounds__(256)
dfmvr_mesh_triangle_normals(const float* __restrict__ shape, const int* __restrict__ triangles,
                            const float* __restrict__ poses, int batch, int num_vertices, int num_triangles,
                            int num_views, float* __restrict__ tri_normals, float* __restrict__ rotations) {
    dfmvr::MeshSizes m = {batch, num_vertices, num_triangles, num_views, 0, 0, 0};
    const long long n_tri = (long long)batch * num_triangles;
    DFMVR_GRID_LOOP(item, n_tri + (long long)batch * num_views) {
        if (item < n_tri) dfmvr::triangle_normal_item(shape, triangles, m, item, tri_normals);
        else dfmvr::rotation_item(poses, item - n_tri, rotations);
    }
}

extern "C" __global__ void __launch_bounds__(256)
dfmvr_mesh_vertices(const float* __restrict__ shape, const float* __restrict__ albedo,
                    const float* __restrict__ tri_normals, const int* __restrict__ vertex_triangles,
                    int adjacent, const float* __restrict__ poses, const float* __restrict__ rotations,
                    const float* __restrict__ lighting,
                    int batch, int num_vertices, int num_triangles, int num_views,
                    float* __restrict__ vertices, float* __restrict__ normals, float* __restrict__ colors) {
    dfmvr::MeshSizes m = {batch, num_vertices, num_triangles, num_views, 0, 0, 0};
    DFMVR_GRID_LOOP(item, (long long)batch * num_vertices)
        dfmvr::vertex_item(shape, albedo, tri_normals, vertex_triangles, adjacent, poses, rotations, lighting, m,
                           item, vertices, normals, colors);
}

extern "C" __global__ void __launch_bounds__(256)
dfmvr_mesh_landmarks(const float* __restrict__ vertices, const int* __restrict__ keypoints,
                     int num_landmarks, int batch, int num_vertices, int num_views, float focal,
                     float center, float distance, float* __restrict__ landmarks) {
    dfmvr::MeshSizes m = {batch, num_vertices, 0, num_views, 0, 0, 0};
    DFMVR_GRID_LOOP(item, (long long)batch * num_views * num_landmarks)
        dfmvr::landmark_item(vertices, keypoints, num_landmarks, m, focal, center, distance, item, landmarks);
}
