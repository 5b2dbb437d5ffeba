// math/config.h — macros and element types shared by every file under
// csrc/math/ (and by the CPU and CUDA kernels that include them). No torch
// headers: a .cu file that includes only math/ and CUDA headers compiles in
// seconds.
//
// GKL_ISA names the CPU instruction-set variant a translation unit is
// compiled for (cpu/isa_*.cpp define it before any include; everything else
// gets "portable"). The math lives in an inline namespace of that name, so
// the same inline function compiled for AVX-512 in one object and for the
// baseline in another are two different symbols: the linker can never hand
// the AVX-512 copy to baseline code (docs/architecture.md, "CPU variants").
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GKL_HD __host__ __device__
#define GKL_INLINE __host__ __device__ __forceinline__
#else
#define GKL_HD
// Forced inlining matters on the CPU: a kernel is one function per
// instruction-set variant, and only inlined math is vectorised for it.
#define GKL_INLINE inline __attribute__((always_inline))
#endif

// A lambda inlined into its caller (host: GCC does not inline large lambdas
// on its own, and the policy's compile-time sizes must reach their bodies).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define GKL_LAMBDA
#else
#define GKL_LAMBDA __attribute__((always_inline))
#endif

// Full unrolling of the short register-tile loops (their arrays must stay
// in registers).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define GKL_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define GKL_UNROLL _Pragma("unroll")
#else
#define GKL_UNROLL _Pragma("GCC unroll 16")
#endif

// The solves, the product and the Cholesky factorisation: large loop nests
// called from several places; one copy per policy (host) keeps the compile
// time in check. Inlined on the device.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define GKL_KERNEL __host__ __device__ __forceinline__
#else
#define GKL_KERNEL __attribute__((noinline))
#endif

#ifndef GKL_ISA
#define GKL_ISA portable
#endif
#define GKL_NS_BEGIN \
  namespace gaussian_kl { \
  inline namespace GKL_ISA {
#define GKL_NS_END \
  } \
  }

GKL_NS_BEGIN

// Accumulation type: half types are computed and summed in float32 (their
// 10/7-bit mantissas cannot hold a sum over D terms), float in float,
// double in double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// Element <-> accumulator conversions. A backend specialises them for its
// half types where a plain cast is not available (cuda/half.cuh).
template <typename S>
GKL_INLINE typename AccType<S>::type kl_load(const S& x) {
  return static_cast<typename AccType<S>::type>(x);
}
template <typename S, typename A>
GKL_INLINE S kl_store(A x) {
  return static_cast<S>(x);
}

template <typename T>
GKL_INLINE T kl_abs(T x) {
  return x < T(0) ? -x : x;
}
template <typename T>
GKL_INLINE T kl_min(T x, T y) {
  return x < y ? x : y;
}
template <typename T>
GKL_INLINE T kl_max(T x, T y) {
  return x < y ? y : x;
}

// Largest finite value (a plain compare against it vectorises where
// std::isfinite may not).
template <typename T>
GKL_INLINE T kl_huge();
template <>
GKL_INLINE float kl_huge<float>() {
  return 3.40282347e+38f;
}
template <>
GKL_INLINE double kl_huge<double>() {
  return 1.7976931348623157e+308;
}

template <typename T>
GKL_INLINE T kl_nan() {
  return static_cast<T>(NAN);
}

GKL_NS_END
