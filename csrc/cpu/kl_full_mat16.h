// Per-matrix rows of the full-covariance KL for D = 16, float, scale_tril
// on both sides: one 512-bit vector per matrix row (lane j = column j), so
// a row's matrices never leave the registers and need no transposition into
// lanes (the batch kernels of kl_full_batch.h spend ~45 % of their time
// gathering 16 rows into lanes at this size). The recurrences of kl_math.h,
// each step one vector instruction over the 16 columns:
//   E = Lq^-1 (Lp - Lq): E_i = (Lp_i - Lq_i) / Lq_ii - sum_{k<i} (Lq_ik / Lq_ii) E_k,
//     with b = Lq^-1 delta riding along in lane 15 (free above the diagonal);
//   X = Lq^-T E:         X_j = (E_j - sum_{i>j} Lq_ij X_i) / Lq_jj, lane 15 y = Lq^-T b;
//   dLq from X E^T (a product, no second solve: xet_s of kl_full_row.h).
// Reads row-major or column-major matrices (lower triangle only, masked
// loads; Lp - Lq transposed into rows once when column-major) and writes
// the gradients in their inputs' layouts without transposing them (a
// column-major gradient is built column by column); the batch kernels take
// every other layout. Compiled for AVX-512
// whatever the caller's clone, called only where the CPU has it
// (tiled::available()). No torch headers.
#pragma once

#include <cstdint>

#include "kl_full_batch.h"  // transpose16, GKL_HAVE_GATHER, <immintrin.h>

namespace gaussian_kl {
namespace cpu {
namespace mat16 {

#ifdef GKL_HAVE_GATHER
#define GKL_HAVE_MAT16 1
#define GKL_M16 __attribute__((target("avx512f"), always_inline)) inline
#define GKL_M16_ENTRY __attribute__((target("avx512f"), noinline))

constexpr int D = 16;
using Rows = __m512[D];

// The layouts read here: rows or columns of each matrix contiguous (and
// the diagonal's offsets in int32), means contiguous.
inline bool usable(const FullRows& r) {
  for (int k = 0; k < (r.has_q() ? 2 : 1); ++k) {
    const int64_t s0 = r.m_s0[k], s1 = r.m_s1[k];
    if (!(s1 == 1 || s0 == 1) || s0 < 0 || s1 < 0 || (s0 + s1) * D >= (int64_t(1) << 31)) return false;
    if (r.mu_cs[k] != 1) return false;
  }
  return tiled::available();
}

// After the stores of a broadcast source: the solves then broadcast its
// elements from memory (load ports) instead of shuffling them out of the
// registers the compiler still holds (port 5, shared with the FMAs).
GKL_M16 void from_memory() {
  asm volatile("" ::: "memory");
}

// One row's factors, E and b. Qs: Lq_ik / Lq_ii, k < i (the broadcast
// source of the forward solve); Qu: Lq_ij (of the backward's back
// substitution); both in q's own layout (QCol: column-major), read through
// qs() / qu(). Es, Xs: the rows of E' and X' (broadcast sources of dLq).
struct Work {
  // Lane masks, read from memory (a load) rather than built from an
  // immediate (two uops, one on port 5) at each use.
  __mmask16 lo[D + 1];  // lanes j < n
  __mmask16 one[D];     // lane i
  alignas(64) float Qs[D * D];
  alignas(64) float Qu[D * D];
  alignas(64) float Es[D * D];
  alignas(64) float Xs[D * D];
  alignas(64) float rq[D];
  alignas(64) float b[D];
  alignas(64) float dg[D];

  GKL_M16 Work() {
    for (int n = 0; n <= D; ++n) lo[n] = static_cast<__mmask16>((1u << n) - 1);
    for (int i = 0; i < D; ++i) one[i] = static_cast<__mmask16>(1u << i);
    from_memory();
  }
  GKL_M16 __mmask16 tril(int i) const { return lo[i + 1]; }  // lanes j <= i
  GKL_M16 __mmask16 strict(int i) const { return lo[i]; }    // lanes j < i
  GKL_M16 __mmask16 lower(int j) const { return static_cast<__mmask16>(~lo[j]); }  // lanes i >= j
  template <bool QCol>
  GKL_M16 float qs(int i, int k) const { return QCol ? Qs[k * D + i] : Qs[i * D + k]; }
  template <bool QCol>
  GKL_M16 float qu(int i, int j) const { return QCol ? Qu[j * D + i] : Qu[i * D + j]; }
};

// The lower triangle of m, as rows (Col = false: lane j of R[i] is m_ij,
// lanes j > i zero) or as columns (Col: lane i of R[j] is m_ij, lanes i < j
// zero), whatever m's layout (a transpose when they differ); bad += 0 * x
// (NaN for a non-finite value).
template <bool Col>
GKL_M16 void load_tril(const Work& w, const float* m, int64_t s0, int64_t s1, Rows& R, __m512& bad) {
  const bool m_col = s1 != 1;
  if (!m_col) {
#pragma GCC unroll 16
    for (int i = 0; i < D; ++i) R[i] = _mm512_maskz_loadu_ps(w.tril(i), m + i * s0);
  } else {
#pragma GCC unroll 16
    for (int j = 0; j < D; ++j) R[j] = _mm512_maskz_loadu_ps(w.lower(j), m + j * s1);
  }
  if (m_col != Col) transpose16(R);
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) bad = _mm512_fmadd_ps(R[i], _mm512_setzero_ps(), bad);
}

// The diagonal of a matrix, m_ii at m + i * step.
GKL_M16 __m512 diagonal(const float* m, int64_t step) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(static_cast<int32_t>(step)));
  return _mm512_i32gather_ps(idx, m, 4);
}

// E' = E with b in lane 15 (E_i15 = 0 for i < 15, and E_15,15 is known
// from the diagonals): b = Lq^-1 delta is the same recurrence as E, so it
// rides along in the lane the triangle leaves free, and the forward solve
// covers both. Row 15 is the exception: its lane 15 holds b_15 and E_15,15
// is ediag's lane 15.
constexpr __mmask16 kLast = 0x8000;

struct Prep {
  Rows E;  // E'
  __m512 dp, dq, rq, ediag, bad;
};

// Loads row `row` and solves for E' (rows). Lp is read in q's layout
// (QCol), so that Lp - Lq needs one transpose into rows when both are
// column-major (torch.linalg.cholesky's output) and none when both are
// row-major; Lq's elements are broadcast from its own layout.
template <bool HasQ, bool QCol>
GKL_M16 void prepare(const FullRows& r, int64_t row, Work& w, Prep& o) {
  o.bad = _mm512_setzero_ps();
  Rows P;
  const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
  load_tril<QCol>(w, lp, r.m_s0[0], r.m_s1[0], P, o.bad);
  o.dp = diagonal(lp, r.m_s0[0] + r.m_s1[0]);
  const __m512 mp = _mm512_loadu_ps(static_cast<const float*>(r.mu_p) + row * r.mu_rs[0]);
  o.bad = _mm512_fmadd_ps(mp, _mm512_setzero_ps(), o.bad);
  if (!HasQ) {  // Lq = I: E = Lp - I, b = -mu_p
    _mm512_store_ps(w.b, _mm512_sub_ps(_mm512_setzero_ps(), mp));
    from_memory();
#pragma GCC unroll 16
    for (int i = 0; i < D; ++i) {
      const __m512 e = _mm512_mask_sub_ps(P[i], w.one[i], P[i], _mm512_set1_ps(1.0f));
      o.E[i] = _mm512_mask_mov_ps(e, kLast, _mm512_set1_ps(w.b[i]));
    }
    o.dq = o.rq = _mm512_set1_ps(1.0f);
    o.ediag = _mm512_sub_ps(o.dp, o.rq);
    return;
  }
  const __m512 mq = _mm512_loadu_ps(static_cast<const float*>(r.mu_q) + row * r.mu_rs[1]);
  o.bad = _mm512_fmadd_ps(mq, _mm512_setzero_ps(), o.bad);
  _mm512_store_ps(w.b, _mm512_sub_ps(mq, mp));  // delta
  Rows Q;
  const float* lq = static_cast<const float*>(r.m_q) + row * r.m_rs[1];
  load_tril<QCol>(w, lq, r.m_s0[1], r.m_s1[1], Q, o.bad);
  o.dq = diagonal(lq, r.m_s0[1] + r.m_s1[1]);
  o.rq = _mm512_div_ps(_mm512_set1_ps(1.0f), o.dq);
  o.ediag = _mm512_mul_ps(_mm512_sub_ps(o.dp, o.dq), o.rq);
  _mm512_store_ps(w.rq, o.rq);
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) {
    _mm512_store_ps(w.Qu + i * D, Q[i]);
    if (QCol) {  // column i: lanes k > i of Lq_ki / Lq_kk
      _mm512_store_ps(w.Qs + i * D, _mm512_maskz_mul_ps(static_cast<__mmask16>(~w.tril(i)), Q[i], o.rq));
    } else {
      _mm512_store_ps(w.Qs + i * D, _mm512_maskz_mul_ps(w.strict(i), Q[i], _mm512_set1_ps(w.rq[i])));
    }
    P[i] = _mm512_sub_ps(P[i], Q[i]);
  }
  if (QCol) transpose16(P);  // rows of Lp - Lq
  from_memory();
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) {  // E'_i = ([Lp_i - Lq_i | delta_i]) / Lq_ii - sum_{k<i} (Lq_ik / Lq_ii) E'_k
    const __m512 d = _mm512_mask_mov_ps(P[i], kLast, _mm512_set1_ps(w.b[i]));
    __m512 e = _mm512_mul_ps(d, _mm512_set1_ps(w.rq[i]));
#pragma GCC unroll 16
    for (int k = 0; k < i; ++k) e = _mm512_fnmadd_ps(_mm512_set1_ps(w.qs<QCol>(i, k)), o.E[k], e);
    o.E[i] = e;
  }
}

// 2 KL of the prepared row: sum_{j<i} E_ij^2 and b_i^2 in one masked sum.
template <bool HasQ>
GKL_M16 float kl2(const Prep& p, Work& w) {
  __m512 sq = p.bad;
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) sq = _mm512_mask3_fmadd_ps(p.E[i], p.E[i], sq, w.strict(i) | kLast);
  alignas(64) float dp[D], dq[D];
  _mm512_store_ps(dp, p.dp);
  _mm512_store_ps(dq, p.dq);
  for (int k = 0; k < D; ++k) {  // vectorised by the compiler
    w.dg[k] = HasQ ? diag_term2<DiagParam::Std, true, FastMath>(0.0f, dp[k], 0.0f, dq[k])
                   : diag_term2<DiagParam::Std, false, FastMath>(0.0f, dp[k], 0.0f, 0.0f);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(sq, _mm512_load_ps(w.dg)));
}

// X <- Lq^-T R row by row, every lane (the lanes j <= i of row i are
// tril(Lq^-T R) when R is lower triangular or symmetric; lane 15 of E' is
// y = Lq^-T b).
template <bool HasQ, bool QCol>
GKL_M16 void solve_lt(const Work& w, Rows& X) {
  if (!HasQ) return;
#pragma GCC unroll 16
  for (int j = D - 1; j >= 0; --j) {
    __m512 x = X[j];
#pragma GCC unroll 16
    for (int i = D - 1; i > j; --i) x = _mm512_fnmadd_ps(_mm512_set1_ps(w.qu<QCol>(i, j)), X[i], x);
    X[j] = _mm512_mul_ps(x, _mm512_set1_ps(w.rq[j]));
  }
}

// A gradient's 16 vectors: rows of the matrix (row-major output) or its
// columns (column-major output), masked to the lower triangle, times scale.
GKL_M16 void store_tril(const Work& w, const Rows& X, __m512 scale, bool col_major, float* dst) {
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) {
    const __mmask16 m = col_major ? w.lower(i) : w.tril(i);
    _mm512_storeu_ps(dst + i * D, _mm512_maskz_mul_ps(m, X[i], scale));
  }
}

// Lane 15 of each row of Xs, as a vector (lane i from row i).
GKL_M16 __m512 last_column(const Work& w) {
  const __m512i idx = _mm512_set_epi32(255, 239, 223, 207, 191, 175, 159, 143, 127, 111, 95, 79, 63, 47, 31, 15);
  return _mm512_i32gather_ps(idx, w.Xs, 4);
}

template <bool HasQ, bool QCol>
GKL_M16_ENTRY void forward_rows(const FullRows& r, float* out, int64_t begin, int64_t end) {
  Work w;
  for (int64_t row = begin; row < end; ++row) {
    Prep p;
    prepare<HasQ, QCol>(r, row, w, p);
    out[row] = 0.5f * kl2<HasQ>(p, w);
  }
}

// The gradients from X' = Lq^-T E' (rows; lane 15: y = Lq^-T b):
//   d mu_q = -d mu_p = y,   dLp = tril(X) + diag(E_ii / Lp_ii),
//   dLq = -tril(X + X E^T + y b^T) - diag(E_ii / Lq_ii)   (xet_s, kl_full_row.h).
// Each matrix gradient is built as rows or, for a column-major output, as
// columns (from X^T: no transpose of the result).
template <bool HasQ, bool QCol>
GKL_M16_ENTRY void backward_rows(const FullRows& r, const float* g, int64_t gs, const FullGradOut& o,
                                 int64_t begin, int64_t end) {
  Work w;
  float* gmp = static_cast<float*>(o.grad[0]);
  float* gLp = static_cast<float*>(o.grad[1]);
  float* gmq = static_cast<float*>(o.grad[2]);
  float* gLq = HasQ ? static_cast<float*>(o.grad[3]) : nullptr;
  const bool lp_col = o.col_major[1], lq_col = o.col_major[3];
  for (int64_t row = begin; row < end; ++row) {
    Prep p;
    prepare<HasQ, QCol>(r, row, w, p);
    const __m512 gv = _mm512_set1_ps(g[row * gs]);
    from_memory();  // (else the solve's broadcasts are hoisted into E's and spilled)
    Rows X;
#pragma GCC unroll 16
    for (int i = 0; i < D; ++i) X[i] = p.E[i];
    solve_lt<HasQ, QCol>(w, X);
    const bool dlq_cols = HasQ && gLq && lq_col;  // (the only reader of Es)
#pragma GCC unroll 16
    for (int i = 0; i < D; ++i) {
      _mm512_store_ps(w.Xs + i * D, X[i]);
      if (dlq_cols) _mm512_store_ps(w.Es + i * D, p.E[i]);
    }
    from_memory();
    // E_ii / Lq_ii; lane 15 is X_15,15 (Lq^-T is upper triangular), which
    // lane 15 of X' (y) does not hold.
    const __m512 e_lq = _mm512_mul_ps(p.ediag, p.rq);
    X[D - 1] = _mm512_mask_mov_ps(X[D - 1], kLast, e_lq);
    if (gmp || gmq) {
      const __m512 y = _mm512_mul_ps(last_column(w), gv);
      if (gmp) _mm512_storeu_ps(gmp + row * D, _mm512_sub_ps(_mm512_setzero_ps(), y));
      if (gmq) _mm512_storeu_ps(gmq + row * D, y);
    }
    Rows XT;  // columns of X (XT[15]: y), for the column-major outputs
    if ((gLp && lp_col) || (HasQ && gLq && lq_col)) {
#pragma GCC unroll 16
      for (int i = 0; i < D; ++i) XT[i] = _mm512_load_ps(w.Xs + i * D);
      transpose16(XT);
    }
    if (HasQ && gLq) {
      Rows S;
      if (dlq_cols) {  // column j: X_:j + b_j y + sum_{k<=j} E_jk X_:k, lanes i >= j
        const __m512 y = XT[D - 1];
#pragma GCC unroll 16
        for (int j = 0; j < D; ++j) {
          const __m512 x = j == D - 1 ? e_lq : XT[j];  // (lane 15 of column 15: X_15,15)
          __m512 s = _mm512_fmadd_ps(_mm512_set1_ps(w.Es[j * D + D - 1]), y, x);
#pragma GCC unroll 16
          for (int k = 0; k <= j && k < D - 1; ++k) s = _mm512_fmadd_ps(_mm512_set1_ps(w.Es[j * D + k]), XT[k], s);
          s = _mm512_mask_add_ps(s, w.one[j], s, e_lq);
          if (j == D - 1) s = _mm512_mask3_fmadd_ps(e_lq, p.ediag, s, kLast);  // + X_15,15 E_15,15
          S[j] = s;
        }
      } else {  // row i: X_i + y_i b + sum_{k<=i} X_ik (E^T)_k, lanes j <= i
        Rows ET;
#pragma GCC unroll 16
        for (int i = 0; i < D; ++i) ET[i] = p.E[i];
        transpose16(ET);  // ET[k] lane j: E_jk (k < 15); ET[15] = b
#pragma GCC unroll 16
        for (int i = 0; i < D; ++i) {
          __m512 s = _mm512_fmadd_ps(_mm512_set1_ps(w.Xs[i * D + D - 1]), ET[D - 1], X[i]);
#pragma GCC unroll 16
          for (int k = 0; k <= i && k < D - 1; ++k) s = _mm512_fmadd_ps(_mm512_set1_ps(w.Xs[i * D + k]), ET[k], s);
          s = _mm512_mask_add_ps(s, w.one[i], s, e_lq);
          if (i == D - 1) s = _mm512_mask3_fmadd_ps(e_lq, p.ediag, s, kLast);  // + X_15,15 E_15,15
          S[i] = s;
        }
      }
      store_tril(w, S, _mm512_sub_ps(_mm512_setzero_ps(), gv), lq_col, gLq + row * D * D);
    }
    if (gLp) {  // tril(X) + diag(E_ii / Lp_ii)
      const __m512 add = _mm512_div_ps(p.ediag, p.dp);
      Rows G;
#pragma GCC unroll 16
      for (int i = 0; i < D; ++i) {
        const __m512 x = lp_col ? (i == D - 1 ? e_lq : XT[i]) : X[i];
        G[i] = _mm512_mask_add_ps(x, w.one[i], x, add);
      }
      store_tril(w, G, gv, lp_col, gLp + row * D * D);
    }
  }
}

// q's layout picks the instantiation (Lp is read in q's).
inline bool q_col(const FullRows& r) {
  return r.has_q() && r.m_s1[1] != 1;
}

template <bool HasQ>
void forward(const FullRows& r, float* out, int64_t begin, int64_t end) {
  if (HasQ && q_col(r)) return forward_rows<HasQ, true>(r, out, begin, end);
  forward_rows<HasQ, false>(r, out, begin, end);
}

template <bool HasQ>
void backward(const FullRows& r, const float* g, int64_t gs, const FullGradOut& o, int64_t begin, int64_t end) {
  if (HasQ && q_col(r)) return backward_rows<HasQ, true>(r, g, gs, o, begin, end);
  backward_rows<HasQ, false>(r, g, gs, o, begin, end);
}

#undef GKL_M16
#undef GKL_M16_ENTRY
#endif  // GKL_HAVE_GATHER

}  // namespace mat16
}  // namespace cpu
}  // namespace gaussian_kl
