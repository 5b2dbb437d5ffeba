// CPU row kernels of the full-covariance KL (see kl_full_row.h): one row at
// a time on a per-chunk workspace of 5 D^2 + 3 D accumulators (L1/L2
// resident for D <= ~100); no B x D x D temporary. No torch headers.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <vector>

#include "../kl_full_row.h"
#include "kl_full_kernels.h"

namespace gaussian_kl {
namespace cpu {
namespace {

template <typename F>
void dispatch_full(ScalarKind kind, FullParam param, bool has_q, const F& f) {
  auto with_q = [&](auto tag, auto p) {
    if (has_q) f(tag, p, std::true_type{});
    else f(tag, p, std::false_type{});
  };
  auto with_p = [&](auto tag) {
    if (param == FullParam::Cov) with_q(tag, std::integral_constant<FullParam, FullParam::Cov>{});
    else with_q(tag, std::integral_constant<FullParam, FullParam::ScaleTril>{});
  };
  switch (kind) {
    case ScalarKind::Float: with_p(float{}); break;
    case ScalarKind::Double: with_p(double{}); break;
    case ScalarKind::Half: with_p(c10::Half{}); break;
    case ScalarKind::BFloat16: with_p(c10::BFloat16{}); break;
  }
}

}  // namespace

void kl_full_forward_rows(
    ScalarKind kind, FullParam param, const FullRows& r, void* out, int64_t begin, int64_t end) {
  dispatch_full(kind, param, r.has_q(), [&](auto tag, auto P, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    std::vector<A> ws(FullWork<A>::size(r.dim));
    const FullWork<A> w(ws.data(), static_cast<int>(r.dim));
    S* o = static_cast<S*>(out);
    for (int64_t row = begin; row < end; ++row) {
      o[row] = static_cast<S>(full_row_forward<decltype(P)::value, decltype(HQ)::value, StdMath, S>(r, row, w));
    }
  });
}

void kl_full_backward_rows(
    ScalarKind kind,
    FullParam param,
    const FullRows& r,
    const void* grad,
    int64_t grad_stride,
    const FullGradOut& o,
    int64_t begin,
    int64_t end) {
  dispatch_full(kind, param, r.has_q(), [&](auto tag, auto P, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    std::vector<A> ws(FullWork<A>::size(r.dim));
    const FullWork<A> w(ws.data(), static_cast<int>(r.dim));
    const S* g = static_cast<const S*>(grad);
    for (int64_t row = begin; row < end; ++row) {
      full_row_backward<decltype(P)::value, decltype(HQ)::value, StdMath, S>(
          r, row, static_cast<A>(g[row * grad_stride]), w, o);
    }
  });
}

}  // namespace cpu
}  // namespace gaussian_kl
