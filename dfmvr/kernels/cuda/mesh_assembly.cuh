// Mesh assembly arithmetic, shared by the CUDA kernels (mesh_assembly.cu) and the g++ host shim.
// The numpy reference is dfmvr.face.geometry.assemble_mesh; conventions are the ones written there:
//   shape  = mean_shape + id_basis . alpha + exp_basis . beta          [B, N, 3], decimetres
//   albedo = mean_albedo + albedo_basis . delta                         [B, N, 3]
//   triangle normal = normalise(cross(v1 - v0, v2 - v0)) on the UNPOSED shape
//   vertex normal   = normalise(sum of adjacent unit triangle normals), vertex_triangles [N, 8], -1 = none
//   per view v: R = Rz Ry Rx (Euler x, y, z radians); vertex = R shape + t; normal = R n0;
//   colour = albedo * (Y(normal) . gamma_c), gamma with 0.8 added to each channel's DC term.
//   landmark = project(vertex[keypoint]): u = c + f x / (d - z), v = c - f y / (d - z).
// Vectors are float[3] arrays; matrices float[9] row-major. Normalisation divides by max(|n|, 1e-12).
#pragma once

#include "common.cuh"

namespace dfmvr {

// sqrtf / sinf / cosf are NVRTC built-ins on the device and math.h functions under g++.
DFMVR_HD float fsqrt(float v) { return sqrtf(v); }
DFMVR_HD void fsincos(float a, float* s, float* c) { *s = sinf(a); *c = cosf(a); }

// Real SH constants (Deep3D): attenuation a_l times normalisation c_l, in double then rounded once.
#define DFMVR_PI 3.14159265358979323846
#define DFMVR_SQRT3 1.73205080756887729353
#define DFMVR_SQRT5 2.23606797749978969641
#define DFMVR_SQRT8 2.82842712474619009760
// sqrt(4 pi) = 3.5449..., sqrt(12 pi) = 6.1399...
#define DFMVR_SH_A0C0 ((float)(DFMVR_PI * (1.0 / 3.54490770181103205460)))
#define DFMVR_SH_A1C1 ((float)((2.0 * DFMVR_PI / DFMVR_SQRT3) * (DFMVR_SQRT3 / 3.54490770181103205460)))
#define DFMVR_SH_A2C2 ((float)((2.0 * DFMVR_PI / DFMVR_SQRT8) * (3.0 * DFMVR_SQRT5 / 6.13996024768650660050)))
#define DFMVR_SH_DC_OFFSET 0.8f  // added to each channel's DC coefficient (geometry.SH_DC_OFFSET)

// Counts of one model; the basis widths are the coefficient layout's (80 / 64 / 80).
struct MeshSizes {
    int batch, num_vertices, num_triangles, num_views;
    int n_id, n_exp, n_tex;
};

// Partial dot product of one basis row [count] with coefficients [count], over k = lane, lane +
// lanes, ... (a warp splits a row over 32 lanes; the host calls it with lane 0 of 1).
template <typename B>
DFMVR_HD float basis_row_dot(const B* row, const float* coef, int count, int lane, int lanes) {
    float acc = 0.0f;
    for (int k = lane; k < count; k += lanes) acc += load_elem(row, k) * coef[k];
    return acc;
}

DFMVR_HD void normalise3(float v[3]) {
    const float n = fsqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    const float d = n > 1e-12f ? n : 1e-12f;
    v[0] /= d; v[1] /= d; v[2] /= d;
}

// Unit normal of triangle (i0, i1, i2) of one shape [N, 3].
DFMVR_HD void triangle_unit_normal(const float* shape, int i0, int i1, int i2, float out[3]) {
    const float* p0 = shape + 3LL * i0;
    const float* p1 = shape + 3LL * i1;
    const float* p2 = shape + 3LL * i2;
    const float e1[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
    const float e2[3] = {p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]};
    out[0] = e1[1] * e2[2] - e1[2] * e2[1];
    out[1] = e1[2] * e2[0] - e1[0] * e2[2];
    out[2] = e1[0] * e2[1] - e1[1] * e2[0];
    normalise3(out);
}

// Unit vertex normal from the unit normals of one shape's triangles [T, 3] and the vertex's row of
// vertex_triangles [width] (-1 = none).
DFMVR_HD void vertex_unit_normal(const float* tri_normals, const int* adjacent, int width, float out[3]) {
    out[0] = out[1] = out[2] = 0.0f;
    for (int m = 0; m < width; ++m) {
        const int t = adjacent[m];
        if (t < 0) continue;
        out[0] += tri_normals[3LL * t];
        out[1] += tri_normals[3LL * t + 1];
        out[2] += tri_normals[3LL * t + 2];
    }
    normalise3(out);
}

// Euler angles (x, y, z) radians -> R = Rz Ry Rx, row-major float[9].
DFMVR_HD void rotation_from_euler(const float angles[3], float r[9]) {
    float sx, cx, sy, cy, sz, cz;
    fsincos(angles[0], &sx, &cx);
    fsincos(angles[1], &sy, &cy);
    fsincos(angles[2], &sz, &cz);
    r[0] = cz * cy; r[1] = cz * sy * sx - sz * cx; r[2] = cz * sy * cx + sz * sx;
    r[3] = sz * cy; r[4] = sz * sy * sx + cz * cx; r[5] = sz * sy * cx - cz * sx;
    r[6] = -sy;     r[7] = cy * sx;                r[8] = cy * cx;
}

DFMVR_HD void rotate3(const float* r, const float v[3], float out[3]) {
    out[0] = r[0] * v[0] + r[1] * v[1] + r[2] * v[2];
    out[1] = r[3] * v[0] + r[4] * v[1] + r[5] * v[2];
    out[2] = r[6] * v[0] + r[7] * v[1] + r[8] * v[2];
}

// The 9 real SH basis values of a unit normal, Deep3D's scaling and signs.
DFMVR_HD void sh_basis9(const float n[3], float y[9]) {
    const float a0c0 = DFMVR_SH_A0C0, a1c1 = DFMVR_SH_A1C1, a2c2 = DFMVR_SH_A2C2;
    y[0] = a0c0;
    y[1] = -a1c1 * n[1];
    y[2] = a1c1 * n[2];
    y[3] = -a1c1 * n[0];
    y[4] = a2c2 * n[0] * n[1];
    y[5] = -a2c2 * n[1] * n[2];
    y[6] = a2c2 * (float)(0.5 / DFMVR_SQRT3) * (3.0f * n[2] * n[2] - 1.0f);
    y[7] = -a2c2 * n[0] * n[2];
    y[8] = a2c2 * 0.5f * (n[0] * n[0] - n[1] * n[1]);
}

// Lit colour of one vertex: albedo[c] * sum_k Y_k(normal) gamma[c*9 + k]; lighting [27] channel-major
// without the DC offset (added here, as in geometry.sh_shade).
DFMVR_HD void sh_shade_vertex(const float albedo[3], const float normal[3], const float* lighting,
                              float out[3]) {
    float y[9];
    sh_basis9(normal, y);
    for (int c = 0; c < 3; ++c) {
        float s = (lighting[9 * c] + DFMVR_SH_DC_OFFSET) * y[0];
        for (int k = 1; k < 9; ++k) s += lighting[9 * c + k] * y[k];
        out[c] = albedo[c] * s;
    }
}

// Pinhole projection of a posed point (camera at +z `distance`, principal point `center` px).
DFMVR_HD void project_point(const float p[3], float focal, float center, float distance, float uv[2]) {
    const float depth = distance - p[2];
    uv[0] = center + focal * p[0] / depth;
    uv[1] = center - focal * p[1] / depth;
}

// ---- work items (one GPU thread each; the host shim loops over them) -------------------------------

// Pass 2, item (b, t): unit normal of triangle t of shape b.
//   shape [B, N, 3], triangles [T, 3], tri_normals [B, T, 3] (written)
DFMVR_HD void triangle_normal_item(const float* shape, const int* triangles, const MeshSizes& m,
                                   long long item, float* tri_normals) {
    const int b = (int)(item / m.num_triangles);
    const int t = (int)(item % m.num_triangles);
    const int* tri = triangles + 3LL * t;
    triangle_unit_normal(shape + 3LL * b * m.num_vertices, tri[0], tri[1], tri[2],
                         tri_normals + 3LL * item);
}

// Pass 2, item (b, v) (after the B*T triangle items): rotation matrix of view v of image b.
//   poses [B, V, 6] (rotation x, y, z radians; translation x, y, z), rotations [B, V, 9] (written)
// Done once per view here rather than per vertex: sinf/cosf's slow argument reduction needs a
// local-memory stack that would otherwise sit in the per-vertex kernel.
DFMVR_HD void rotation_item(const float* poses, long long item, float* rotations) {
    rotation_from_euler(poses + 6LL * item, rotations + 9LL * item);
}

// Pass 3, item (b, n): vertex normal of the unposed shape, then for every view the posed vertex,
// the rotated normal and the lit colour.
//   shape, albedo [B, N, 3]; tri_normals [B, T, 3]; vertex_triangles [N, adjacent]
//   poses [B, V, 6] (translation read from [3:6]); rotations [B, V, 9]; lighting [B, 27]
//   vertices, normals, colors [B, V, N, 3] (written)
DFMVR_HD void vertex_item(const float* shape, const float* albedo, const float* tri_normals,
                          const int* vertex_triangles, int adjacent, const float* poses,
                          const float* rotations, const float* lighting, const MeshSizes& m,
                          long long item, float* vertices, float* normals, float* colors) {
    const int b = (int)(item / m.num_vertices);
    const int n = (int)(item % m.num_vertices);
    float n0[3];
    vertex_unit_normal(tri_normals + 3LL * b * m.num_triangles, vertex_triangles + (long long)adjacent * n,
                       adjacent, n0);
    const float* p = shape + 3LL * item;
    const float* a = albedo + 3LL * item;
    for (int v = 0; v < m.num_views; ++v) {
        const float* pose = poses + 6LL * (b * m.num_views + v);
        const float* r = rotations + 9LL * (b * m.num_views + v);
        const long long out = 3LL * (((long long)b * m.num_views + v) * m.num_vertices + n);
        float pv[3], nv[3], cv[3];
        rotate3(r, p, pv);
        rotate3(r, n0, nv);
        sh_shade_vertex(a, nv, lighting + 27LL * b, cv);
        for (int k = 0; k < 3; ++k) {
            vertices[out + k] = pv[k] + pose[3 + k];
            normals[out + k] = nv[k];
            colors[out + k] = cv[k];
        }
    }
}

// Pass 4, item (b, v, l): landmark l of view v projected to pixels.
//   vertices [B, V, N, 3], keypoints [L], landmarks [B, V, L, 2] (written)
DFMVR_HD void landmark_item(const float* vertices, const int* keypoints, int num_landmarks,
                            const MeshSizes& m, float focal, float center, float distance,
                            long long item, float* landmarks) {
    const long long bv = item / num_landmarks;
    const int l = (int)(item % num_landmarks);
    const float* p = vertices + 3LL * (bv * m.num_vertices + keypoints[l]);
    project_point(p, focal, center, distance, landmarks + 2LL * item);
}

}  // namespace dfmvr
