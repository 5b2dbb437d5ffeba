// Entry points of the full-covariance CPU row kernels (one call per chunk of
// rows, run under at::parallel_for by kl_full_cpu.cpp). pp, pq: the kind of
// each side; pp == pq is kl_full (pq ignored without q), pp != pq kl_mixed.
#pragma once

#include "../kl_args.h"

namespace gaussian_kl {
namespace cpu {

void kl_full_forward_rows(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, void* out, int64_t begin,
    int64_t end);

void kl_full_backward_rows(
    ScalarKind kind,
    FullParam pp,
    FullParam pq,
    const FullRows& r,
    const void* grad,
    int64_t grad_stride,
    const FullGradOut& o,
    int64_t begin,
    int64_t end);

}  // namespace cpu
}  // namespace gaussian_kl
