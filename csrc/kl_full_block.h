// kl_full_block.h — the full-covariance KL of one scale_tril or cov pair on
// a block of threads sharing a scratch (CUDA: shared memory where it fits,
// else a per-block slice of a global workspace), forward and backward, for
// the D the lane groups do not take (D > 32, or a host-factored shared q).
// The matrices live in the scratch as rows of stride ld = D + 1 (E's column
// D holds delta, then b = Lq^-1 delta); the work is split by columns: a
// thread owns a column and runs its forward or back substitution alone, so
// a triangular solve needs no barrier, and within a warp the factor's
// entries are read at the same address (a broadcast) while the columns'
// entries are consecutive. A warp's columns start their solves at the
// warp's first column (the entries above a column's first row are 0), so
// the loops of a warp have the same bounds. The Cholesky factorisation is
// left-looking, a column per step, two barriers per step.
//
// The thread primitives come from a policy `B` (the CUDA kernel passes the
// block; tests/cpp/test_group_emulation.cpp passes host fibers):
//   int thread() const;  int count() const;  0 .. count - 1, count threads
//   void sync() const;                       barrier over the block
//   A sum(A v) const;                        v summed over the block, to every thread
// Same math as kl_full_row.h (DESIGN §2):
//   E = Lq^-1 (Lp - Lq), b = Lq^-1 d,
//   2 KL = sum_{j<i} E_ij^2 + sum_i phi(2 log(Lp_ii / Lq_ii)) + |b|^2,
//   dLp = tril(Lq^-T E) + diag(E_ii / Lp_ii), dLq = -xet_s, dmu_q = -dmu_p = Lq^-T b,
//   dSp = (Sq^-1 - Sp^-1) / 2, dSq = -Lq^-T (E + E^T + E E^T + b b^T) Lq^-1 / 2.
// No torch headers.
#pragma once

#include "kl_args.h"
#include "kl_math.h"

namespace gaussian_kl {
namespace block {

// The pairs this code handles: p against a q of the same kind, scale_tril
// or cov (per row, shared, or factored once by the host), or none; any D
// (D = 0: KL 0, no gradient entries). Every kl_full pair the lane groups
// do not take.
inline bool usable(FullParam pp, FullParam pq, const FullRows& r) {
  const bool kind = pp == FullParam::ScaleTril || pp == FullParam::Cov;
  return kind && (!r.has_q() || pq == pp);
}

// D x (D + 1) arrays a row needs: forward E and Lq; backward also X (and
// Lp for cov).
GKL_INLINE int arrays(FullParam p, bool backward) { return backward ? (p == FullParam::Cov ? 4 : 3) : 2; }

// Accumulators of one block's scratch.
GKL_INLINE int64_t scratch_size(int64_t D, int n_arrays) { return n_arrays * D * (D + 1) + D; }

// The scratch of a row: Q = Lq, E (column D: delta, b), X, P = Lp (cov
// backward), dp = diag(Lp).
template <typename A>
struct Scratch {
  int D, ld;
  A *Q, *E, *X, *P, *dp;
  GKL_INLINE Scratch(A* base, int D_, int n_arrays) : D(D_), ld(D_ + 1) {
    const int64_t m = static_cast<int64_t>(D) * ld;
    A* at = base;
    Q = at;
    E = at + m;
    X = n_arrays > 2 ? at + 2 * m : nullptr;
    P = n_arrays > 3 ? at + 3 * m : nullptr;
    dp = at + n_arrays * m;
  }
};

// Column and first row of virtual column v of D + Extra columns: v = 0 is
// the extra column D (a right-hand side: starts at row 0) when Extra,
// columns follow; a column starts at its warp's first column.
template <bool Extra>
GKL_INLINE void column_of(int v, int D, int* c, int* s) {
  if (Extra) {
    const int first = (v & ~31) - 1;
    *c = v == 0 ? D : v - 1;
    *s = v == 0 ? 0 : (first > 0 ? first : 0);
  } else {
    *c = v;
    *s = v & ~31;
  }
}

// The lower triangle of side k's D x D matrix of row `row` into M (0 above
// the diagonal), read in the input's memory order. Returns this thread's
// x - x over the values it read.
template <typename S, typename A, typename B>
GKL_INLINE A load_tril(const FullRows& r, int k, int64_t row, const B& bl, A* M, int ld) {
  const int D = static_cast<int>(r.dim);
  const S* m = static_cast<const S*>(k == 0 ? r.m_p : r.m_q) + row * r.m_rs[k];
  const int64_t s0 = r.m_s0[k], s1 = r.m_s1[k];
  const bool cm = s0 == 1 && s1 != 1;
  A bad = A(0);
  for (int idx = bl.thread(); idx < D * D; idx += bl.count()) {
    const int a = idx / D, c = idx - a * D;
    const int i = cm ? c : a, j = cm ? a : c;
    A v = A(0);
    if (j <= i) {
      v = kl_load(m[i * s0 + j * s1]);
      bad += v - v;
    }
    M[i * ld + j] = v;
  }
  return bad;
}

// Copies the host-factored shared Lq (acc_t, D x D row-major) into M.
template <typename A, typename B>
GKL_INLINE A load_shared_factor(const FullRows& r, const B& bl, A* M, int ld) {
  const int D = static_cast<int>(r.dim);
  const A* l = static_cast<const A*>(r.lq_shared);
  for (int idx = bl.thread(); idx < D * D; idx += bl.count()) {
    const int i = idx / D, j = idx - i * D;
    M[i * ld + j] = j <= i ? l[idx] : A(0);
  }
  return l[0] - l[0];  // NaN-filled when the shared covariance is not PD
}

// In-place lower Cholesky factors of the n (1 or 2) matrices m0, m1
// (lower triangles, 0 above). Left-looking: at step k, rows i >= k take
// sum_{j<k} L_ij L_kj off A_ik (barrier), then rows i > k divide by
// sqrt(pivot) (barrier); the diagonal keeps the pivots until a last pass
// takes their square roots. Returns this thread's validity term (0, or NaN
// if a pivot it checked is not positive and finite).
template <typename M, typename A, typename B>
GKL_INLINE A cholesky(const B& bl, A* m0, A* m1, int n, int D, int ld) {
  for (int k = 0; k < D; ++k) {
    const int rows = D - k;
    for (int v = bl.thread(); v < n * rows; v += bl.count()) {
      A* a = v < rows ? m0 : m1;
      const int i = k + (v < rows ? v : v - rows);
      A s = a[i * ld + k];
      for (int j = 0; j < k; ++j) s -= a[i * ld + j] * a[k * ld + j];
      a[i * ld + k] = s;
    }
    bl.sync();
    const int below = rows - 1;
    for (int v = bl.thread(); v < n * below; v += bl.count()) {
      A* a = v < below ? m0 : m1;
      const int i = k + 1 + (v < below ? v : v - below);
      a[i * ld + k] /= M::sqrt(a[k * ld + k]);
    }
    bl.sync();
  }
  A bad = A(0);
  for (int v = bl.thread(); v < n * D; v += bl.count()) {
    A* a = v < D ? m0 : m1;
    const int i = v < D ? v : v - D;
    const A p = a[i * ld + i];
    bad += (p > A(0)) & (p <= kl_max<A>()) ? A(0) : kl_nan<A>();
    a[i * ld + i] = M::sqrt(p > A(0) ? p : A(0));
  }
  bl.sync();
  return bad;
}

// Column c of X <- L^-1 (column c of X), rows from s (entries above s are 0).
template <typename A>
GKL_INLINE void solve_col(const A* L, A* X, int ld, int D, int c, int s) {
  for (int i = s; i < D; ++i) {
    A acc = X[i * ld + c];
    for (int k = s; k < i; ++k) acc -= L[i * ld + k] * X[k * ld + c];
    X[i * ld + c] = acc / L[i * ld + i];
  }
}

// Column c of Y <- L^-T (column c of X) in rows e .. D - 1 (Y may be X:
// row i reads only rows below it). Rows e .. D - 1 of L^-T x depend only on
// those rows of x, so with e = c and a lower-triangular X this is column c
// of tril(L^-T X).
template <typename A>
GKL_INLINE void back_col(const A* L, const A* X, A* Y, int ld, int D, int c, int e) {
  for (int i = D - 1; i >= e; --i) {
    A acc = X[i * ld + c];
    for (int k = i + 1; k < D; ++k) acc -= L[k * ld + i] * Y[k * ld + c];
    Y[i * ld + c] = acc / L[i * ld + i];
  }
}

// Row i of X <- (row i of X) L^-1 (the transpose of L^-T applied to it).
template <typename A>
GKL_INLINE void back_row(const A* L, A* X, int ld, int D, int i) {
  for (int c = D - 1; c >= 0; --c) {
    A acc = X[i * ld + c];
    for (int k = c + 1; k < D; ++k) acc -= L[k * ld + c] * X[i * ld + k];
    X[i * ld + c] = acc / L[c * ld + c];
  }
}

// Loads row `row` (p into E, or into P for the cov backward; q into Q;
// delta into E's column D), factors cov sides, and leaves E = Lq^-1 (Lp -
// Lq) with b = Lq^-1 delta in column D, dp = diag(Lp) (Lq = I without q,
// not stored). Returns this thread's validity term (summed by the caller).
template <FullParam P, bool HasQ, typename M, typename S, typename A, typename B>
GKL_INLINE A prepare(const FullRows& r, int64_t row, const B& bl, const Scratch<A>& w, bool keep_p) {
  const int D = w.D, ld = w.ld;
  A* lp = keep_p ? w.P : w.E;
  bl.sync();  // the previous row's reads of the scratch are done
  A bad = load_tril<S>(r, 0, row, bl, lp, ld);
  const bool host_q = HasQ && r.lq_shared != nullptr;
  if constexpr (HasQ) {
    bad += host_q ? load_shared_factor(r, bl, w.Q, ld) : load_tril<S>(r, 1, row, bl, w.Q, ld);
  }
  for (int i = bl.thread(); i < D; i += bl.count()) {
    const A mp = kl_load(static_cast<const S*>(r.mu_p)[row * r.mu_rs[0] + i * r.mu_cs[0]]);
    const A mq = HasQ ? kl_load(static_cast<const S*>(r.mu_q)[row * r.mu_rs[1] + i * r.mu_cs[1]]) : A(0);
    bad += (mp - mp) + (mq - mq);
    w.E[i * ld + D] = mq - mp;
  }
  bl.sync();
  if constexpr (P == FullParam::Cov) bad += cholesky<M>(bl, lp, w.Q, HasQ && !host_q ? 2 : 1, D, ld);
  for (int idx = bl.thread(); idx < D * D; idx += bl.count()) {  // E = Lp - Lq, lower
    const int i = idx / D, j = idx - i * D;
    if (j <= i) {
      const A v = lp[i * ld + j];
      if (i == j) w.dp[i] = v;
      w.E[i * ld + j] = v - (HasQ ? w.Q[i * ld + j] : (i == j ? A(1) : A(0)));
    } else {
      w.E[i * ld + j] = A(0);
    }
  }
  bl.sync();
  if constexpr (HasQ) {
    for (int v = bl.thread(); v <= D; v += bl.count()) {
      int c, s;
      column_of<true>(v, D, &c, &s);
      solve_col(w.Q, w.E, ld, D, c, s);
    }
    bl.sync();
  }
  return bad;
}

// KL of row `row` (every thread returns it); P: the kind of both sides.
template <FullParam P, bool HasQ, typename M, typename S, typename A, typename B>
GKL_INLINE A forward(const FullRows& r, int64_t row, const B& bl, const Scratch<A>& w) {
  const int D = w.D, ld = w.ld;
  A term = prepare<P, HasQ, M, S>(r, row, bl, w, false);
  for (int v = bl.thread(); v <= D; v += bl.count()) {
    int c, s;
    column_of<true>(v, D, &c, &s);
    if (c == D) {
      for (int i = 0; i < D; ++i) term += w.E[i * ld + D] * w.E[i * ld + D];
    } else {
      for (int i = c + 1; i < D; ++i) term += w.E[i * ld + c] * w.E[i * ld + c];
      term += HasQ ? diag_term2<DiagParam::Std, true, M>(A(0), w.dp[c], A(0), w.Q[c * ld + c])
                   : diag_term2<DiagParam::Std, false, M>(A(0), w.dp[c], A(0), A(0));
    }
  }
  return A(0.5) * bl.sum(term);
}

// Output k's D x D matrix of row `row` <- scale * f(i, j), every element,
// in the output's memory order.
template <typename S, typename A, typename B, typename F>
GKL_INLINE void store_matrix(const FullGradOut& o, int k, int64_t row, int D, const B& bl, A scale, const F& f) {
  S* out = static_cast<S*>(o.grad[k]) + row * D * D;
  for (int idx = bl.thread(); idx < D * D; idx += bl.count()) {
    const int a = idx / D, c = idx - a * D;
    const int i = o.col_major[k] ? c : a, j = o.col_major[k] ? a : c;
    out[idx] = kl_store<S>(scale * f(i, j));
  }
}

// dmu_p = -g y, dmu_q = g y (y: column D of Y).
template <typename S, typename A, typename B>
GKL_INLINE void store_means(const FullGradOut& o, int64_t row, int D, const B& bl, A g, const A* Y, int ld) {
  for (int i = bl.thread(); i < D; i += bl.count()) {
    const A y = Y[i * ld + D];
    if (o.grad[0]) static_cast<S*>(o.grad[0])[row * D + i] = kl_store<S>(-g * y);
    if (o.grad[2]) static_cast<S*>(o.grad[2])[row * D + i] = kl_store<S>(g * y);
  }
}

// Gradients of g * KL of row `row`, scale_tril pairs.
template <bool HasQ, typename M, typename S, typename A, typename B>
GKL_INLINE void backward_tril(const FullRows& r, int64_t row, A g, const FullGradOut& o, const B& bl,
                              const Scratch<A>& w) {
  const int D = w.D, ld = w.ld;
  prepare<FullParam::ScaleTril, HasQ, M, S>(r, row, bl, w, false);
  // X = tril(Lq^-T E), column D: y = Lq^-T b (X = E without q).
  const A* X = w.E;
  if constexpr (HasQ) {
    for (int v = bl.thread(); v <= D; v += bl.count()) {
      int c, s;
      column_of<true>(v, D, &c, &s);
      back_col(w.Q, w.E, w.X, ld, D, c, s);
    }
    bl.sync();
    X = w.X;
  }
  store_means<S>(o, row, D, bl, g, X, ld);
  const A* E = w.E;
  if (o.grad[1]) {  // dLp = X + diag(E_ii / Lp_ii)
    store_matrix<S>(o, 1, row, D, bl, g, [&](int i, int j) {
      return j < i ? X[i * ld + j] : (j == i ? X[i * ld + i] + E[i * ld + i] / w.dp[i] : A(0));
    });
  }
  if (HasQ && o.grad[3]) {  // dLq = -S, S_ij = y_i b_j + X_ij + [i == j] E_jj / Lq_jj + sum_{k<=j} X_ik E_jk
    const A* Q = w.Q;
    store_matrix<S>(o, 3, row, D, bl, -g, [&](int i, int j) {
      if (j > i) return A(0);
      A s = X[i * ld + D] * E[j * ld + D] + X[i * ld + j];
      if (i == j) s += E[j * ld + j] / Q[j * ld + j];
      for (int k = 0; k <= j; ++k) s += X[i * ld + k] * E[j * ld + k];
      return s;
    });
  }
}

// Sigma^-1 = L^-T L^-1 into X (full; identity without L), column by column.
template <typename A, typename B>
GKL_INLINE void inverse_cols(const B& bl, const A* L, A* X, int ld, int D) {
  for (int v = bl.thread(); v < D; v += bl.count()) {
    int c, s;
    column_of<false>(v, D, &c, &s);
    for (int i = 0; i < D; ++i) X[i * ld + c] = i == c ? A(1) : A(0);
    if (L) {
      solve_col(L, X, ld, D, c, s);
      back_col(L, X, X, ld, D, c, 0);
    }
  }
}

// Gradients of g * KL of row `row`, cov pairs (symmetric outputs, written
// from their lower triangles).
template <bool HasQ, typename M, typename S, typename A, typename B>
GKL_INLINE void backward_cov(const FullRows& r, int64_t row, A g, const FullGradOut& o, const B& bl,
                             const Scratch<A>& w) {
  const int D = w.D, ld = w.ld;
  prepare<FullParam::Cov, HasQ, M, S>(r, row, bl, w, true);
  const A* E = w.E;
  const A* Q = w.Q;
  // y = Lq^-T b into X's column D (which S below does not touch).
  if (o.grad[0] || o.grad[2] || (HasQ && o.grad[3])) {
    if (bl.thread() == 0) {
      if (HasQ) {
        back_col(Q, E, w.X, ld, D, D, 0);
      } else {
        for (int i = 0; i < D; ++i) w.X[i * ld + D] = E[i * ld + D];
      }
    }
    bl.sync();
    store_means<S>(o, row, D, bl, g, w.X, ld);
  }
  if (HasQ && o.grad[3]) {
    // X <- S = E + E^T + E E^T + b b^T (E is 0 above its diagonal), then
    // Lq^-T S by columns, then (Lq^-T S) Lq^-1 by rows.
    for (int idx = bl.thread(); idx < D * D; idx += bl.count()) {
      const int i = idx / D, j = idx - i * D;
      const int m = i < j ? i : j;
      A s = E[i * ld + j] + E[j * ld + i] + E[i * ld + D] * E[j * ld + D];
      for (int k = 0; k <= m; ++k) s += E[i * ld + k] * E[j * ld + k];
      w.X[i * ld + j] = s;
    }
    bl.sync();
    for (int c = bl.thread(); c < D; c += bl.count()) back_col(Q, w.X, w.X, ld, D, c, 0);
    bl.sync();
    for (int i = bl.thread(); i < D; i += bl.count()) back_row(Q, w.X, ld, D, i);
    bl.sync();
    const A* X = w.X;
    store_matrix<S>(o, 3, row, D, bl, A(-0.5) * g,
                    [&](int i, int j) { return i >= j ? X[i * ld + j] : X[j * ld + i]; });
  }
  if (o.grad[1]) {  // (Sq^-1 - Sp^-1) / 2: Sq^-1 into X, Sp^-1 into E
    bl.sync();  // E, X no longer read
    inverse_cols(bl, HasQ ? Q : static_cast<const A*>(nullptr), w.X, ld, D);
    inverse_cols(bl, static_cast<const A*>(w.P), w.E, ld, D);
    bl.sync();
    const A* X = w.X;
    store_matrix<S>(o, 1, row, D, bl, A(0.5) * g, [&](int i, int j) {
      const int a = i >= j ? i : j, b = i >= j ? j : i;
      return X[a * ld + b] - E[a * ld + b];
    });
  }
}

// Gradients of g * KL of row `row`; P: the kind of both sides.
template <FullParam P, bool HasQ, typename M, typename S, typename A, typename B>
GKL_INLINE void backward(const FullRows& r, int64_t row, A g, const FullGradOut& o, const B& bl,
                         const Scratch<A>& w) {
  if constexpr (P == FullParam::Cov) {
    backward_cov<HasQ, M, S>(r, row, g, o, bl, w);
  } else {
    backward_tril<HasQ, M, S>(r, row, g, o, bl, w);
  }
}

}  // namespace block
}  // namespace gaussian_kl
