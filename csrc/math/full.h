// math/full.h — the full-covariance KL of one batch element and its
// gradients, written once (docs/design.md, "Full covariance").
//
// With Lp, Lq the lower Cholesky factors, delta = mu_q - mu_p,
// E = Lq^-1 (Lp - Lq) (lower triangular; A = Lq^-1 Lp = I + E) and
// b = Lq^-1 delta:
//   2 KL = sum_{j<i} E_ij^2 + |b|^2 + sum_i phi(2 log(Lp_ii / Lq_ii)),
// a sum of non-negative terms (accurate near p == q, never negative). With
// X = tril(Lq^-T E) and y = Lq^-T b, the gradients of KL are
//   dmu_q = -dmu_p = y,
//   dLp = X + diag(E_ii / Lp_ii),
//   dLq = -tril(X + X E^T + y b^T) - diag(E_ii / Lq_ii),
//   dSp = (Sq^-1 - Sp^-1) / 2,   dSq = -Lq^-T S Lq^-1 / 2,
//   S = E + E^T + E E^T + b b^T (= Lq^-1 (Sp + delta delta^T) Lq^-T - I).
//
// Every strategy on every device runs this code; what differs is the
// execution policy X: what one element of the workspace is (a float; a
// vector holding one element of 16 problems; one CUDA thread's value),
// which columns and rows a worker handles, and how workers synchronise and
// sum. A policy provides:
//   T, V, kW          workspace element; kW consecutive columns of a row
//                     (V = T where kW == 1); V supports + - * with V
//   kNV, kR           register tile of the solves: kNV V's x kR rows
//   load(const T*), store(T*, V), splat(T), zero()
//   keep(v, j0, lo, hi, extra)  v on the columns j0 + lane in [lo, hi) or
//                     == extra, 0 elsewhere
//   slices(lo, hi, f) f(j0, nv) for this worker's column slices of nv V's
//                     (nv a std::integral_constant <= kNV) covering the
//                     columns [lo, hi) (lo a multiple of kW)
//   rows(lo, hi, f)   f(i) for this worker's rows in [lo, hi)
//   dim(D), ldim(ld)  D and ld, compile-time constants where the policy is
//                     specialised for one D
//   sync()            barrier between phases (no-op for one worker)
//   total(V)          the sum over lanes and workers, on every worker
//   dot(a, b, n)      sum_{j<n} a_j b_j of two rows (one worker)
//   each(f, args...)  the scalar f applied per problem (per lane of a
//                     vector of problems)
//   column(M, ld, c, v, D)       v[i] = M[i * ld + c] for i < D
//   transpose(src, dst, ld, D)   dst = src^T (D x D, src != dst)
//   mirror(M, ld, D)             M's upper triangle = its lower, transposed
// Matrices are D x ld rows in the workspace (ld >= D, a multiple of kW;
// columns [D, ld) are zero); only lower triangles are meaningful.
//
// b rides in column D - 1 of E (docs/design.md, "One solve for E and b"):
// above the diagonal of row i < D - 1 the triangle leaves that column
// free, so the right-hand side E' = [tril(Lp - Lq) with column D - 1 =
// delta] solves for E and b together, and E_{D-1,D-1} is known from the
// diagonals, E_ii = (Lp_ii - Lq_ii) / Lq_ii. The back substitution carries
// y in the same column.
#pragma once

#include <type_traits>

#include "diag.h"
#include "problem.h"
#include "scalar.h"

GKL_NS_BEGIN

// The workspace of one problem (one batch element, or the problems of a
// vector of problems): D x ld matrices and ld-vectors of T, in one buffer.
// The forward uses P, Q, QT, E and the vectors; the backward also X, ET, S.
// Columns [D, ld) of every matrix and entries [D, ld) of every vector must
// be zero on first use (the strategies allocate it zeroed). QT holds q's
// factor transposed (L_ik = QT[k * ld + i]): the layout the solves read,
// and column-major inputs' own (torch.linalg.cholesky's), copied as is.
template <typename T>
struct FullWork {
  int D = 0, ld = 0;
  T *P, *Q, *QT, *E;                  // Lp, Lq (lower), Lq^T, E' = [E | b]
  T *dp, *dq, *rq, *rp, *dg, *y, *b;  // diag(Lp), diag(Lq), their inverses, diagonal terms, y, b
  T *X, *ET, *S;                      // X' = Lq^-T E', E^T, a product (backward)
  bool qt_loaded = false;             // the loads also filled QT (a scale_tril q)

  static constexpr int kVectors = 7;
  static GKL_HD int64_t size(int D, int ld, bool backward) {
    return (backward ? 7 : 4) * int64_t(D) * ld + kVectors * int64_t(ld);
  }
  FullWork() = default;
  GKL_HD FullWork(T* base, int D_, int ld_, bool backward) : D(D_), ld(ld_) {
    const int64_t m = int64_t(D) * ld;
    T* at = base;
    P = at, at += m;
    Q = at, at += m;
    QT = at, at += m;
    E = at, at += m;
    dp = at, at += ld;
    dq = at, at += ld;
    rq = at, at += ld;
    rp = at, at += ld;
    dg = at, at += ld;
    y = at, at += ld;
    b = at, at += ld;
    X = backward ? at : nullptr, at += backward ? m : 0;
    ET = backward ? at : nullptr, at += backward ? m : 0;
    S = backward ? at : nullptr;
  }
};

// ---------------------------------------------------------------------------
// Triangular solves and the one product, on the columns of this worker
// ---------------------------------------------------------------------------

// The rows [first, D) of a slice in blocks of R (rows left over one at a
// time), ascending or descending.
template <int R, bool Down, typename F>
GKL_INLINE void row_blocks(int first, int D, const F& f) {
  using Full = std::integral_constant<int, R>;
  using One = std::integral_constant<int, 1>;
  if (!Down) {
    int i = first;
    for (; i + R <= D; i += R) f(Full{}, i);
    for (; i < D; ++i) f(One{}, i);
  } else {
    int i = D;
    for (; i - R >= first; i -= R) f(Full{}, i - R);
    for (; i > first; --i) f(One{}, i - 1);
  }
}

// First row of the slice [j0, j0 + w) that a triangular operand can have
// non-zeros in: j0, or 0 for the slice holding column `dense`.
GKL_INLINE int first_row(bool tri, int j0, int w, int dense) {
  return (!tri || (dense >= j0 && dense < j0 + w)) ? 0 : j0;
}

// B <- L^-1 B by forward substitution on this worker's columns:
//   B_i <- (B_i - sum_{k<i} L_ik B_k) / L_ii      (rinv_i = 1 / L_ii).
// tri: B is zero above its diagonal, except column `dense` (the
// right-hand side delta, see above); a slice then has rows from its first
// column only, and its zeros above the diagonal stay exactly zero.
template <class X>
GKL_KERNEL void solve_lower(const X& x, const typename X::T* LT, const typename X::T* rinv, typename X::T* B,
                            int ld_, int D_, bool tri, int dense) {
  using V = typename X::V;
  const int D = x.dim(D_), ld = x.ldim(ld_);
  constexpr int kW = X::kW;
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    constexpr int NV = decltype(NVC)::value;
    const int first = first_row(tri, j0, NV * kW, dense);
    row_blocks<X::kR, false>(first, D, [&](auto RC, int i0) GKL_LAMBDA {
      constexpr int R = decltype(RC)::value;
      V acc[R][NV];
      GKL_UNROLL
      for (int r = 0; r < R; ++r) {
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = x.load(B + (i0 + r) * ld + j0 + v * kW);
      }
      for (int k = first; k < i0; ++k) {
        V bk[NV];
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) bk[v] = x.load(B + k * ld + j0 + v * kW);
        GKL_UNROLL
        for (int r = 0; r < R; ++r) {
          const V l = x.splat(LT[k * ld + i0 + r]);  // L_{i0+r,k}
          GKL_UNROLL
          for (int v = 0; v < NV; ++v) acc[r][v] -= l * bk[v];
        }
      }
      GKL_UNROLL
      for (int r = 0; r < R; ++r) {
        GKL_UNROLL
        for (int q = 0; q < r; ++q) {
          const V l = x.splat(LT[(i0 + q) * ld + i0 + r]);
          GKL_UNROLL
          for (int v = 0; v < NV; ++v) acc[r][v] -= l * acc[q][v];
        }
        const V inv = x.splat(rinv[i0 + r]);
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) {
          acc[r][v] *= inv;
          x.store(B + (i0 + r) * ld + j0 + v * kW, acc[r][v]);
        }
      }
    });
  });
}

// B <- L^-T B by back substitution on this worker's columns, bottom up:
//   B_j <- (B_j - sum_{i>j} L_ij B_i) / L_jj.
// tri: only rows j >= j0 of a slice (all rows of the `dense` slice): for a
// lower-triangular B those give tril(L^-T B), which depends on rows below
// only. Entries above the diagonal then hold values nobody reads.
template <class X>
GKL_KERNEL void solve_upper(const X& x, const typename X::T* LT, const typename X::T* rinv, typename X::T* B,
                            int ld_, int D_, bool tri, int dense) {
  using V = typename X::V;
  const int D = x.dim(D_), ld = x.ldim(ld_);
  constexpr int kW = X::kW;
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    constexpr int NV = decltype(NVC)::value;
    const int first = first_row(tri, j0, NV * kW, dense);
    row_blocks<X::kR, true>(first, D, [&](auto RC, int i0) GKL_LAMBDA {
      constexpr int R = decltype(RC)::value;
      V acc[R][NV];
      GKL_UNROLL
      for (int r = 0; r < R; ++r) {
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = x.load(B + (i0 + r) * ld + j0 + v * kW);
      }
      for (int k = i0 + R; k < D; ++k) {
        V bk[NV];
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) bk[v] = x.load(B + k * ld + j0 + v * kW);
        GKL_UNROLL
        for (int r = 0; r < R; ++r) {
          const V l = x.splat(LT[(i0 + r) * ld + k]);  // L_{k,i0+r}
          GKL_UNROLL
          for (int v = 0; v < NV; ++v) acc[r][v] -= l * bk[v];
        }
      }
      GKL_UNROLL
      for (int r = R - 1; r >= 0; --r) {
        // The rows finished first come first: the FMA chain of row r
        // waits for row r + 1 only at its end.
        GKL_UNROLL
        for (int q = R - 1; q > r; --q) {
          const V l = x.splat(LT[(i0 + r) * ld + i0 + q]);
          GKL_UNROLL
          for (int v = 0; v < NV; ++v) acc[r][v] -= l * acc[q][v];
        }
        const V inv = x.splat(rinv[i0 + r]);
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) {
          acc[r][v] *= inv;
          x.store(B + (i0 + r) * ld + j0 + v * kW, acc[r][v]);
        }
      }
    });
  });
}

// S_i <- H_i + u_i w + sum_{k <= i} F_ik G_k + d_i e_i on this worker's
// columns: the lower triangle of S (0 above it), or with `upper` its upper
// triangle (0 below; the transposed products of the column-major
// gradients). H is read on that triangle only, F on its lower triangle
// only (its entries above the diagonal are never read); G is upper
// triangular (G_kj = 0 for j < k: a slice ending before column k gets
// nothing from G_k). u, w, d: vectors.
template <class X>
GKL_KERNEL void product(const X& x, const typename X::T* H, const typename X::T* F, const typename X::T* u,
                        const typename X::T* w, const typename X::T* G, const typename X::T* d, typename X::T* S,
                        int ld_, int D_, bool upper) {
  using V = typename X::V;
  constexpr int kW = X::kW;
  const int D = x.dim(D_), ld = x.ldim(ld_);
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    constexpr int NV = decltype(NVC)::value;
    const int jend = j0 + NV * kW;  // columns [j0, jend)
    V wj[NV];
    GKL_UNROLL
    for (int v = 0; v < NV; ++v) wj[v] = x.load(w + j0 + v * kW);
    // Rows holding the triangle's part of the slice.
    const int first = upper ? 0 : j0, stop = upper ? kl_min(D, jend) : D;
    row_blocks<X::kR, false>(first, stop, [&](auto RC, int i0) GKL_LAMBDA {
      constexpr int R = decltype(RC)::value;
      V acc[R][NV];
      GKL_UNROLL
      for (int r = 0; r < R; ++r) {
        const int i = i0 + r;
        const V ui = x.splat(u[i]);
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) {
          const int c0 = j0 + v * kW;
          const V h = upper ? x.keep(x.load(H + i * ld + c0), c0, i, ld) : x.keep(x.load(H + i * ld + c0), c0, 0, i + 1);
          acc[r][v] = ui * wj[v] + h + x.keep(x.splat(d[i]), c0, i, i + 1);
        }
      }
      const int kend = kl_min(i0 + R, jend);
      for (int k = 0; k < kend; ++k) {
        V g[NV];
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) g[v] = x.load(G + k * ld + j0 + v * kW);
        GKL_UNROLL
        for (int r = 0; r < R; ++r) {
          if (k > i0 + r) continue;  // F is lower triangular
          const V f = x.splat(F[(i0 + r) * ld + k]);
          GKL_UNROLL
          for (int v = 0; v < NV; ++v) acc[r][v] += f * g[v];
        }
      }
      GKL_UNROLL
      for (int r = 0; r < R; ++r) {
        const int i = i0 + r;
        GKL_UNROLL
        for (int v = 0; v < NV; ++v) {
          const int c0 = j0 + v * kW;
          x.store(S + i * ld + c0, upper ? x.keep(acc[r][v], c0, i, ld) : x.keep(acc[r][v], c0, 0, i + 1));
        }
      }
    });
  });
}

// In-place lower Cholesky factor of the symmetric matrix whose lower
// triangle is in A, column by column (left-looking, the order of the
// CPU's scalar code and of a GPU block alike):
//   s_ik = A_ik - sum_{j<k} L_ij L_kj,   L_kk = sqrt(s_kk),  L_ik = s_ik / L_kk.
// The diagonal keeps the pivots s_kk until a last pass takes their square
// roots (so that every worker reads the same pivot). Returns this worker's
// validity term: 0, or NaN if a pivot it checked is not positive and finite
// (not positive definite, or a NaN).
template <class M, class X>
GKL_KERNEL typename X::T cholesky(const X& x, typename X::T* A, int ld_, int D_) {
  using T = typename X::T;
  const int D = x.dim(D_), ld = x.ldim(ld_);
  for (int k = 0; k < D; ++k) {
    x.rows(k, D, [&](int i) GKL_LAMBDA { A[i * ld + k] -= x.dot(A + i * ld, A + k * ld, k); });
    x.sync();
    x.rows(k + 1, D, [&](int i) GKL_LAMBDA {
      A[i * ld + k] = x.each([](auto a, auto p) GKL_LAMBDA { return a / M::sqrt(p > 0 ? p : decltype(p)(0)); },
                             A[i * ld + k], A[k * ld + k]);
    });
    x.sync();
  }
  T bad = T(0);
  x.rows(0, D, [&](int i) GKL_LAMBDA {
    const T p = A[i * ld + i];
    bad += x.each([](auto v) GKL_LAMBDA {
      return (v > 0) & (v <= kl_huge<decltype(v)>()) ? decltype(v)(0) : kl_nan<decltype(v)>();
    }, p);
    A[i * ld + i] = x.each([](auto v) GKL_LAMBDA { return M::sqrt(v > 0 ? v : decltype(v)(0)); }, p);
  });
  x.sync();
  return bad;
}

// ---------------------------------------------------------------------------
// One problem: the sides, the KL, the gradients
// ---------------------------------------------------------------------------

// The kinds of the two sides. What the caller (a strategy's data
// movement) loaded before prepare(): the lower triangles of p and q's
// matrices into w.P / w.Q (0 above the diagonal and in columns >= D; for a
// scale_tril q also into w.QT, transposed, where w.qt_loaded says so), a
// diagonal side as its standard deviations on the diagonal, delta = mu_q -
// mu_p (or -mu_p without q) into w.b.
struct Sides {
  FullParam p = FullParam::ScaleTril, q = FullParam::ScaleTril;
  bool has_q = true;
};

GKL_HD inline Sides sides_of(const FullRows& r) {
  Sides s;
  s.p = r.kind[0];
  s.q = r.kind[1];
  s.has_q = r.mu_q != nullptr;
  return s;
}

// Whether an input of row `row` is not finite (the lower triangles, the
// diagonal sides, the means): one worker, and only for a row whose KL came
// out inf or NaN (see finish_kl).
template <typename S>
GKL_HD inline bool row_not_finite(const FullRows& r, int64_t row) {  // cold: not forced inline
  const int D = static_cast<int>(r.dim);
  auto bad = [](double v) { return !(v - v == 0.0); };  // inf or NaN
  for (int k = 0; k < (r.mu_q ? 2 : 1); ++k) {
    const S* mu = static_cast<const S*>(k ? r.mu_q : r.mu_p) + row * r.mu_rs[k];
    const S* m = static_cast<const S*>(k ? r.m_q : r.m_p) + row * r.m_rs[k];
    for (int i = 0; i < D; ++i) {
      if (bad(kl_load(mu[i * r.mu_cs[k]]))) return true;
      for (int j = r.kind[k] == FullParam::Diag ? i : 0; j <= i; ++j) {
        const int64_t off = r.kind[k] == FullParam::Diag ? i * r.m_s0[k] : i * r.m_s0[k] + j * r.m_s1[k];
        if (bad(kl_load(m[off]))) return true;
      }
    }
  }
  return false;
}

// KL from 2 KL, NaN for a row with a non-finite input: every input reaches
// a term of the sum, so only a row whose KL is inf or NaN is rescanned (a
// valid row whose KL overflows stays +inf).
template <typename S, typename A>
GKL_INLINE A finish_kl(A kl2v, const FullRows& r, int64_t row) {
  const A kl = A(0.5) * kl2v;
  return kl <= kl_huge<A>() || !row_not_finite<S>(r, row) ? kl : kl_nan<A>();
}

// Factors the cov sides in place and fills dp, dq, rq. Returns this
// worker's validity term (NaN if a covariance is not positive definite).
template <class M, class X>
GKL_INLINE typename X::T factor_sides(const X& x, const FullWork<typename X::T>& w, const Sides& s) {
  using T = typename X::T;
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  T bad = T(0);
  if (s.p == FullParam::Cov) bad += cholesky<M>(x, w.P, ld, D);
  if (s.has_q && s.q == FullParam::Cov) bad += cholesky<M>(x, w.Q, ld, D);
  x.rows(0, D, [&](int i) GKL_LAMBDA {
    w.dp[i] = w.P[i * ld + i];
    w.dq[i] = s.has_q ? w.Q[i * ld + i] : T(1);
    w.rq[i] = T(1) / w.dq[i];
  });
  if (s.has_q && (s.q == FullParam::Cov || (s.q == FullParam::ScaleTril && !w.qt_loaded))) {
    x.transpose(w.Q, w.QT, ld, D);
  }
  x.sync();
  return bad;
}

// The right-hand side E' = tril(Lp - Lq) with column D - 1 = delta (Lq = I
// without q). The choice of Lq is made once, outside the loops: GCC 12
// at -O2 dropped the identity's (3, 3) entry from the select inside the
// unrolled loop (tests/cpp/test_emulation.cpp caught it, in the Lanes
// policy of the avx2 and baseline variants).
template <class X>
GKL_INLINE void assemble_rhs(const X& x, const FullWork<typename X::T>& w, const Sides& s) {
  using T = typename X::T;
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  // Lq (the identity without q) as a compile-time choice, outside the loops.
  auto rhs = [&](auto HQ) GKL_LAMBDA {
    x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
      for (int i = 0; i < D; ++i) {
        GKL_UNROLL
        for (int v = 0; v < decltype(NVC)::value; ++v) {
          const int c0 = j0 + v * X::kW;
          const auto lq = decltype(HQ)::value ? x.load(w.Q + i * ld + c0) : x.keep(x.splat(T(1)), c0, i, i + 1);
          const auto e = x.load(w.P + i * ld + c0) - lq;
          x.store(w.E + i * ld + c0, x.keep(e, c0, 0, D - 1) + x.keep(x.splat(w.b[i]), c0, D - 1, D));
        }
      }
    });
  };
  if (s.has_q) {
    rhs(std::true_type{});
  } else {
    rhs(std::false_type{});
  }
  x.sync();
}

// E' <- Lq^-1 E' (Lq = diag(sq): a row scaling; no q: nothing).
template <class X>
GKL_INLINE void solve_e(const X& x, const FullWork<typename X::T>& w, const Sides& s) {
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  if (!s.has_q) return;
  if (s.q == FullParam::Diag) {
    x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
      for (int i = 0; i < D; ++i) {
        GKL_UNROLL
        for (int v = 0; v < decltype(NVC)::value; ++v) {
          auto* e = w.E + i * ld + j0 + v * X::kW;
          x.store(e, x.load(e) * x.splat(w.rq[i]));
        }
      }
    });
  } else {
    solve_lower(x, w.QT, w.rq, w.E, ld, D, true, D - 1);
  }
  x.sync();
}

// Everything the KL and the gradients start from, after the loads.
template <class M, class X>
GKL_INLINE typename X::T prepare(const X& x, const FullWork<typename X::T>& w, const Sides& s) {
  const auto bad = factor_sides<M>(x, w, s);
  assemble_rhs(x, w, s);
  solve_e(x, w, s);
  return bad;
}

// 2 KL of the prepared problem, plus `bad`, on every worker:
// sum_i [sum_{j<i} E_ij^2 + b_i^2] (column D - 1 of E' is b) + the
// diagonal terms phi(2 log(Lp_ii / Lq_ii)).
template <class M, class X>
GKL_INLINE typename X::T kl2(const X& x, const FullWork<typename X::T>& w, typename X::T bad) {
  using V = typename X::V;
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  x.rows(0, D, [&](int i) GKL_LAMBDA {
    w.dg[i] = x.each([](auto lp, auto lq, auto r) GKL_LAMBDA { return full_diag_term2<M>(lp, lq, r); }, w.dp[i],
                     w.dq[i], w.rq[i]);
  });
  x.sync();
  V acc = x.keep(x.splat(bad), 0, 0, 1);
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    constexpr int NV = decltype(NVC)::value;
    V part[NV];
    GKL_UNROLL
    for (int v = 0; v < NV; ++v) part[v] = x.load(w.dg + j0 + v * X::kW);
    const int first = first_row(true, j0, NV * X::kW, D - 1);
    for (int i = first; i < D; ++i) {
      GKL_UNROLL
      for (int v = 0; v < NV; ++v) {
        const int c0 = j0 + v * X::kW;
        const V e = x.keep(x.load(w.E + i * ld + c0), c0, 0, i, D - 1);
        part[v] += e * e;
      }
    }
    GKL_UNROLL
    for (int v = 0; v < NV; ++v) acc += part[v];
  });
  return x.total(acc);
}

// The backward's second solve and the vectors of the gradients: X' =
// Lq^-T E' (y in column D - 1), y and b out of their column, and the true
// E_{D-1,D-1}, X_{D-1,D-1} in its place (from the diagonals).
template <class X>
GKL_INLINE void back_prepare(const X& x, const FullWork<typename X::T>& w, const Sides& s) {
  using T = typename X::T;
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  const bool scale = s.has_q && s.q == FullParam::Diag;
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {  // X' = E' (Lq^-T E' for a diagonal q)
    for (int i = 0; i < D; ++i) {
      GKL_UNROLL
      for (int v = 0; v < decltype(NVC)::value; ++v) {
        const int c = i * ld + j0 + v * X::kW;
        x.store(w.X + c, scale ? x.load(w.E + c) * x.splat(w.rq[i]) : x.load(w.E + c));
      }
    }
  });
  x.sync();
  if (s.has_q && s.q != FullParam::Diag) {
    solve_upper(x, w.QT, w.rq, w.X, ld, D, true, D - 1);
    x.sync();
  }
  x.column(w.E, ld, D - 1, w.b, D);
  x.column(w.X, ld, D - 1, w.y, D);
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    GKL_UNROLL
    for (int v = 0; v < decltype(NVC)::value; ++v) {
      const int c = j0 + v * X::kW;
      x.store(w.rp + c, x.splat(T(1)) / x.load(w.dp + c));
    }
  });
  x.sync();
  // Column D - 1 of E and X back to E's and X's own (E_{D-1,D-1} and
  // X_{D-1,D-1} from the diagonals) and X's entries above the diagonal
  // (the solve's by-products) to 0, as row updates.
  const T e = (w.dp[D - 1] - w.dq[D - 1]) * w.rq[D - 1];
  const T xe = e * w.rq[D - 1];
  x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
    for (int i = 0; i < D; ++i) {
      const bool last = i == D - 1;
      GKL_UNROLL
      for (int v = 0; v < decltype(NVC)::value; ++v) {
        const int c = j0 + v * X::kW;
        auto* er = w.E + i * ld + c;
        auto* xr = w.X + i * ld + c;
        if (c + X::kW > D - 1) {
          x.store(er, x.keep(x.load(er), c, 0, D - 1) + (last ? x.keep(x.splat(e), c, D - 1, D) : x.zero()));
        }
        x.store(xr, x.keep(x.load(xr), c, 0, kl_min(i + 1, D - 1)) + (last ? x.keep(x.splat(xe), c, D - 1, D) : x.zero()));
      }
    }
  });
  x.sync();
}

// tril(Sigma^-1) = tril(L^-T L^-1) into Z, for the factor L given
// transposed (LT; rinv its inverse diagonal), diagonal (diag: Sigma^-1 =
// diag(rinv^2)) or absent (LT null: the identity).
template <class X>
GKL_INLINE void inverse_tril(const X& x, const typename X::T* LT, const typename X::T* rinv, bool diag,
                             typename X::T* Z, int ld, int D) {
  using T = typename X::T;
  const bool solve = LT && !diag;
  x.rows(0, D, [&](int i) GKL_LAMBDA {
    for (int j = 0; j < ld; ++j) Z[i * ld + j] = T(0);
    Z[i * ld + i] = solve || !LT ? T(1) : rinv[i] * rinv[i];
  });
  x.sync();
  if (solve) {
    solve_lower(x, LT, rinv, Z, ld, D, true, -1);
    x.sync();
    solve_upper(x, LT, rinv, Z, ld, D, true, -1);
    x.sync();
  }
}

// Gradients of g * KL of the prepared problem (g: the incoming gradient,
// per problem), handed to the strategy's sink as each is ready (its data
// movement: layouts, dtypes):
//   out.vec(k, v, c)   output k (0: mu_p, 2: mu_q, or a diagonal side 1/3)
//                      = c * v[0 .. D)
//   out.tril(k, M, c)  output k = c * tril(M) (zero above the diagonal)
//   out.tril_t(k, MT, c)  output k = c * tril(MT^T), from the rows of its
//                      transpose (asked only where out.col_major(k))
//   out.sym(k, M, c)   output k = c * (M's lower triangle, mirrored)
// need[k]: which outputs are wanted. Uses every matrix of w (see FullWork).
template <class M, class X, class Sink>
GKL_INLINE void backward(const X& x, const FullWork<typename X::T>& w, const Sides& s, DiagParam dparam,
                         typename X::T g, const bool (&need)[4], const Sink& out) {
  using T = typename X::T;
  const int D = x.dim(w.D), ld = x.ldim(w.ld);
  if (D == 0) return;
  back_prepare(x, w, s);
  if (need[0]) out.vec(0, w.y, -g);
  x.sync();
  if (need[2] && s.has_q) out.vec(2, w.y, g);
  x.sync();
  const bool gq = need[3] && s.has_q;
  bool have_et = false;
  auto transpose_e = [&]() GKL_LAMBDA {
    if (!have_et) x.transpose(w.E, w.ET, ld, D);
    x.sync();
    have_et = true;
  };
  // A column-major output is written from rows of the transposed
  // gradient: XT = X^T serves dLp and dLq, computed as their transposes.
  const bool lq_cols = gq && s.q == FullParam::ScaleTril && out.col_major(3);
  const bool lp_cols = need[1] && s.p == FullParam::ScaleTril && out.col_major(1);
  if (lq_cols || lp_cols) {
    x.transpose(w.X, w.S, ld, D);  // S holds XT until the product below
    x.sync();
  }
  if (gq && s.q == FullParam::ScaleTril) {
    // dLq = -tril(X + X E^T + y b^T) - diag(E_ii / Lq_ii).
    x.rows(0, D, [&](int i) GKL_LAMBDA { w.dg[i] = w.E[i * ld + i] * w.rq[i]; });
    x.sync();
    if (lq_cols) {  // its transpose, by rows: XT_j + b_j y + sum_{k<=j} E_jk XT_k
      product(x, w.S, w.E, w.b, w.y, w.S, w.dg, w.ET, ld, D, true);
      x.sync();
      out.tril_t(3, w.ET, -g);
      x.sync();
    } else {
      transpose_e();
      product(x, w.X, w.X, w.y, w.b, w.ET, w.dg, w.S, ld, D, false);
      x.sync();
      out.tril(3, w.S, -g);
      x.sync();
      if (lp_cols) {  // the product overwrote XT
        x.transpose(w.X, w.S, ld, D);
        x.sync();
      }
    }
  }
  if (need[1] && s.p != FullParam::Cov) {
    // dLp = X + diag(E_ii / Lp_ii); a diagonal p takes its diagonal.
    T* G = lp_cols ? w.S : w.X;  // XT or X: the same diagonal
    x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
      for (int i = j0; i < D && i < j0 + decltype(NVC)::value * X::kW; ++i) {
        auto* gr = G + i * ld + j0;
        for (int v = 0; v < decltype(NVC)::value; ++v) {
          const int c = j0 + v * X::kW;
          x.store(gr + v * X::kW, x.load(gr + v * X::kW) + x.keep(x.splat(w.E[i * ld + i] * w.rp[i]), c, i, i + 1));
        }
      }
    });
    x.sync();
    if (s.p == FullParam::Diag) {
      x.rows(0, D, [&](int i) GKL_LAMBDA {
        w.dg[i] = x.each([&](auto gx, auto sd) GKL_LAMBDA { return diag_std_chain(gx, sd, dparam); },
                         g * G[i * ld + i], w.dp[i]);
      });
      x.sync();
      out.vec(1, w.dg, T(1));
      x.sync();
    } else if (lp_cols) {
      out.tril_t(1, G, g);
      x.sync();
    } else {
      out.tril(1, G, g);
      x.sync();
    }
  }
  if (gq && s.q == FullParam::Diag) {
    // The diagonal of dLq for Lq = diag(sq): -(2 E_ii + sum_{k<=i} E_ik^2 + b_i^2) / sq_i.
    x.rows(0, D, [&](int i) GKL_LAMBDA {
      T acc = w.b[i] * w.b[i] + T(2) * w.E[i * ld + i];
      for (int k = 0; k <= i; ++k) acc += w.E[i * ld + k] * w.E[i * ld + k];
      w.dg[i] = x.each([&](auto gs, auto sd) GKL_LAMBDA { return diag_std_chain(gs, sd, dparam); },
                       -g * acc * w.rq[i], w.dq[i]);
    });
    x.sync();
    out.vec(3, w.dg, T(1));
    x.sync();
  }
  if (gq && s.q == FullParam::Cov) {
    // dSq = -Lq^-T S Lq^-1 / 2, S = E + E^T + E E^T + b b^T (symmetric):
    // its lower triangle by the product, mirrored, then two solves.
    transpose_e();
    x.rows(0, D, [&](int i) GKL_LAMBDA { w.dg[i] = w.E[i * ld + i]; });
    x.sync();
    product(x, w.E, w.E, w.b, w.b, w.ET, w.dg, w.S, ld, D, false);
    x.sync();
    x.mirror(w.S, ld, D);
    x.sync();
    solve_upper(x, w.QT, w.rq, w.S, ld, D, false, -1);  // Lq^-T S
    x.sync();
    x.transpose(w.S, w.ET, ld, D);  // (Lq^-T S)^T = S Lq^-1
    x.sync();
    solve_upper(x, w.QT, w.rq, w.ET, ld, D, false, -1);  // Lq^-T S Lq^-1
    x.sync();
    out.sym(3, w.ET, T(-0.5) * g);
    x.sync();
  }
  if (need[1] && s.p == FullParam::Cov) {
    // dSp = (Sq^-1 - Sp^-1) / 2, from the lower triangles of both inverses.
    inverse_tril(x, s.has_q ? w.QT : static_cast<const T*>(nullptr), w.rq, s.has_q && s.q == FullParam::Diag, w.S,
                 ld, D);
    x.transpose(w.P, w.ET, ld, D);  // Lp^T (ET is free here)
    x.sync();
    inverse_tril(x, w.ET, w.rp, s.p == FullParam::Diag, w.X, ld, D);
    x.slices(0, D, [&](int j0, auto NVC) GKL_LAMBDA {
      for (int i = 0; i < D; ++i) {
        GKL_UNROLL
        for (int v = 0; v < decltype(NVC)::value; ++v) {
          const int c = i * ld + j0 + v * X::kW;
          x.store(w.S + c, x.load(w.S + c) - x.load(w.X + c));
        }
      }
    });
    x.sync();
    out.sym(1, w.S, T(0.5) * g);
    x.sync();
  }
}

GKL_NS_END
