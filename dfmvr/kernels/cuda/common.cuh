// Shared definitions for dfmvr's CUDA sources and their g++ host shim.
//
// Every arithmetic function is marked DFMVR_HD: `__host__ __device__` under nvcc / NVRTC and plain
// `inline` under g++, so the very same code runs in the GPU kernels and in the host library the
// tests compare with the numpy references. No system headers are needed under NVRTC (it has no
// standard library); fp16 is stored as raw `unsigned short` bits so that cuda_fp16.h is not needed
// either (conversion uses the PTX cvt instruction on the device and exact bit arithmetic on the host).
#pragma once

#if !defined(__CUDACC_RTC__)  // NVRTC compiles device code only and has no system headers
#include <math.h>
#include <string.h>
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DFMVR_HD __host__ __device__ __forceinline__
#define DFMVR_UNROLL _Pragma("unroll")
#else
#define DFMVR_HD inline
#define DFMVR_UNROLL
#endif

namespace dfmvr {

typedef unsigned short half_bits;  // IEEE 754 binary16, raw bits

// binary16 bits -> float (exact).
DFMVR_HD float half_to_float(half_bits h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 0x1fu;
    unsigned int man = h & 0x3ffu;
    unsigned int bits;
    if (exp == 0x1fu) {                       // inf / nan
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {                    // normal: rebias 15 -> 127
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {                    // signed zero
        bits = sign;
    } else {                                  // subnormal: normalise the mantissa
        int e = -1;
        do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
        bits = sign | ((unsigned int)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

// float -> binary16 bits, round to nearest even (what cvt.rn.f16.f32 does on the device).
DFMVR_HD half_bits float_to_half(float f) {
#if defined(__CUDA_ARCH__)
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    unsigned int x;
    memcpy(&x, &f, sizeof x);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u)                           // inf or nan (keep nan quiet)
        return (half_bits)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u)                           // rounds to >= 65520: overflow to inf
        return (half_bits)(sign | 0x7c00u);
    if (absx < 0x38800000u) {                          // below the smallest normal half (2^-14)
        if (absx < 0x33000000u) return (half_bits)sign;  // below half the smallest subnormal
        const unsigned int e = absx >> 23;
        const unsigned int man = (absx & 0x7fffffu) | 0x800000u;
        const unsigned int shift = 126u - e;           // 14 + 24 - 1 - (e - 127) - ... : bits to drop
        unsigned int q = man >> shift;
        const unsigned int rem = man & ((1u << shift) - 1u);
        const unsigned int halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
        return (half_bits)(sign | q);
    }
    unsigned int q = ((absx - 0x38000000u) >> 13);     // rebias 127 -> 15, drop 13 mantissa bits
    const unsigned int rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
    return (half_bits)(sign | q);
#endif
}

// Typed element access: fp32 tensors are float*, fp16 tensors are half_bits*; arithmetic is fp32.
DFMVR_HD float load_elem(const float* p, long long i) { return p[i]; }
DFMVR_HD float load_elem(const half_bits* p, long long i) { return half_to_float(p[i]); }
DFMVR_HD void store_elem(float* p, long long i, float v) { p[i] = v; }
DFMVR_HD void store_elem(half_bits* p, long long i, float v) { p[i] = float_to_half(v); }

}  // namespace dfmvr
