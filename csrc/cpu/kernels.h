// cpu/kernels.h — the CPU kernels as a table of entry points, one table per
// instruction-set variant (cpu/isa_*.cpp compile the same kernel source for
// AVX-512, AVX2 and the x86-64 baseline; other compilers and machines get
// the portable build of it). kernels() is the variant in use: the best the
// CPU runs, or the one GKL_CPU_ISA names (read once, when the library
// loads; docs/architecture.md, "CPU variants"). No torch headers.
#pragma once

#include <cstdint>

#include "../math/problem.h"

namespace gaussian_kl {
namespace cpu {

// Rows [begin, end) of a problem; outputs as in math/problem.h, `out` [N]
// contiguous in the inputs' dtype, `grad` the incoming gradient per row
// (stride grad_stride).
struct DiagKernels {
  void (*forward)(ScalarKind, const DiagRows&, void* out, int64_t begin, int64_t end);
  void (*backward)(ScalarKind, const DiagRows&, const void* grad, int64_t grad_stride, const DiagGradOut&,
                   int64_t begin, int64_t end);
};
struct FullKernels {
  void (*forward)(ScalarKind, const FullRows&, void* out, int64_t begin, int64_t end);
  void (*backward)(ScalarKind, const FullRows&, const void* grad, int64_t grad_stride, const FullGradOut&,
                   int64_t begin, int64_t end);
};

// The diagonal kernels a variant compiles: float and half inputs with unit
// column strides (the vectorised loops); double and strided inputs gain
// nothing from wider vectors and run the baseline's (one copy, compile
// time). diag_vectorised() says which a problem is.
bool diag_vectorised(ScalarKind kind, const DiagRows& r);

struct Kernels {
  const char* isa;  // "avx512", "avx2", "baseline" or "portable"
  DiagKernels diag;      // the variant's (diag_vectorised problems)
  FullKernels full;
  DiagKernels diag_any;  // the baseline's (every problem)
  const DiagKernels& diag_for(ScalarKind kind, const DiagRows& r) const {
    return diag_vectorised(kind, r) ? diag : diag_any;
  }
};

// The variant in use.
const Kernels& kernels();

// Every variant this build has and this CPU runs, best first (tests run
// each; GKL_CPU_ISA picks one of them by name).
int available_variants(const Kernels** out, int max);

// The entry points of each variant (cpu/isa_*.cpp, compiled for that
// variant's instruction set: call one only where the CPU runs it); the
// diagonal ones of a variant take the vectorised problems, diag_*_generic
// the others.
#define GKL_DECLARE_VARIANT(isa)                                                                           \
  void diag_forward_##isa(ScalarKind, const DiagRows&, void*, int64_t, int64_t);                          \
  void diag_backward_##isa(ScalarKind, const DiagRows&, const void*, int64_t, const DiagGradOut&, int64_t, \
                           int64_t);                                                                     \
  void full_forward_##isa(ScalarKind, const FullRows&, void*, int64_t, int64_t);                          \
  void full_backward_##isa(ScalarKind, const FullRows&, const void*, int64_t, const FullGradOut&, int64_t, \
                           int64_t);
GKL_DECLARE_VARIANT(avx512)
GKL_DECLARE_VARIANT(avx2)
GKL_DECLARE_VARIANT(baseline)
#undef GKL_DECLARE_VARIANT
void diag_forward_generic(ScalarKind, const DiagRows&, void*, int64_t, int64_t);
void diag_backward_generic(ScalarKind, const DiagRows&, const void*, int64_t, const DiagGradOut&, int64_t, int64_t);

}  // namespace cpu
}  // namespace gaussian_kl
