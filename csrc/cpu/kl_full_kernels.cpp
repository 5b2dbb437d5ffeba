// CPU row kernels of the full-covariance KL (see kl_full_row.h): one row at
// a time on a per-chunk workspace of 5 D^2 + 3 D accumulators (L1/L2
// resident for D <= ~100); no B x D x D temporary. No torch headers.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <memory>
#include <type_traits>
#include <vector>

#include "../kl_full_row.h"
#include "kl_diag_rows.h"  // GKL_CPU_CLONES
#include "kl_full_batch.h"
#include "kl_full_mat16.h"
#include "kl_full_matn.h"
#include "kl_full_kernels.h"

namespace gaussian_kl {
namespace cpu {
namespace {

// dtype x (pp, pq, has q) -> f(element tag, PP, PQ, HasQ). Same-kind pairs
// (kl_full) may lack q; mixed pairs always have one.
template <typename F>
void dispatch_full(ScalarKind kind, FullParam pp, FullParam pq, bool has_q, const F& f) {
  dispatch_kind(kind, [&](auto tag) {
    if (pp == pq || !has_q) {
      dispatch_full_variant(pp, has_q, [&](auto p, auto hq) { f(tag, p, p, hq); });
    } else {
      dispatch_mixed_variant(pp, pq, [&](auto p, auto q) { f(tag, p, q, std::true_type{}); });
    }
  });
}

// Elementary functions: the O(D^3) same-kind pairs spend their time in
// solves (libm is as fast there); the O(D^2) mixed pairs with a diagonal q
// spend it in D logs/expm1 per row, which FastMath evaluates inline and in
// vectors (<= 2.5 ulp, float; double uses libm either way).
template <FullParam PP, FullParam PQ>
using RowMath = std::conditional_t<PP != PQ, FastMath, StdMath>;

// A chunk's row workspace, 64-byte aligned (for D a multiple of 16 floats
// every row of its matrices starts a cache line: no split vector accesses).
template <typename A>
class RowWork {
 public:
  explicit RowWork(int64_t D) : buf_(FullWork<A>::size(D) + 64 / sizeof(A)) {
    void* p = buf_.data();
    size_t space = buf_.size() * sizeof(A);
    base_ = static_cast<A*>(std::align(64, FullWork<A>::size(D) * sizeof(A), p, space));
  }
  A* data() const { return base_; }

 private:
  std::vector<A> buf_;
  A* base_;
};

// Rows [begin, end) with the event size fixed at compile time (DC > 0) for
// small D, or read at run time (DC = 0). Compiled per ISA (GKL_CPU_CLONES,
// everything below inlined into the clone) so the unit-stride axpys of
// kl_math.h vectorise with the widest vectors the CPU has.
template <typename S, FullParam PP, FullParam PQ, bool HasQ, int DC>
GKL_CPU_CLONES void forward_chunk(const FullRows& r, S* o, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  const RowWork<A> ws(r.dim);
  const FullWork<A> w(ws.data(), static_cast<int>(r.dim));
  for (int64_t row = begin; row < end; ++row) {
    o[row] = static_cast<S>(full_row_forward<PP, PQ, HasQ, RowMath<PP, PQ>, S, DC>(r, row, w));
  }
}

template <typename S, FullParam PP, FullParam PQ, bool HasQ, int DC>
GKL_CPU_CLONES void backward_chunk(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o,
                                   int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  const RowWork<A> ws(r.dim);
  const FullWork<A> w(ws.data(), static_cast<int>(r.dim));
  for (int64_t row = begin; row < end; ++row) {
    full_row_backward<PP, PQ, HasQ, RowMath<PP, PQ>, S, DC>(r, row, static_cast<A>(g[row * gs]), w, o);
  }
}

// scale_tril with a small compile-time D: W rows per vector (kl_full_batch.h),
// or one vector per matrix row for float D = 16 (kl_full_mat16.h), D / 16
// for float D = 32, 64 (kl_full_matn.h).
template <typename S, bool HasQ, int DC>
GKL_CPU_CLONES void forward_chunk_batch(const FullRows& r, S* o, int64_t begin, int64_t end) {
#ifdef GKL_HAVE_MAT16
  if constexpr (std::is_same<S, float>::value && DC == mat16::D) {
    if (mat16::usable(r)) return mat16::forward<HasQ>(r, o, begin, end);
  }
#endif
#ifdef GKL_HAVE_MATN
  if constexpr (std::is_same<S, float>::value && (DC == 32 || DC == 64)) {
    if (matn::usable(r)) return matn::forward<DC / 16, HasQ>(r, o, begin, end);
  }
#endif
  batch_forward<S, HasQ, DC>(r, o, begin, end);
}

template <typename S, bool HasQ, int DC>
GKL_CPU_CLONES void backward_chunk_batch(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o,
                                         int64_t begin, int64_t end) {
#ifdef GKL_HAVE_MAT16
  if constexpr (std::is_same<S, float>::value && DC == mat16::D) {
    if (mat16::usable(r)) return mat16::backward<HasQ>(r, g, gs, o, begin, end);
  }
#endif
#ifdef GKL_HAVE_MATN
  if constexpr (std::is_same<S, float>::value && (DC == 32 || DC == 64)) {
    if (matn::usable(r)) return matn::backward<DC / 16, HasQ>(r, g, gs, o, begin, end);
  }
#endif
  batch_backward<S, HasQ, DC>(r, g, gs, o, begin, end);
}

// Calls f(std::integral_constant<int, DC>) with DC = D for the specialised
// sizes (float and double kl_full only; 32 and 64 only for the scale_tril
// batch kernels, Batch), 0 otherwise.
template <typename S, bool Specialise, bool Batch, typename F>
void dispatch_dim(int64_t D, const F& f) {
  if constexpr (Specialise && (std::is_same<S, float>::value || std::is_same<S, double>::value)) {
    switch (D) {
      case 2: return f(std::integral_constant<int, 2>{});
      case 3: return f(std::integral_constant<int, 3>{});
      case 4: return f(std::integral_constant<int, 4>{});
      case 8: return f(std::integral_constant<int, 8>{});
      case 16: return f(std::integral_constant<int, 16>{});
      default: break;
    }
    if constexpr (Batch) {
      if (D == 32) return f(std::integral_constant<int, 32>{});
      if (D == 64) return f(std::integral_constant<int, 64>{});
    }
  }
  f(std::integral_constant<int, 0>{});
}

}  // namespace

void kl_full_forward_rows(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, void* out, int64_t begin,
    int64_t end) {
  dispatch_full(kind, pp, pq, r.has_q(), [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    constexpr FullParam kPP = decltype(PP)::value, kPQ = decltype(PQ)::value;
    constexpr bool kHQ = decltype(HQ)::value;
    S* o = static_cast<S*>(out);
    constexpr bool kBatch = kPP == FullParam::ScaleTril && kPQ == FullParam::ScaleTril;
    dispatch_dim<S, kPP == kPQ, kBatch>(r.dim, [&](auto DC) {
      if constexpr (kBatch && decltype(DC)::value > 0) {
        forward_chunk_batch<S, kHQ, decltype(DC)::value>(r, o, begin, end);
      } else {
        forward_chunk<S, kPP, kPQ, kHQ, decltype(DC)::value>(r, o, begin, end);
      }
    });
  });
}

void kl_full_backward_rows(
    ScalarKind kind,
    FullParam pp,
    FullParam pq,
    const FullRows& r,
    const void* grad,
    int64_t grad_stride,
    const FullGradOut& o,
    int64_t begin,
    int64_t end) {
  dispatch_full(kind, pp, pq, r.has_q(), [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    constexpr FullParam kPP = decltype(PP)::value, kPQ = decltype(PQ)::value;
    constexpr bool kHQ = decltype(HQ)::value;
    const S* g = static_cast<const S*>(grad);
    constexpr bool kBatch = kPP == FullParam::ScaleTril && kPQ == FullParam::ScaleTril;
    dispatch_dim<S, kPP == kPQ, kBatch>(r.dim, [&](auto DC) {
      if constexpr (kBatch && decltype(DC)::value > 0) {
        backward_chunk_batch<S, kHQ, decltype(DC)::value>(r, g, grad_stride, o, begin, end);
      } else {
        backward_chunk<S, kPP, kPQ, kHQ, decltype(DC)::value>(r, g, grad_stride, o, begin, end);
      }
    });
  });
}

}  // namespace cpu
}  // namespace gaussian_kl
