// cpu/variant_begin.h — the head of every cpu/isa_*.cpp (docs/architecture.md,
// "CPU variants"). Define GKL_VARIANT_AVX512, _AVX2 or _BASELINE, then
// include this, then the kernels.
//
// Headers whose inline functions other translation units share (the C++
// library, c10's Half and BFloat16, the op structs and the kernel table)
// are included first, under the compiler's default target, so that no
// AVX-512 copy of a shared inline function can be linked into baseline
// code. Then the target of the variant applies to everything that follows,
// and GKL_ISA puts that code (math/, cpu/*_kernels.h) in a namespace of the
// variant's own.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../math/problem.h"
#include "kernels.h"

// 64-byte vectors are passed by value only between always-inline functions
// of one variant: the ABI note for targets without AVX-512 does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Waggressive-loop-optimizations"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GKL_X86_VARIANTS 1
#endif

#if defined(GKL_VARIANT_AVX512)
#define GKL_ISA avx512
#if defined(GKL_X86_VARIANTS)
#define GKL_VARIANT_BUILT 1
#pragma GCC target("arch=x86-64-v4")
#endif
#elif defined(GKL_VARIANT_AVX2)
#define GKL_ISA avx2
#if defined(GKL_X86_VARIANTS)
#define GKL_VARIANT_BUILT 1
#pragma GCC target("arch=x86-64-v3")
#endif
#elif defined(GKL_VARIANT_BASELINE)
#define GKL_ISA baseline
#define GKL_VARIANT_BUILT 1
#else
#error "define GKL_VARIANT_AVX512, GKL_VARIANT_AVX2 or GKL_VARIANT_BASELINE before including cpu/variant_begin.h"
#endif

// The target stays in force to the end of the translation unit: function
// templates are instantiated there, and an instantiation compiled for
// another target than its caller would pass its vector arguments by
// another ABI (lanes silently lost). The variant's entry points are plain
// functions with the variant's suffix; cpu/isa.cpp takes their addresses
// (which runs none of their code) and calls them only where the CPU has
// the variant.

// Names of the variant's table entries.
#define GKL_CAT2(a, b) a##b
#define GKL_CAT(a, b) GKL_CAT2(a, b)

namespace gaussian_kl {
namespace cpu {

// dtype -> f(element tag). c10's Half and BFloat16 convert to float with
// plain bit operations, which vectorise.
template <typename F>
inline void with_dtype(ScalarKind kind, const F& f) {
  switch (kind) {
    case ScalarKind::Float: f(float{}); break;
    case ScalarKind::Double: f(double{}); break;
    case ScalarKind::Half: f(c10::Half{}); break;
    case ScalarKind::BFloat16: f(c10::BFloat16{}); break;
  }
}

}  // namespace cpu
}  // namespace gaussian_kl
