// kl_full_row.h — one batch element of the full-covariance KL, forward and
// backward, on D x D workspaces. Host/device code over kl_math.h, used by the
// CPU kernels (one call per row, at::parallel_for over rows) and the CUDA
// kernels (one thread per row for small D). No torch headers.
//
// Each side is a FullParam: ScaleTril, Cov or Diag (a diagonal covariance
// given as a [D] vector in r.diag_param; the mixed pairs of kl_mixed). A
// diagonal side is loaded as its standard deviations on the diagonal of L
// (off-diagonal untouched: never read). A diagonal q costs O(D^2) per row:
// no factorisation and no solve (E_ij = Lp_ij / sq_i - [i == j]).
#pragma once

#include "kl_args.h"
#include "kl_math.h"
#if !defined(__CUDACC__) && defined(__GNUC__)
#include "kl_tiled.h"
#define GKL_HAVE_TILED 1
#endif

namespace gaussian_kl {

// Workspace of one row: 6 D*D + 3 D accumulators (U: scratch of the tiled
// S products).
template <typename A>
struct FullWork {
  A *Lp, *Lq, *E, *S, *T, *U, *mp, *b, *y;
  GKL_INLINE explicit FullWork(A* base, int D) {
    Lp = base;
    Lq = Lp + D * D;
    E = Lq + D * D;
    S = E + D * D;
    T = S + D * D;
    U = T + D * D;
    mp = U + D * D;
    b = mp + D;
    y = b + D;
  }
  static constexpr int64_t size(int64_t D) { return 6 * D * D + 3 * D; }
};

// DC > 0: the event size as a compile-time constant (small-D kernels: the
// loops unroll and the workspace stays in registers / L1); 0: r.dim.
template <int DC>
GKL_INLINE int event_size(const FullRows& r) {
  return DC > 0 ? DC : static_cast<int>(r.dim);
}

// Standard deviation from a diagonal parameter (see DiagParam).
template <typename M, typename A>
GKL_INLINE A diag_param_std(A s, DiagParam P) {
  switch (P) {
    case DiagParam::Std: return s;
    case DiagParam::Var: return M::sqrt(s);  // NaN for s < 0; s == 0 is caught as sd <= 0
    case DiagParam::LogVar: return M::exp(A(0.5) * s);
    default: return M::exp(s);  // LogStd
  }
}

// g * d(sd)/d(param): the gradient w.r.t. a standard deviation sd taken to
// the diagonal parameter it was computed from.
template <typename A>
GKL_INLINE A diag_std_chain(A g, A sd, DiagParam P) {
  switch (P) {
    case DiagParam::Std: return g;
    case DiagParam::Var: return A(0.5) * g / sd;
    case DiagParam::LogVar: return A(0.5) * g * sd;
    default: return g * sd;  // LogStd
  }
}

// Loads side k (0 = p, 1 = q) of row `row` into L: the lower triangle (and
// its Cholesky factor for Cov), or the standard deviations on the diagonal
// (Diag). Returns x - x summed over every value read (NaN if one is not
// finite) or NaN when a factorisation fails. A non-positive scale_tril or
// diagonal std is left in place: full_kl2's diagonal terms turn it into NaN.
template <FullParam P, typename M, typename S, int DC, typename A>
GKL_INLINE A load_side(const FullRows& r, int k, int64_t row, A* L) {
  const int D = event_size<DC>(r);
  A bad = A(0);
  const S* m = static_cast<const S*>(k == 0 ? r.m_p : r.m_q) + row * r.m_rs[k];
  if (P == FullParam::Diag) {
    for (int i = 0; i < D; ++i) {
      const A x = kl_load(m[i * r.m_s0[k]]);
      bad += x - x;
      L[i * D + i] = diag_param_std<M>(x, r.diag_param);
    }
    return bad;
  }
  if (k == 1 && r.lq_shared != nullptr) {  // a shared q covariance, factored once by the host
    const A* l = static_cast<const A*>(r.lq_shared);
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) L[i * D + j] = l[i * D + j];
    }
    return l[0] - l[0];  // NaN-filled when the shared covariance is not PD
  }
  const int64_t s1 = r.m_s1[k];
#if !defined(__CUDACC__)
  if (r.m_s0[k] == 1 && s1 != 1 && D >= 32) {
    // Column-major (torch.linalg.cholesky's layout) and large: 16 x 16
    // blocks, each read column by column in memory order (row by row, every
    // element of the triangle would be a cache line of its own).
    constexpr int kB = 16;
    A acc[kB] = {};  // x - x per row of a block (independent sums)
    for (int j0 = 0; j0 < D; j0 += kB) {
      for (int i0 = j0; i0 < D; i0 += kB) {
        const int i2 = i0 + kB < D ? i0 + kB : D;
        for (int j = j0; j < j0 + kB && j < D; ++j) {
          const S* mj = m + j * s1;
          for (int i = i0 > j ? i0 : j; i < i2; ++i) {
            const A x = kl_load(mj[i]);
            L[i * D + j] = x;
            acc[i - i0] += x - x;
          }
        }
      }
    }
    for (int t = 0; t < kB; ++t) bad += acc[t];
    if (P == FullParam::Cov && !cholesky_lower<M>(L, D)) bad = kl_nan<A>();
    return bad;
  }
#endif
  for (int i = 0; i < D; ++i) {  // lower triangle only (the rest is ignored)
    const S* mi = m + i * r.m_s0[k];
    A* li = L + i * D;
    auto ld = [&](int j) {
      const A x = kl_load(mi[j * s1]);
      li[j] = x;
      return x - x;
    };
    auto ld_unit = [&](int j) {
      const A x = kl_load(mi[j]);
      li[j] = x;
      return x - x;
    };
    bad += s1 == 1 ? lane_sum<dot_lanes<A>(), A>(i + 1, ld_unit) : lane_sum<dot_lanes<A>(), A>(i + 1, ld);
  }
  if (P == FullParam::Cov && !cholesky_lower<M>(L, D)) bad = kl_nan<A>();
  return bad;
}

// The O(D^3) routines of a row: register-tiled (kl_tiled.h) on the CPU for
// large D, the plain kl_math.h loops otherwise.
GKL_INLINE bool tiled_rows(int D) {
#ifdef GKL_HAVE_TILED
  return D >= tiled::kMinD && tiled::available();
#else
  (void)D;
  return false;
#endif
}
template <typename A>
GKL_INLINE void solve_e_rows(const A* Lp, const A* Lq, A* E, int D) {
#ifdef GKL_HAVE_TILED
  if (tiled_rows(D)) return tiled::solve_e(Lp, Lq, E, D);
#endif
  solve_e(Lp, Lq, E, D);
}
template <typename A>
GKL_INLINE void tril_solve_lt_rows(const A* Lq, const A* R, A* X, int D) {
#ifdef GKL_HAVE_TILED
  if (tiled_rows(D)) return tiled::tril_solve_lt(Lq, R, X, D);
#endif
  tril_solve_lt(Lq, R, X, D);
}

// Loads row `row` and computes Lp, Lq (identity when there is no q), E, b:
// E = Lq^-1 (Lp - Lq), b = Lq^-1 delta. Returns the validity term of
// load_side for both sides (0 or NaN).
template <FullParam PP, FullParam PQ, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE A full_prepare(const FullRows& r, int64_t row, const FullWork<A>& w) {
  const int D = event_size<DC>(r);
  A bad = A(0);
  const S* mu_p = static_cast<const S*>(r.mu_p) + row * r.mu_rs[0];
  for (int i = 0; i < D; ++i) {
    const A v = kl_load(mu_p[i * r.mu_cs[0]]);
    w.mp[i] = v;
    bad += v - v;
  }
  if (PP == FullParam::Diag) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < i; ++j) w.Lp[i * D + j] = A(0);
    }
  }
  bad += load_side<PP, M, S, DC>(r, 0, row, w.Lp);
  if (!HasQ) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        w.Lq[i * D + j] = i == j ? A(1) : A(0);
        w.E[i * D + j] = w.Lp[i * D + j] - (i == j ? A(1) : A(0));
      }
      w.b[i] = -w.mp[i];
    }
    return bad;
  }
  const S* mu_q = static_cast<const S*>(r.mu_q) + row * r.mu_rs[1];
  for (int i = 0; i < D; ++i) {
    const A v = kl_load(mu_q[i * r.mu_cs[1]]);
    bad += v - v;
    w.b[i] = v - w.mp[i];  // delta
  }
  bad += load_side<PQ, M, S, DC>(r, 1, row, w.Lq);
  if (PQ == FullParam::Diag) {
    // Lq = diag(sq): E_ij = Lp_ij / sq_i, E_ii = (Lp_ii - sq_i) / sq_i, b = delta / sq.
    for (int i = 0; i < D; ++i) {
      const A sq = w.Lq[i * D + i];
      const A inv = A(1) / sq;
      for (int j = 0; j < i; ++j) w.E[i * D + j] = w.Lp[i * D + j] * inv;
      w.E[i * D + i] = (w.Lp[i * D + i] - sq) * inv;
      w.b[i] *= inv;
    }
    return bad;
  }
  solve_e_rows(w.Lp, w.Lq, w.E, D);
  trsv_lower(w.Lq, w.b, D);
  return bad;
}

// Output k's D x D gradient <- scale * tril(X) (0 above the diagonal), in
// the output's layout. Column-major on the host: 16 x 16 blocks written
// column by column (row by row, every element would be a cache line of its
// own).
template <typename S, typename A>
GKL_INLINE void store_tril_grad(const FullGradOut& o, int k, S* dst, const A* X, A scale, int D) {
#if !defined(__CUDACC__)
  if (o.col_major[k]) {
    constexpr int kB = 16;
    for (int j0 = 0; j0 < D; j0 += kB) {
      for (int i0 = 0; i0 < D; i0 += kB) {
        for (int j = j0; j < j0 + kB && j < D; ++j) {
          S* dj = dst + static_cast<int64_t>(j) * D;
          for (int i = i0; i < i0 + kB && i < D; ++i) dj[i] = kl_store<S>(j <= i ? scale * X[i * D + j] : A(0));
        }
      }
    }
    return;
  }
#endif
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j < D; ++j) dst[o.at(k, i, j, D)] = kl_store<S>(j <= i ? scale * X[i * D + j] : A(0));
  }
}

// scale_tril p against a diagonal q, streamed: no workspace, one pass over
// the lower triangle of Lp. Row i of A = Lq^-1 Lp is Lp_i / sq_i, so
//   2 KL = sum_i [ sum_{j<i} (Lp_ij / sq_i)^2 + phi(2 log(Lp_ii / sq_i)) + (delta_i / sq_i)^2 ].
// Returns {sum_{j<i} A_ij^2, A_ii, sq_i, b_i} per row i through f(i, ...).
template <typename M, typename S, int DC, typename A, typename F>
GKL_INLINE A tril_diag_rows(const FullRows& r, int64_t row, const F& f) {
  constexpr int L = sizeof(A) == 4 ? 8 : 4;
  const int D = event_size<DC>(r);
  const S* mu_p = static_cast<const S*>(r.mu_p) + row * r.mu_rs[0];
  const S* mu_q = static_cast<const S*>(r.mu_q) + row * r.mu_rs[1];
  const S* m_p = static_cast<const S*>(r.m_p) + row * r.m_rs[0];
  const S* s_q = static_cast<const S*>(r.m_q) + row * r.m_rs[1];
  const int64_t s0 = r.m_s0[0], s1 = r.m_s1[0];
  A bad = A(0);
  for (int i = 0; i < D; ++i) {
    const A xq = kl_load(s_q[i * r.m_s0[1]]);
    const A sq = diag_param_std<M>(xq, r.diag_param);
    const A inv = A(1) / sq;
    const S* li = m_p + i * s0;
    auto sq_of = [&](int j) { const A y = kl_load(li[j * s1]) * inv; return y * y; };
    auto sq_of_unit = [&](int j) { const A y = kl_load(li[j]) * inv; return y * y; };
    const A off = s1 == 1 ? lane_sum<L, A>(i, sq_of_unit) : lane_sum<L, A>(i, sq_of);
    // NaN for a non-finite entry: off is NaN, or inf (then look closer: a
    // finite but huge entry is a valid +inf, not NaN).
    if (!(off < kl_max<A>())) {
      for (int j = 0; j < i; ++j) { const A x = kl_load(li[j * s1]); bad += x - x; }
    }
    const A mp = kl_load(mu_p[i * r.mu_cs[0]]), mq = kl_load(mu_q[i * r.mu_cs[1]]);
    bad += (mp - mp) + (mq - mq) + (xq - xq);
    f(i, off, kl_load(li[i * s1]), sq, (mq - mp) * inv);
  }
  return bad;
}

// The diagonal terms (a log and an expm1 each) go through a second,
// vectorisable loop over the D values kept in the workspace.
template <typename M, typename S, int DC, typename A>
GKL_INLINE A tril_diag_forward(const FullRows& r, int64_t row, const FullWork<A>& w) {
  constexpr int L = sizeof(A) == 4 ? 8 : 4;
  A off_sum = A(0);
  const A bad = tril_diag_rows<M, S, DC, A>(r, row, [&](int i, A off, A lpii, A sq, A b) {
    off_sum += off;
    w.mp[i] = lpii;
    w.b[i] = sq;
    w.y[i] = b;
  });
  const A diag = lane_sum<L, A>(event_size<DC>(r), [&](int i) {
    return diag_term2<DiagParam::Std, true, M>(A(0), w.mp[i], A(0), w.b[i]) + w.y[i] * w.y[i];
  });
  return A(0.5) * (off_sum + diag + bad);
}

// Gradients of g * KL (formulas of full_row_backward with Lq = diag(sq)):
//   dLp_ij = Lp_ij / vq_i (j < i),  dLp_ii = E_ii / sq_i + E_ii / Lp_ii,
//   dsq_i = -S_ii / sq_i,  S_ii = sum_{j<i} A_ij^2 + E_ii (2 + E_ii) + b_i^2,
//   dmu_q = -dmu_p = b / sq,  with E_ii = (Lp_ii - sq_i) / sq_i.
template <typename M, typename S, int DC, typename A>
GKL_INLINE void tril_diag_backward(const FullRows& r, int64_t row, A g, const FullGradOut& o) {
  const int D = event_size<DC>(r);
  S* gmp = o.grad[0] ? static_cast<S*>(o.grad[0]) + row * D : nullptr;
  S* gp = o.grad[1] ? static_cast<S*>(o.grad[1]) + row * D * D : nullptr;
  S* gmq = o.grad[2] ? static_cast<S*>(o.grad[2]) + row * D : nullptr;
  S* gq = o.grad[3] ? static_cast<S*>(o.grad[3]) + row * D : nullptr;
  const S* m_p = static_cast<const S*>(r.m_p) + row * r.m_rs[0];
  const int64_t s0 = r.m_s0[0], s1 = r.m_s1[0];
  tril_diag_rows<M, S, DC, A>(r, row, [&](int i, A off, A lpii, A sq, A b) {
    const A inv = A(1) / sq;
    const A eii = (lpii - sq) * inv;
    if (gp) {
      const S* li = m_p + i * s0;
      const A c = g * inv * inv;
      if (!o.col_major[1]) {
        S* go = gp + i * D;
        if (s1 == 1) {
          for (int j = 0; j < i; ++j) go[j] = kl_store<S>(c * kl_load(li[j]));
        } else {
          for (int j = 0; j < i; ++j) go[j] = kl_store<S>(c * kl_load(li[j * s1]));
        }
        for (int j = i + 1; j < D; ++j) go[j] = kl_store<S>(A(0));
      } else {
        for (int j = 0; j < i; ++j) gp[o.at(1, i, j, D)] = kl_store<S>(c * kl_load(li[j * s1]));
        for (int j = i + 1; j < D; ++j) gp[o.at(1, i, j, D)] = kl_store<S>(A(0));
      }
      gp[o.at(1, i, i, D)] = kl_store<S>(g * (eii * inv + eii / lpii));
    }
    const A y = b * inv;
    if (gmp) gmp[i] = kl_store<S>(-g * y);
    if (gmq) gmq[i] = kl_store<S>(g * y);
    if (gq) {
      const A sii = off + eii * (A(2) + eii) + b * b;
      gq[i] = kl_store<S>(diag_std_chain(-g * sii * inv, sq, r.diag_param));
    }
  });
}

// KL of one row.
template <FullParam PP, FullParam PQ, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE A full_row_forward(const FullRows& r, int64_t row, const FullWork<A>& w) {
  if constexpr (PP == FullParam::ScaleTril && PQ == FullParam::Diag && HasQ) {
    return tril_diag_forward<M, S, DC, A>(r, row, w);
  }
  const A bad = full_prepare<PP, PQ, HasQ, M, S, DC>(r, row, w);
  const int D = event_size<DC>(r);
  return A(0.5) * (full_kl2<M>(w.Lp, w.Lq, w.E, w.b, D, HasQ) + bad);
}

// Lower triangle (or, with Full, all) of S = E + E^T + E E^T + b b^T, the
// cancellation-free form of A A^T + b b^T - I (E lower triangular: the
// E E^T entry (i, j), j <= i, sums k <= j), as unit-stride dot products.
template <bool Full, typename A>
GKL_INLINE void full_s(const A* E, const A* b, int D, A* S) {
  for (int i = 0; i < D; ++i) {
    const A* ei = E + i * D;
    for (int j = 0; j <= i; ++j) {
      const A* ej = E + j * D;
      A s = b[i] * b[j] + ei[j] + (i == j ? ei[j] : A(0));
      for (int k = 0; k <= j; ++k) s += ei[k] * ej[k];
      S[i * D + j] = s;
      if (Full) S[j * D + i] = s;
    }
  }
}

// full_s with a D*D scratch (tiled for large D on the CPU).
template <bool Full, typename A>
GKL_INLINE void full_s_rows(const A* E, const A* b, int D, A* S, A* scratch) {
#ifdef GKL_HAVE_TILED
  if (tiled_rows(D)) return tiled::full_s<Full>(E, b, D, S, scratch);
#endif
  (void)scratch;
  full_s<Full>(E, b, D, S);
}

// Lower triangle of S = X + X E^T + y b^T + diag(E_ii / Lq_ii), with X =
// tril(Lq^-T E) and y = Lq^-T b: dLq = -tril(Lq^-T M), M = E + E^T + E E^T
// + b b^T, equals -S because tril(U M) = tril(U tril(M)) for the upper
// triangular U = Lq^-T (U E E^T = X E^T, U b b^T = y b^T, and the lower
// triangle of U E^T is U diag(E)). One triangular product in place of
// full_s and a second back substitution. Only the lower triangles of X and
// E are read (X_ik E_jk, k <= j <= i).
template <typename A>
GKL_INLINE void xet_s(const A* X, const A* y, const A* E, const A* b, const A* Lq, int D, A* S) {
  for (int i = 0; i < D; ++i) {
    const A* xi = X + i * D;
    for (int j = 0; j <= i; ++j) {
      const A* ej = E + j * D;
      A s = y[i] * b[j] + xi[j];
      if (i == j) s += ej[j] / Lq[j * D + j];
      for (int k = 0; k <= j; ++k) s += xi[k] * ej[k];
      S[i * D + j] = s;
    }
  }
}

// xet_s with a D*D scratch (tiled for large D on the CPU).
template <typename A>
GKL_INLINE void xet_s_rows(const A* X, const A* y, const A* E, const A* b, const A* Lq, int D, A* S,
                           A* scratch) {
#ifdef GKL_HAVE_TILED
  if (tiled_rows(D)) return tiled::xet_s(X, y, E, b, Lq, D, S, scratch);
#endif
  (void)scratch;
  xet_s(X, y, E, b, Lq, D, S);
}

// Gradients of g * KL of one row, written to the outputs of o that are not
// null (only those are computed): means [D]; a matrix side [D, D] row-major,
// lower triangular for scale_tril (the upper triangle was never read:
// gradient 0), symmetric for cov; a diagonal side [D] in its DiagParam.
//   scale_tril: dLp = tril(Lq^-T E) + diag(E_ii / Lp_ii),  dLq = -tril(Lq^-T S)
//               (computed as -xet_s: a product on X = tril(Lq^-T E), no second solve)
//   cov:        dSp = (Sq^-1 - Sp^-1) / 2,                 dSq = -Lq^-T S Lq^-1 / 2
//   diagonal:   the diagonal of the scale_tril gradient, taken to the param
// with S as in full_s (the cancellation-free Sq^-1 (Sp + dd^T) Sq^-1 form):
// exactly 0 at p == q and accurate near it (except cov's dSp, a difference).
// mu: dmu_p = -Lq^-T b, dmu_q = Lq^-T b.
template <FullParam PP, FullParam PQ, bool HasQ, typename M, typename S, int DC = 0, typename A>
GKL_INLINE void full_row_backward(
    const FullRows& r, int64_t row, A g, const FullWork<A>& w, const FullGradOut& o) {
  if constexpr (PP == FullParam::ScaleTril && PQ == FullParam::Diag && HasQ) {
    tril_diag_backward<M, S, DC, A>(r, row, g, o);
    return;
  }
  constexpr bool kQDiag = PQ == FullParam::Diag;
  const int D = event_size<DC>(r);
  full_prepare<PP, PQ, HasQ, M, S, DC>(r, row, w);
  const int64_t sp = PP == FullParam::Diag ? D : D * D;  // per-row size of each side's gradient
  const int64_t sq = PQ == FullParam::Diag ? D : D * D;
  S* gmp = o.grad[0] ? static_cast<S*>(o.grad[0]) + row * D : nullptr;
  S* gp = o.grad[1] ? static_cast<S*>(o.grad[1]) + row * sp : nullptr;
  S* gmq = o.grad[2] ? static_cast<S*>(o.grad[2]) + row * D : nullptr;
  S* gq = o.grad[3] ? static_cast<S*>(o.grad[3]) + row * sq : nullptr;

  // scale_tril q: dLq from X = tril(Lq^-T E) and y (xet_s).
  const bool q_xet = HasQ && gq && PQ == FullParam::ScaleTril;

  // y = Lq^-T b.
  if (gmp || gmq || q_xet) {
    for (int i = 0; i < D; ++i) w.y[i] = w.b[i];
    if (kQDiag) {
      for (int i = 0; i < D; ++i) w.y[i] /= w.Lq[i * D + i];
    } else {
      trsv_lower_t(w.Lq, w.y, D);
    }
    for (int i = 0; i < D; ++i) {
      if (gmp) gmp[i] = kl_store<S>(-g * w.y[i]);
      if (gmq) gmq[i] = kl_store<S>(g * w.y[i]);
    }
  }

  // X = tril(Lq^-T E) into T: dLp (p as a factor) and dLq (scale_tril q).
  const bool p_factor = gp && PP != FullParam::Cov;
  if (p_factor || q_xet) {
    if (kQDiag) {
      for (int i = 0; i < D; ++i) {
        const A inv = A(1) / w.Lq[i * D + i];
        for (int j = 0; j <= i; ++j) w.T[i * D + j] = w.E[i * D + j] * inv;
      }
    } else {
      tril_solve_lt_rows(w.Lq, w.E, w.T, D);
    }
  }
  if (q_xet) {
    xet_s_rows(w.T, w.y, w.E, w.b, w.Lq, D, w.S, w.U);
    store_tril_grad<S>(o, 3, gq, w.S, -g, D);
  }

  // p as a factor (scale_tril or diagonal): dLp = T + diag(E_ii / Lp_ii).
  if (p_factor) {
    for (int i = 0; i < D; ++i) w.T[i * D + i] += w.E[i * D + i] / w.Lp[i * D + i];
    if (PP == FullParam::Diag) {
      for (int i = 0; i < D; ++i) {
        gp[i] = kl_store<S>(diag_std_chain(g * w.T[i * D + i], w.Lp[i * D + i], r.diag_param));
      }
    } else {
      store_tril_grad<S>(o, 1, gp, w.T, g, D);
    }
  }

  // Diagonal or cov q: from S (diagonal q: only S_ii); scale_tril q was done above.
  bool lq_inverted = false;
  if (HasQ && gq && PQ != FullParam::ScaleTril) {
    if (kQDiag) {
      for (int i = 0; i < D; ++i) {
        const A* ei = w.E + i * D;
        A s = w.b[i] * w.b[i] + A(2) * ei[i];
        for (int k = 0; k <= i; ++k) s += ei[k] * ei[k];
        const A sdq = w.Lq[i * D + i];
        gq[i] = kl_store<S>(diag_std_chain(-g * s / sdq, sdq, r.diag_param));
      }
    } else {  // Cov: Lq <- Lq^-1 in place, then -Lq^-T S Lq^-1 / 2 (into T via E's storage)
      full_s_rows<true>(w.E, w.b, D, w.S, w.T);
      tri_inverse_lower(w.Lq, D);
      lq_inverted = true;
      congruence_lt(w.Lq, w.S, w.T, w.E, D);  // E no longer needed
      for (int i = 0; i < D; ++i) {  // from the lower triangle: exactly symmetric
        for (int j = 0; j <= i; ++j) {
          const S v = kl_store<S>(A(-0.5) * g * w.E[i * D + j]);
          gq[i * D + j] = v;
          gq[j * D + i] = v;
        }
      }
    }
  }

  // p as a covariance: (Sq^-1 - Sp^-1) / 2 with Sigma^-1 = Li^T Li.
  if (gp && PP == FullParam::Cov) {
    if (!kQDiag && !lq_inverted) tri_inverse_lower(w.Lq, D);
    tri_inverse_lower(w.Lp, D);
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        A s = A(0);
        for (int k = i; k < D; ++k) s -= w.Lp[k * D + i] * w.Lp[k * D + j];
        if (kQDiag) {
          if (i == j) {
            const A iq = A(1) / w.Lq[i * D + i];
            s += iq * iq;
          }
        } else if (HasQ) {
          for (int k = i; k < D; ++k) s += w.Lq[k * D + i] * w.Lq[k * D + j];
        } else if (i == j) {
          s += A(1);
        }
        gp[i * D + j] = kl_store<S>(A(0.5) * g * s);
        gp[j * D + i] = kl_store<S>(A(0.5) * g * s);
      }
    }
  }
}

}  // namespace gaussian_kl
