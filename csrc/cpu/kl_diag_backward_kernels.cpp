// Backward row kernels of the diagonal KL (see kl_diag_rows.h).
#include <type_traits>

#include "kl_diag_kernels.h"
#include "kl_diag_rows.h"

namespace gaussian_kl {
namespace cpu {
namespace {

template <typename scalar_t, DiagParam P, bool HasQ>
GKL_CPU_CLONES void backward_rows_vec(
    const DiagRows r, const scalar_t* g, int64_t gs, const DiagGradOut o, int64_t begin, int64_t end) {
  backward_rows_body<scalar_t, P, HasQ, true>(r, g, gs, o, begin, end);
}

template <typename scalar_t, DiagParam P, bool HasQ, bool Contig>
void backward_rows_generic(
    const DiagRows r, const scalar_t* g, int64_t gs, const DiagGradOut o, int64_t begin, int64_t end) {
  backward_rows_body<scalar_t, P, HasQ, Contig>(r, g, gs, o, begin, end);
}

}  // namespace

void kl_diag_backward_rows(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& r,
    const void* grad,
    int64_t grad_stride,
    const DiagGradOut& o,
    int64_t begin,
    int64_t end) {
  dispatch_kind(kind, [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* g = static_cast<const scalar_t*>(grad);
    dispatch_diag_variant(param, r.has_q(), r.contiguous_cols(), [&](auto P, auto HQ, auto C) {
      constexpr DiagParam kP = decltype(P)::value;
      constexpr bool kHQ = decltype(HQ)::value;
      if constexpr (decltype(C)::value && !std::is_same<scalar_t, double>::value) {
        backward_rows_vec<scalar_t, kP, kHQ>(r, g, grad_stride, o, begin, end);
      } else {
        backward_rows_generic<scalar_t, kP, kHQ, decltype(C)::value>(r, g, grad_stride, o, begin, end);
      }
    });
  });
}

}  // namespace cpu
}  // namespace gaussian_kl
