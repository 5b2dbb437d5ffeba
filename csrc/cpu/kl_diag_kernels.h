// Entry points of the diagonal-KL CPU row kernels, one call per chunk of
// rows (the caller runs them under at::parallel_for). Arguments as in
// kl_args.h; `out` is [N] contiguous, grad outputs [N, D] contiguous.
#pragma once

#include "../kl_args.h"

namespace gaussian_kl {
namespace cpu {

void kl_diag_forward_rows(
    ScalarKind kind, DiagParam param, const DiagRows& r, void* out, int64_t begin, int64_t end);

void kl_diag_backward_rows(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& r,
    const void* grad,
    int64_t grad_stride,
    const DiagGradOut& o,
    int64_t begin,
    int64_t end);

}  // namespace cpu
}  // namespace gaussian_kl
