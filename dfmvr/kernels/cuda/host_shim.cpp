// Host (g++) shim over the kernels' __host__ __device__ arithmetic, for the tests.
//
// Each function runs exactly the per-work-item functions the CUDA kernels run, looping over the
// items serially instead of over threads. dfmvr.kernels.host builds this into a shared library and
// calls it through ctypes. Not a production CPU path (dfmvr.face.geometry is the CPU path).
#include "involution.cuh"
#include "mesh_assembly.cuh"

using dfmvr::half_bits;

namespace {

template <typename T>
int involution_all(const T* x, const T* w, int batch, int channels, int height, int width, int groups,
                   int kernel, int stride, T* y) {
    const dfmvr::InvolutionShape s =
        dfmvr::make_involution_shape(batch, channels, height, width, groups, kernel, stride);
    const long long total = dfmvr::involution_work_items(s);
    if (kernel == 3) {
        for (long long item = 0; item < total; ++item) dfmvr::involution_work_item<3, T>(x, w, y, s, item);
    } else if (kernel == 7) {
        for (long long item = 0; item < total; ++item) dfmvr::involution_work_item<7, T>(x, w, y, s, item);
    } else {
        return 1;  // only the kernel sizes the network uses are instantiated (as on the GPU)
    }
    return 0;
}

template <typename B>
void mesh_all(const B* id_basis, const B* exp_basis, const B* tex_basis, const float* mean_shape,
              const float* mean_albedo, const float* coeffs, const int* triangles,
              const int* vertex_triangles, int adjacent, const int* keypoints, int num_landmarks,
              const float* poses, const float* lighting, int batch, int num_vertices, int num_triangles,
              int num_views, int n_id, int n_exp, int n_tex, float focal, float center, float distance,
              float* shape, float* albedo, float* tri_normals, float* rotations, float* vertices,
              float* normals, float* colors, float* landmarks) {
    const dfmvr::MeshSizes m = {batch, num_vertices, num_triangles, num_views, n_id, n_exp, n_tex};
    const long long rows = 3LL * num_vertices;
    const int n_coef = n_id + n_exp + n_tex;
    for (long long r = 0; r < rows; ++r) {         // pass 1 (one lane of one)
        for (int b = 0; b < batch; ++b) {
            const float* c = coeffs + (long long)b * n_coef;
            shape[b * rows + r] = mean_shape[r] + (dfmvr::basis_row_dot(id_basis + r * n_id, c, n_id, 0, 1) +
                                                   dfmvr::basis_row_dot(exp_basis + r * n_exp, c + n_id, n_exp, 0, 1));
            albedo[b * rows + r] = mean_albedo[r] + dfmvr::basis_row_dot(tex_basis + r * n_tex, c + n_id + n_exp, n_tex, 0, 1);
        }
    }
    for (long long item = 0; item < (long long)batch * num_triangles; ++item)
        dfmvr::triangle_normal_item(shape, triangles, m, item, tri_normals);
    for (long long item = 0; item < (long long)batch * num_views; ++item)
        dfmvr::rotation_item(poses, item, rotations);
    for (long long item = 0; item < (long long)batch * num_vertices; ++item)
        dfmvr::vertex_item(shape, albedo, tri_normals, vertex_triangles, adjacent, poses, rotations, lighting, m, item,
                           vertices, normals, colors);
    for (long long item = 0; item < (long long)batch * num_views * num_landmarks; ++item)
        dfmvr::landmark_item(vertices, keypoints, num_landmarks, m, focal, center, distance, item, landmarks);
}

}  // namespace

#define DFMVR_MESH_HOST_ENTRY(SUFFIX, B)                                                             \
    extern "C" void dfmvr_host_mesh_##SUFFIX(                                                         \
        const B* id_basis, const B* exp_basis, const B* tex_basis, const float* mean_shape,         \
        const float* mean_albedo, const float* coeffs, const int* triangles,                         \
        const int* vertex_triangles, int adjacent, const int* keypoints, int num_landmarks,          \
        const float* poses, const float* lighting, int batch, int num_vertices, int num_triangles,   \
        int num_views, int n_id, int n_exp, int n_tex, float focal, float center, float distance,    \
        float* shape, float* albedo, float* tri_normals, float* rotations, float* vertices,          \
        float* normals, float* colors, float* landmarks) {                                           \
        mesh_all<B>(id_basis, exp_basis, tex_basis, mean_shape, mean_albedo, coeffs, triangles,      \
                    vertex_triangles, adjacent, keypoints, num_landmarks, poses, lighting, batch,    \
                    num_vertices, num_triangles, num_views, n_id, n_exp, n_tex, focal, center,       \
                    distance, shape, albedo, tri_normals, rotations, vertices, normals, colors,   \
                    landmarks);                                                                      \
    }

extern "C" {

int dfmvr_host_involution_f32(const float* x, const float* w, int batch, int channels, int height,
                              int width, int groups, int kernel, int stride, float* y) {
    return involution_all<float>(x, w, batch, channels, height, width, groups, kernel, stride, y);
}

int dfmvr_host_involution_f16(const half_bits* x, const half_bits* w, int batch, int channels, int height,
                              int width, int groups, int kernel, int stride, half_bits* y) {
    return involution_all<half_bits>(x, w, batch, channels, height, width, groups, kernel, stride, y);
}

void dfmvr_host_half_to_float(const half_bits* h, long long n, float* out) {
    for (long long i = 0; i < n; ++i) out[i] = dfmvr::half_to_float(h[i]);
}

void dfmvr_host_float_to_half(const float* f, long long n, half_bits* out) {
    for (long long i = 0; i < n; ++i) out[i] = dfmvr::float_to_half(f[i]);
}

void dfmvr_host_sh_basis(const float* normals, long long n, float* out) {
    for (long long i = 0; i < n; ++i) dfmvr::sh_basis9(normals + 3 * i, out + 9 * i);
}

void dfmvr_host_rotation(const float* angles, long long n, float* out) {
    for (long long i = 0; i < n; ++i) dfmvr::rotation_from_euler(angles + 3 * i, out + 9 * i);
}

}  // extern "C"

DFMVR_MESH_HOST_ENTRY(f32, float)
DFMVR_MESH_HOST_ENTRY(f16, half_bits)
