// kl_full_group.h — the full-covariance KL of one scale_tril or cov pair on
// a group of G lanes (G = 8, 16 or 32; a CUDA warp holds 32 / G groups),
// forward and backward. Lane i holds row i of every matrix in registers
// (arrays of G indexed by unrolled loop counters only, so they stay
// registers); the Cholesky factorisation and the triangular solves
// broadcast the finished row k to the other lanes, one value per shuffle,
// and transposes go through shared memory. D < G is padded with identity
// rows and columns, which add 0 to the KL, so every lane runs the same
// unrolled code.
//
// The lane primitives come from a policy `L` (the CUDA kernels pass warp
// shuffles; tests/cpp/test_group_emulation.cpp passes G host threads with a
// barrier, running this exact code on the CPU):
//   int lane() const;                       0 .. G - 1
//   T shfl(T v, int src) const;             v of lane src (all G lanes call it)
//   T shfl_xor(T v, int mask) const;        v of lane (lane ^ mask)
//   void sync() const;                      barrier over the group
//   A* smem() const;                        G * (G + 1) accumulators of this group
// Same math as kl_full_row.h (DESIGN §2): E = Lq^-1 (Lp - Lq), b = Lq^-1 d,
//   2 KL = sum_{j<i} E_ij^2 + sum_i phi(2 log(Lp_ii / Lq_ii)) + |b|^2,
//   dLp = tril(Lq^-T E) + diag(E_ii / Lp_ii), dLq = -xet_s, dmu_q = -dmu_p = Lq^-T b,
//   dSp = (Sq^-1 - Sp^-1) / 2, dSq = -Lq^-T (E + E^T + E E^T + b b^T) Lq^-1 / 2.
// No torch headers.
#pragma once

#include "kl_args.h"
#include "kl_math.h"

#if defined(__CUDACC__)
#define GKL_UNROLL _Pragma("unroll")
#else
#define GKL_UNROLL
#endif

namespace gaussian_kl {
namespace group {

// The pairs this code handles, 1 <= D <= 32: p against a q of the same
// kind, scale_tril or cov (q per row or shared; not a host-factored shared
// covariance), or none (N(0, I)).
inline bool usable(FullParam pp, FullParam pq, const FullRows& r) {
  const bool kind = pp == FullParam::ScaleTril || pp == FullParam::Cov;
  return kind && (!r.has_q() || pq == pp) && r.dim >= 1 && r.dim <= 32 && r.lq_shared == nullptr;
}

// Group width for event size D.
inline int width(int64_t D) { return D <= 8 ? 8 : (D <= 16 ? 16 : 32); }

// Row i of side k (0 = p, 1 = q) into l[0 .. G): the lower triangle of a
// live row (i < D), the identity row otherwise; 0 above the diagonal.
// Returns x - x over the values read (NaN if one is not finite).
template <int G, typename S, typename A>
GKL_INLINE A load_row(const FullRows& r, int k, int64_t row, int i, A* l) {
  const int D = static_cast<int>(r.dim);
  const S* m = static_cast<const S*>(k == 0 ? r.m_p : r.m_q);
  const int64_t base = row * r.m_rs[k] + i * r.m_s0[k], s1 = r.m_s1[k];
  A bad = A(0);
  GKL_UNROLL
  for (int c = 0; c < G; ++c) {
    A v = c == i ? A(1) : A(0);
    if (i < D && c <= i) {
      v = kl_load(m[base + c * s1]);
      bad += v - v;
    }
    l[c] = v;
  }
  return bad;
}

// Forward substitution, right-looking: at step k row k of E (and b_k) is
// final once lane k has divided it by Lq_kk; lanes i > k take
// Lq_ik * (row k) off their rows. Row i is finished at step i.
template <int G, typename A, typename L>
GKL_INLINE void solve_rows(const L& lanes, int i, const A* lq, A* e, A* b) {
  GKL_UNROLL
  for (int k = 0; k < G; ++k) {
    if (i == k) {
      const A inv = A(1) / lq[k];
      GKL_UNROLL
      for (int c = 0; c <= k; ++c) e[c] *= inv;
      *b *= inv;
    }
    if (k + 1 < G) {
      const A l = i > k ? lq[k] : A(0);
      GKL_UNROLL
      for (int c = 0; c <= k; ++c) e[c] -= l * lanes.shfl(e[c], k);
      *b -= l * lanes.shfl(*b, k);
    }
  }
}

// In-place Cholesky factor of the rows a (lower triangle of a covariance,
// identity padding), left-looking: at step k lane k finishes L_kk from its
// own row, then row k is broadcast and every lane i > k computes
// L_ik = (A_ik - sum_{j<k} L_ij L_kj) / L_kk (the order of cholesky_lower).
// Returns 0, or NaN if a pivot is not positive and finite (not PD / NaN).
template <int G, typename M, typename A, typename L>
GKL_INLINE A cholesky_rows(const L& lanes, int i, A* a) {
  bool ok = true;
  GKL_UNROLL
  for (int k = 0; k < G; ++k) {
    if (i == k) {
      A s = a[k];
      GKL_UNROLL
      for (int j = 0; j < k; ++j) s -= a[j] * a[j];
      ok = (s > A(0)) & (s <= kl_max<A>());
      a[k] = M::sqrt(s > A(0) ? s : A(0));
    }
    if (k + 1 < G) {
      A t = A(0);
      GKL_UNROLL
      for (int j = 0; j < k; ++j) t += a[j] * lanes.shfl(a[j], k);
      const A lkk = lanes.shfl(a[k], k);
      if (i > k) a[k] = (a[k] - t) / lkk;
    }
  }
  return ok ? A(0) : kl_nan<A>();
}

// Row i of side k's factor into l: the scale_tril itself, or the Cholesky
// factor of the covariance.
template <int G, FullParam P, typename M, typename S, typename A, typename L>
GKL_INLINE A load_factor_row(const FullRows& r, int k, int64_t row, const L& lanes, A* l) {
  const int i = lanes.lane();
  A bad = load_row<G, S>(r, k, row, i, l);
  if (P == FullParam::Cov) bad += cholesky_rows<G, M>(lanes, i, l);
  return bad;
}

// Loads row i of p (and q) and solves row i of E and b. lp, lq, e: rows of
// Lp, Lq (identity without q), E; returns x - x over the row's inputs.
template <int G, FullParam P, bool HasQ, typename M, typename S, typename A, typename L>
GKL_INLINE A prepare(const FullRows& r, int64_t row, const L& lanes, A* lp, A* lq, A* e, A* b) {
  const int i = lanes.lane();
  const bool live = i < r.dim;
  A bad = load_factor_row<G, P, M, S>(r, 0, row, lanes, lp);
  A mp = A(0), mq = A(0);
  if (live) {
    mp = kl_load(static_cast<const S*>(r.mu_p)[row * r.mu_rs[0] + i * r.mu_cs[0]]);
    if (HasQ) mq = kl_load(static_cast<const S*>(r.mu_q)[row * r.mu_rs[1] + i * r.mu_cs[1]]);
  }
  bad += (mp - mp) + (mq - mq);
  *b = mq - mp;  // delta (= -mu_p without q)
  if (HasQ) {
    bad += load_factor_row<G, P, M, S>(r, 1, row, lanes, lq);
  } else {
    GKL_UNROLL
    for (int c = 0; c < G; ++c) lq[c] = c == i ? A(1) : A(0);
  }
  GKL_UNROLL
  for (int c = 0; c < G; ++c) e[c] = lp[c] - lq[c];
  if constexpr (HasQ) solve_rows<G>(lanes, i, lq, e, b);
  return bad;
}

// x[c] where c == i (a lane-dependent index, picked without indexing the
// register array).
template <int G, typename A>
GKL_INLINE A at_lane(const A* x, int i) {
  A v = A(0);
  GKL_UNROLL
  for (int c = 0; c < G; ++c) v = c == i ? x[c] : v;
  return v;
}

// Sum of v over the group's lanes (the same xor tree on every lane).
template <int G, typename A, typename L>
GKL_INLINE A group_sum(A v, const L& lanes) {
  GKL_UNROLL
  for (int m = G / 2; m > 0; m >>= 1) v += lanes.shfl_xor(v, m);
  return v;
}

// KL of row `row` (every lane returns it); P: the kind of both sides.
template <int G, FullParam P, bool HasQ, typename M, typename S, typename L,
          typename A = typename AccType<S>::type>
GKL_INLINE A forward(const FullRows& r, int64_t row, const L& lanes) {
  A lp[G], lq[G], e[G], b;
  const int i = lanes.lane();
  const A bad = prepare<G, P, HasQ, M, S>(r, row, lanes, lp, lq, e, &b);
  A off = A(0);
  GKL_UNROLL
  for (int c = 0; c < G; ++c) off += c < i ? e[c] * e[c] : A(0);
  A term = off + b * b + bad;
  if (i < r.dim) {
    const A dp = at_lane<G>(lp, i);
    term += HasQ ? diag_term2<DiagParam::Std, true, M>(A(0), dp, A(0), at_lane<G>(lq, i))
                 : diag_term2<DiagParam::Std, false, M>(A(0), dp, A(0), A(0));
  }
  return A(0.5) * group_sum<G>(term, lanes);
}

// out <- column i of the matrix whose row i is in (lane i), through shared
// memory (out may alias in).
template <int G, typename A, typename L>
GKL_INLINE void transpose(const L& lanes, int i, const A* in, A* out) {
  A* sm = lanes.smem();
  lanes.sync();  // the previous transpose's reads are done
  GKL_UNROLL
  for (int c = 0; c < G; ++c) sm[i * (G + 1) + c] = in[c];
  lanes.sync();
  GKL_UNROLL
  for (int c = 0; c < G; ++c) out[c] = sm[c * (G + 1) + i];
}

// Which columns back_solve carries: none (only the scalar y), the lower
// triangle, or all G.
enum class Cols { None, Tril, Full };

// Rows x (and the scalar y, if not null) <- the rows of L^-T x (L^-T y),
// given lt = column i of L and lii = L_ii. Back substitution, right-looking
// from the last row: row m is final once lane m has divided it by L_mm;
// lanes i < m take L_mi * (row m) off their rows. Cols::Tril computes
// tril(L^-T X) for a lower-triangular X (entries c in (i, m) of lane i pick
// up values too: above the diagonal, never read, and they only ever feed
// entries above the diagonal).
template <int G, Cols C, typename A, typename L>
GKL_INLINE void back_solve(const L& lanes, int i, const A* lt, A lii, A* x, A* y) {
  GKL_UNROLL
  for (int m = G - 1; m >= 0; --m) {
    if (i == m) {
      const A inv = A(1) / lii;
      if constexpr (C != Cols::None) {
        GKL_UNROLL
        for (int c = 0; c < (C == Cols::Full ? G : m + 1); ++c) x[c] *= inv;
      }
      if (y) *y *= inv;
    }
    if (m > 0) {
      const A l = i < m ? lt[m] : A(0);  // L_mi
      if constexpr (C != Cols::None) {
        GKL_UNROLL
        for (int c = 0; c < (C == Cols::Full ? G : m); ++c) x[c] -= l * lanes.shfl(x[c], m);
      }
      if (y) *y -= l * lanes.shfl(*y, m);
    }
  }
}

// Stores row i of a D x D output (k: its index in o), scale * v[c] for the
// columns c < D.
template <int G, typename S, typename A>
GKL_INLINE void store_row(const FullGradOut& o, int k, int64_t row, int i, int D, const A* v, A scale) {
  S* out = static_cast<S*>(o.grad[k]) + row * D * D;
  GKL_UNROLL
  for (int c = 0; c < G; ++c) {
    if (c < D) out[o.at(k, i, c, D)] = kl_store<S>(scale * v[c]);
  }
}

// Gradients of g * KL of row `row` (scale_tril pairs) into the outputs of o
// that are not null (layouts as in full_row_backward). Lane i writes row i
// of each output.
template <int G, bool HasQ, typename M, typename S, typename A, typename L>
GKL_INLINE void backward_tril(const FullRows& r, int64_t row, A g, const FullGradOut& o, bool store,
                              const L& lanes) {
  A lp[G], lq[G], e[G], b;
  const int i = lanes.lane();
  const int D = static_cast<int>(r.dim);
  const bool live = store && i < D;
  prepare<G, FullParam::ScaleTril, HasQ, M, S>(r, row, lanes, lp, lq, e, &b);
  const A lpii = at_lane<G>(lp, i), lqii = at_lane<G>(lq, i);

  // x = row i of X = tril(Lq^-T E), y = (Lq^-T b)_i (lq <- column i of Lq).
  A x[G], y = b;
  GKL_UNROLL
  for (int c = 0; c < G; ++c) x[c] = e[c];
  if constexpr (HasQ) {
    transpose<G>(lanes, i, lq, lq);
    back_solve<G, Cols::Tril>(lanes, i, lq, lqii, x, &y);
  }

  if (live && o.grad[0]) static_cast<S*>(o.grad[0])[row * D + i] = kl_store<S>(-g * y);
  if (live && o.grad[2]) static_cast<S*>(o.grad[2])[row * D + i] = kl_store<S>(g * y);
  if (live && o.grad[1]) {  // dLp = X + diag(E_ii / Lp_ii)
    const A eii = at_lane<G>(e, i);
    A t[G];
    GKL_UNROLL
    for (int c = 0; c < G; ++c) t[c] = c < i ? x[c] : (c == i ? x[c] + eii / lpii : A(0));
    store_row<G, S>(o, 1, row, i, D, t, g);
  }
  if (HasQ && o.grad[3]) {  // dLq = -S, S_ij = y_i b_j + X_ij + [i == j] E_jj / Lq_jj + sum_{k<=j} X_ik E_jk
    A sr[G];
    GKL_UNROLL
    for (int j = 0; j < G; ++j) {
      A s = y * lanes.shfl(b, j) + x[j];
      GKL_UNROLL
      for (int k = 0; k <= j; ++k) s += x[k] * lanes.shfl(e[k], j);
      if (i == j) s += e[j] / lqii;
      sr[j] = j <= i ? s : A(0);
    }
    if (live) store_row<G, S>(o, 3, row, i, D, sr, -g);
  }
}

// row i of a symmetric result from its lower triangle (c <= i, this lane)
// and its upper from the lanes below (exactly symmetric output).
template <int G, typename A, typename L>
GKL_INLINE void symmetrise(const L& lanes, int i, A* v) {
  A t[G];
  transpose<G>(lanes, i, v, t);
  GKL_UNROLL
  for (int c = 0; c < G; ++c) v[c] = c <= i ? v[c] : t[c];
}

// Row i of Sigma^-1 = L^-T L^-1 into w, given the rows l and the column lt
// of the factor L.
template <int G, typename A, typename L>
GKL_INLINE void inverse_row(const L& lanes, int i, const A* l, const A* lt, A lii, A* w) {
  A unused = A(0);
  GKL_UNROLL
  for (int c = 0; c < G; ++c) w[c] = c == i ? A(1) : A(0);
  solve_rows<G>(lanes, i, l, w, &unused);  // rows of L^-1 (lower triangular)
  back_solve<G, Cols::Full>(lanes, i, lt, lii, w, static_cast<A*>(nullptr));
}

// Gradients of g * KL of row `row` for cov pairs (formulas of
// full_row_backward): dSp = (Sq^-1 - Sp^-1) / 2, dSq = -Lq^-T S Lq^-1 / 2 with
// S = E + E^T + E E^T + b b^T, dmu_q = -dmu_p = Lq^-T b. Symmetric outputs.
template <int G, bool HasQ, typename M, typename S, typename A, typename L>
GKL_INLINE void backward_cov(const FullRows& r, int64_t row, A g, const FullGradOut& o, bool store,
                             const L& lanes) {
  A lp[G], lq[G], e[G], b;
  const int i = lanes.lane();
  const int D = static_cast<int>(r.dim);
  const bool live = store && i < D;
  prepare<G, FullParam::Cov, HasQ, M, S>(r, row, lanes, lp, lq, e, &b);
  const A lpii = at_lane<G>(lp, i), lqii = at_lane<G>(lq, i);
  A lqt[G];  // column i of Lq
  if constexpr (HasQ) transpose<G>(lanes, i, lq, lqt);

  A y = b;  // Lq^-T b (b itself without q)
  if (HasQ && o.grad[3]) {
    // Rows of S (full): S_ij = E_ij + E_ji + sum_{k <= min(i, j)} E_ik E_jk + b_i b_j
    // (E is 0 above its diagonal), then U = Lq^-T S (y rides along) and
    // Lq^-T U^T = Lq^-T S Lq^-1.
    A et[G], sr[G];
    transpose<G>(lanes, i, e, et);
    GKL_UNROLL
    for (int j = 0; j < G; ++j) {
      A s = e[j] + et[j] + b * lanes.shfl(b, j);
      GKL_UNROLL
      for (int k = 0; k <= j; ++k) s += e[k] * lanes.shfl(e[k], j);
      sr[j] = s;
    }
    back_solve<G, Cols::Full>(lanes, i, lqt, lqii, sr, &y);
    transpose<G>(lanes, i, sr, sr);
    back_solve<G, Cols::Full>(lanes, i, lqt, lqii, sr, static_cast<A*>(nullptr));
    symmetrise<G>(lanes, i, sr);
    if (live) store_row<G, S>(o, 3, row, i, D, sr, A(-0.5) * g);
  } else if (HasQ && (o.grad[0] || o.grad[2])) {
    back_solve<G, Cols::None>(lanes, i, lqt, lqii, static_cast<A*>(nullptr), &y);
  }
  if (live && o.grad[0]) static_cast<S*>(o.grad[0])[row * D + i] = kl_store<S>(-g * y);
  if (live && o.grad[2]) static_cast<S*>(o.grad[2])[row * D + i] = kl_store<S>(g * y);

  if (o.grad[1]) {
    A lpt[G], w[G], d[G];
    transpose<G>(lanes, i, lp, lpt);
    inverse_row<G>(lanes, i, lp, lpt, lpii, w);
    if constexpr (HasQ) {
      inverse_row<G>(lanes, i, lq, lqt, lqii, d);
    } else {
      GKL_UNROLL
      for (int c = 0; c < G; ++c) d[c] = c == i ? A(1) : A(0);
    }
    GKL_UNROLL
    for (int c = 0; c < G; ++c) d[c] -= w[c];
    symmetrise<G>(lanes, i, d);
    if (live) store_row<G, S>(o, 1, row, i, D, d, A(0.5) * g);
  }
}

// Gradients of g * KL of row `row`; P: the kind of both sides.
template <int G, FullParam P, bool HasQ, typename M, typename S, typename A, typename L>
GKL_INLINE void backward(const FullRows& r, int64_t row, A g, const FullGradOut& o, bool store, const L& lanes) {
  if constexpr (P == FullParam::Cov) {
    backward_cov<G, HasQ, M, S>(r, row, g, o, store, lanes);
  } else {
    backward_tril<G, HasQ, M, S>(r, row, g, o, store, lanes);
  }
}

}  // namespace group
}  // namespace gaussian_kl
