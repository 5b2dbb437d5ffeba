// kl_full_row.h — one batch element of the full-covariance KL, forward and
// backward, on D x D workspaces. Host/device code over kl_math.h, used by the
// CPU kernels (one call per row, at::parallel_for over rows) and the CUDA
// kernels (one thread per row for small D). No torch headers.
#pragma once

#include "kl_args.h"
#include "kl_math.h"

namespace gaussian_kl {

// Workspace of one row: 5 D*D + 3 D accumulators.
template <typename A>
struct FullWork {
  A *Lp, *Lq, *E, *S, *T, *mp, *b, *y;
  GKL_INLINE explicit FullWork(A* base, int D) {
    Lp = base;
    Lq = Lp + D * D;
    E = Lq + D * D;
    S = E + D * D;
    T = S + D * D;
    mp = T + D * D;
    b = mp + D;
    y = b + D;
  }
  static constexpr int64_t size(int64_t D) { return 5 * D * D + 3 * D; }
};

// Loads row `row` and computes Lp, Lq (identity when there is no q), E, b.
// Returns x - x summed over every value read (NaN if any is not finite, else
// 0) or NaN if a factorisation failed / a scale_tril diagonal is not > 0
// (the latter via full_kl2's diagonal terms).
// DC > 0: the event size as a compile-time constant (small-D kernels: the
// loops unroll and the workspace stays in registers / L1); 0: r.dim.
template <int DC>
GKL_INLINE int event_size(const FullRows& r) {
  return DC > 0 ? DC : static_cast<int>(r.dim);
}

template <FullParam P, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE A full_prepare(const FullRows& r, int64_t row, const FullWork<A>& w) {
  const int D = event_size<DC>(r);
  A bad = A(0);
  const S* mu_p = static_cast<const S*>(r.mu_p) + row * r.mu_rs[0];
  const S* m_p = static_cast<const S*>(r.m_p) + row * r.m_rs[0];
  for (int i = 0; i < D; ++i) {
    const A v = kl_load(mu_p[i * r.mu_cs[0]]);
    w.mp[i] = v;
    bad += v - v;
    for (int j = 0; j <= i; ++j) {  // lower triangle only (the rest is ignored)
      const A x = kl_load(m_p[i * r.m_s0[0] + j * r.m_s1[0]]);
      bad += x - x;
      w.Lp[i * D + j] = x;
    }
  }
  if (P == FullParam::Cov && !cholesky_lower<M>(w.Lp, D)) bad = kl_nan<A>();
  if (HasQ) {
    const S* mu_q = static_cast<const S*>(r.mu_q) + row * r.mu_rs[1];
    for (int i = 0; i < D; ++i) {
      const A v = kl_load(mu_q[i * r.mu_cs[1]]);
      bad += v - v;
      w.b[i] = v - w.mp[i];  // delta
    }
    if (r.lq_shared != nullptr) {  // factored once by the host
      const A* l = static_cast<const A*>(r.lq_shared);
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j <= i; ++j) w.Lq[i * D + j] = l[i * D + j];
      }
      bad += l[0] - l[0];  // NaN-filled when the shared covariance is not PD
    } else {
      const S* m_q = static_cast<const S*>(r.m_q) + row * r.m_rs[1];
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j <= i; ++j) {
          const A x = kl_load(m_q[i * r.m_s0[1] + j * r.m_s1[1]]);
          bad += x - x;
          w.Lq[i * D + j] = x;
        }
      }
      if (P == FullParam::Cov && !cholesky_lower<M>(w.Lq, D)) bad = kl_nan<A>();
    }
    solve_e(w.Lp, w.Lq, w.E, D);
    trsv_lower(w.Lq, w.b, D);
  } else {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        w.Lq[i * D + j] = i == j ? A(1) : A(0);
        w.E[i * D + j] = w.Lp[i * D + j] - (i == j ? A(1) : A(0));
      }
      w.b[i] = -w.mp[i];
    }
  }
  return bad;
}

// KL of one row.
template <FullParam P, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE A full_row_forward(const FullRows& r, int64_t row, const FullWork<A>& w) {
  const A bad = full_prepare<P, HasQ, M, S, DC>(r, row, w);
  const int D = event_size<DC>(r);
  return A(0.5) * (full_kl2<M>(w.Lp, w.Lq, w.E, w.b, D, HasQ) + bad);
}

// Gradients of g * KL of one row, written to the outputs of o that are not
// null: means [D], matrices [D, D] row-major, lower triangular for
// scale_tril (the upper triangle was never read: gradient 0), symmetric for
// cov:  dSp = (Sq^-1 - Sp^-1) / 2,  dSq = -Lq^-T S Lq^-1 / 2 (S as in
// full_grad_tril: the cancellation-free form of Sq^-1 (Sp + dd^T) Sq^-1).
template <FullParam P, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE void full_row_backward(
    const FullRows& r, int64_t row, A g, const FullWork<A>& w, const FullGradOut& o) {
  const int D = event_size<DC>(r);
  full_prepare<P, HasQ, M, S, DC>(r, row, w);
  if (P == FullParam::ScaleTril) {
    // gLp -> w.T, gLq -> w.S (built in place of the S it consumes), y = Lq^-T b.
    full_grad_tril(w.Lp, w.Lq, w.E, w.b, D, w.T, w.S, w.y, w.S);
  } else {
    for (int i = 0; i < D; ++i) w.y[i] = w.b[i];
    trsv_lower_t(w.Lq, w.y, D);
  }
  S* gmp = o.grad[0] ? static_cast<S*>(o.grad[0]) + row * D : nullptr;
  S* gmq = o.grad[2] ? static_cast<S*>(o.grad[2]) + row * D : nullptr;
  for (int i = 0; i < D; ++i) {
    if (gmp) gmp[i] = kl_store<S>(-g * w.y[i]);
    if (gmq) gmq[i] = kl_store<S>(g * w.y[i]);
  }
  S* gp = o.grad[1] ? static_cast<S*>(o.grad[1]) + row * D * D : nullptr;
  S* gq = o.grad[3] ? static_cast<S*>(o.grad[3]) + row * D * D : nullptr;
  if (P == FullParam::ScaleTril) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < D; ++j) {
        if (gp) gp[i * D + j] = kl_store<S>(j <= i ? g * w.T[i * D + j] : A(0));
        if (gq) gq[i * D + j] = kl_store<S>(j <= i ? g * w.S[i * D + j] : A(0));
      }
    }
    return;
  }
  // Cov. Recompute S = E + E^T + E E^T + b b^T into w.T (gLp is not needed).
  A* Sm = w.T;
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j <= i; ++j) {
      A s = w.b[i] * w.b[j] + w.E[i * D + j] + (i == j ? w.E[i * D + j] : A(0));
      for (int k = 0; k <= j; ++k) s += w.E[i * D + k] * w.E[j * D + k];
      Sm[i * D + j] = s;
      Sm[j * D + i] = s;
    }
  }
  // Lq <- Lq^-1, Lp <- Lp^-1 (in place), then Sigma^-1 = Li^T Li.
  tri_inverse_lower(w.Lq, D);
  if (gq) {
    congruence_lt(w.Lq, Sm, w.S, w.E, D);  // E <- Lq^-T S Lq^-1 (E no longer needed)
    for (int i = 0; i < D * D; ++i) gq[i] = kl_store<S>(A(-0.5) * g * w.E[i]);
  }
  if (gp) {
    tri_inverse_lower(w.Lp, D);
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        A s = A(0);
        for (int k = i; k < D; ++k) s += w.Lq[k * D + i] * w.Lq[k * D + j] - w.Lp[k * D + i] * w.Lp[k * D + j];
        gp[i * D + j] = kl_store<S>(A(0.5) * g * s);
        gp[j * D + i] = kl_store<S>(A(0.5) * g * s);
      }
    }
  }
}

}  // namespace gaussian_kl
