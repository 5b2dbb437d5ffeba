// cpu/full_entry.h — the full-covariance half of a variant's kernel table
// (included by cpu/isa_*_full.cpp after cpu/variant_begin.h).
#pragma once

#if defined(GKL_VARIANT_BUILT)
#include "full_kernels.h"

void gaussian_kl::cpu::GKL_CAT(full_forward_, GKL_ISA)(ScalarKind kind, const FullRows& r, void* out, int64_t begin,
                                                       int64_t end) {
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    gaussian_kl::GKL_ISA::full_forward_typed<S>(r, static_cast<S*>(out), begin, end);
  });
}

void gaussian_kl::cpu::GKL_CAT(full_backward_, GKL_ISA)(ScalarKind kind, const FullRows& r, const void* grad,
                                                        int64_t gs, const FullGradOut& o, int64_t begin,
                                                        int64_t end) {
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    gaussian_kl::GKL_ISA::full_backward_typed<S>(r, static_cast<const S*>(grad), gs, o, begin, end);
  });
}
#endif
