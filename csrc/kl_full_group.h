// kl_full_group.h — the full-covariance KL of one pair on a group of G
// lanes (G = 8, 16 or 32; a CUDA warp holds 32 / G groups): forward and
// backward for scale_tril pairs, forward for cov pairs (factored in the
// group, same broadcast pattern). Lane i holds row i of every matrix in registers (arrays of
// G indexed by unrolled loop counters only, so they stay registers); the
// solves broadcast the finished row k to the other lanes, one value per
// shuffle. D < G is padded with identity rows and columns, which add 0 to
// the KL, so every lane runs the same unrolled code.
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
//   dLp = tril(Lq^-T E) + diag(E_ii / Lp_ii), dLq = -xet_s, dmu_q = -dmu_p = Lq^-T b.
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
// kind (per row or shared; not a host-factored shared covariance) or none
// (N(0, I)); scale_tril both ways, cov forward only (its backward runs the
// row code).
inline bool usable(FullParam pp, FullParam pq, const FullRows& r, bool backward) {
  const bool kind = pp == FullParam::ScaleTril || (pp == FullParam::Cov && !backward);
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

// Gradients of g * KL of row `row` (scale_tril pairs) into the outputs of o
// that are not null (layouts as in full_row_backward). Lane i writes row i
// of each output.
template <int G, bool HasQ, typename M, typename S, typename A, typename L>
GKL_INLINE void backward(const FullRows& r, int64_t row, A g, const FullGradOut& o, bool store,
                         const L& lanes) {
  A lp[G], lq[G], e[G], b;
  const int i = lanes.lane();
  const int D = static_cast<int>(r.dim);
  const bool live = store && i < D;
  prepare<G, FullParam::ScaleTril, HasQ, M, S>(r, row, lanes, lp, lq, e, &b);
  const A lpii = at_lane<G>(lp, i), lqii = at_lane<G>(lq, i);

  // lq <- column i of Lq (Lq_ci, c >= i) through shared memory.
  if constexpr (HasQ) {
    A* sm = lanes.smem();
    GKL_UNROLL
    for (int c = 0; c < G; ++c) sm[i * (G + 1) + c] = lq[c];
    lanes.sync();
    GKL_UNROLL
    for (int c = 0; c < G; ++c) lq[c] = sm[c * (G + 1) + i];
    lanes.sync();
  }

  // x = row i of X = tril(Lq^-T E), y = (Lq^-T b)_i. Back substitution,
  // right-looking from the last row: row m is final once lane m has divided
  // it by Lq_mm; lanes i < m take Lq_mi * (row m) off their rows. (Entries
  // c in (i, m) of lane i pick up values too: they are above X's diagonal,
  // never read, and only ever feed entries above the diagonal.)
  A x[G], y = b;
  GKL_UNROLL
  for (int c = 0; c < G; ++c) x[c] = e[c];
  if constexpr (HasQ) {
    GKL_UNROLL
    for (int m = G - 1; m >= 0; --m) {
      if (i == m) {
        const A inv = A(1) / lqii;
        GKL_UNROLL
        for (int c = 0; c <= m; ++c) x[c] *= inv;
        y *= inv;
      }
      if (m > 0) {
        const A l = i < m ? lq[m] : A(0);  // Lq_mi
        GKL_UNROLL
        for (int c = 0; c < m; ++c) x[c] -= l * lanes.shfl(x[c], m);  // X_ic, c <= i < m
        y -= l * lanes.shfl(y, m);
      }
    }
  }

  const int64_t sd = static_cast<int64_t>(D) * D;
  if (live && o.grad[0]) static_cast<S*>(o.grad[0])[row * D + i] = kl_store<S>(-g * y);
  if (live && o.grad[2]) static_cast<S*>(o.grad[2])[row * D + i] = kl_store<S>(g * y);
  if (live && o.grad[1]) {  // dLp = X + diag(E_ii / Lp_ii)
    S* gp = static_cast<S*>(o.grad[1]) + row * sd;
    const A eii = at_lane<G>(e, i);
    GKL_UNROLL
    for (int c = 0; c < G; ++c) {
      if (c < D) {
        const A v = c < i ? x[c] : (c == i ? x[c] + eii / lpii : A(0));
        gp[o.at(1, i, c, D)] = kl_store<S>(g * v);
      }
    }
  }
  if (HasQ && o.grad[3]) {  // dLq = -S, S_ij = y_i b_j + X_ij + [i == j] E_jj / Lq_jj + sum_{k<=j} X_ik E_jk
    S* gq = static_cast<S*>(o.grad[3]) + row * sd;
    GKL_UNROLL
    for (int j = 0; j < G; ++j) {
      A s = y * lanes.shfl(b, j) + x[j];
      GKL_UNROLL
      for (int k = 0; k <= j; ++k) s += x[k] * lanes.shfl(e[k], j);
      if (i == j) s += e[j] / lqii;
      if (live && j < D) gq[o.at(3, i, j, D)] = kl_store<S>(j <= i ? -g * s : A(0));
    }
  }
}

}  // namespace group
}  // namespace gaussian_kl
