// Forward row kernels of the diagonal KL (see kl_diag_rows.h).
#include <type_traits>

#include "kl_diag_kernels.h"
#include "kl_diag_rows.h"

namespace gaussian_kl {
namespace cpu {
namespace {

template <typename scalar_t, DiagParam P, bool HasQ>
GKL_CPU_CLONES void forward_rows_vec(const DiagRows r, scalar_t* out, int64_t begin, int64_t end) {
  forward_rows_body<scalar_t, P, HasQ, true>(r, out, begin, end);
}

template <typename scalar_t, DiagParam P, bool HasQ, bool Contig>
void forward_rows_generic(const DiagRows r, scalar_t* out, int64_t begin, int64_t end) {
  forward_rows_body<scalar_t, P, HasQ, Contig>(r, out, begin, end);
}

}  // namespace

void kl_diag_forward_rows(
    ScalarKind kind, DiagParam param, const DiagRows& r, void* out, int64_t begin, int64_t end) {
  dispatch_kind(kind, [&](auto tag) {
    using scalar_t = decltype(tag);
    scalar_t* o = static_cast<scalar_t*>(out);
    dispatch_diag_variant(param, r.has_q(), r.contiguous_cols(), [&](auto P, auto HQ, auto C) {
      constexpr DiagParam kP = decltype(P)::value;
      constexpr bool kHQ = decltype(HQ)::value;
      if constexpr (decltype(C)::value && !std::is_same<scalar_t, double>::value) {
        forward_rows_vec<scalar_t, kP, kHQ>(r, o, begin, end);
      } else {
        forward_rows_generic<scalar_t, kP, kHQ, decltype(C)::value>(r, o, begin, end);
      }
    });
  });
}

}  // namespace cpu
}  // namespace gaussian_kl
