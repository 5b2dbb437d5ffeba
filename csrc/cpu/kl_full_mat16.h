// Per-matrix rows of the full-covariance KL for D = 16, float, scale_tril
// on both sides: one 512-bit vector per matrix row (lane j = column j), so
// a row's matrices never leave the registers and need no transposition into
// lanes (the batch kernels of kl_full_batch.h spend ~45 % of their time
// gathering 16 rows into lanes at this size). The recurrences of kl_math.h,
// each step one vector instruction over the 16 columns:
//   E = Lq^-1 (Lp - Lq): E_i = (Lp_i - Lq_i - sum_{k<i} Lq_ik E_k) / Lq_ii,
//     with b = Lq^-1 delta riding along in lane 15 (free above the diagonal);
//   X = Lq^-T E:         X_j = (E_j - sum_{i>j} Lq_ij X_i) / Lq_jj, lane 15 y = Lq^-T b;
//   dLq from X E^T (a product, no second solve: xet_s of kl_full_row.h).
// Reads row-major or column-major matrices (whole rows or columns, the
// upper triangle cleared by an AND; Lp - Lq transposed into rows once when
// column-major) and writes the gradients in their inputs' layouts without
// transposing them (a column-major gradient is built column by column); the
// batch kernels take every other layout. The forward of two column-major
// factors (torch.linalg.cholesky's output) solves in 8-lane halves by 8 x 8
// blocks instead (forward_rows_halves). No k-masks in the forward (a kmovw
// costs ~1.6 cycles on AMD Zen 4): lane masks are ANDs with vectors. On
// Zen 4 (2 threads, B = 4096, both column-major) these took the forward
// from 0.28 to 0.20 ms. Compiled for AVX-512 whatever the caller's clone,
// called only where the CPU has it (tiled::available()). No torch headers.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

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

// One row's factors, E and b. Qu: Lq_ij, the broadcast source of both
// solves (entries strictly below the diagonal only), in q's own layout
// (QCol: column-major), read through qu(). Es, Xs: the rows of E' and X'
// (broadcast sources of dLq).
struct Work {
  // Lane masks of the backward, read from memory (a load) rather than built
  // from an immediate (two uops, one on port 5 of an Intel core) at each use.
  __mmask16 lo[D + 1];  // lanes j < n
  __mmask16 one[D];     // lane i
  alignas(64) float Qu[D * D];
  alignas(64) float Es[D * D];
  alignas(64) float Xs[D * D];
  alignas(64) float rq[D];
  alignas(64) float b[D];
  alignas(64) float dg[D];
  // The same lane masks as vectors (all ones / zero per lane), applied by
  // vpandd with a memory operand where the forward needs them: on AMD Zen 4
  // a kmovw costs ~1.6 cycles of throughput and a k-masked load ~2 (an
  // unmasked load and an AND: ~1).
  alignas(64) int32_t vtril[D][D];   // row i: lanes j <= i
  alignas(64) int32_t vlower[D][D];  // column j: lanes i >= j
  alignas(64) int32_t vhead[D];      // lanes < 15
  alignas(64) float eye[D][D];       // rows of I

  GKL_M16 Work() {
    for (int n = 0; n <= D; ++n) lo[n] = static_cast<__mmask16>((1u << n) - 1);
    for (int i = 0; i < D; ++i) one[i] = static_cast<__mmask16>(1u << i);
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < D; ++j) {
        vtril[i][j] = j <= i ? -1 : 0;
        vlower[i][j] = j >= i ? -1 : 0;
        eye[i][j] = i == j ? 1.0f : 0.0f;
      }
      vhead[i] = i < D - 1 ? -1 : 0;
    }
    from_memory();
  }
  GKL_M16 __mmask16 tril(int i) const { return lo[i + 1]; }  // lanes j <= i
  GKL_M16 __mmask16 strict(int i) const { return lo[i]; }    // lanes j < i
  GKL_M16 __mmask16 lower(int j) const { return static_cast<__mmask16>(~lo[j]); }  // lanes i >= j
  template <bool QCol>
  GKL_M16 float qu(int i, int j) const { return QCol ? Qu[j * D + i] : Qu[i * D + j]; }
};

// The 16 rows (Col = false: lane j of R[i] is m_ij) or columns (Col: lane i
// of R[j] is m_ij) of m, whatever m's layout (a transpose when they
// differ), upper triangle included: clear_upper() zeroes it.
template <bool Col>
GKL_M16 void load_square(const float* m, int64_t s0, int64_t s1, Rows& R) {
  const bool m_col = s1 != 1;
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) R[i] = _mm512_loadu_ps(m + i * (m_col ? s1 : s0));
  if (m_col != Col) transpose16(R);
}

template <bool Col>
GKL_M16 __m512 clear_upper(const Work& w, __m512 x, int i) {
  const int32_t* mask = Col ? w.vlower[i] : w.vtril[i];
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_load_si512(mask)));
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
// is ediag's lane 15. From columns, delta simply replaces column 15 of
// Lp - Lq before the transpose into rows. Lanes j > i of row i (j < 15)
// are exactly 0, and lane i is E_ii = ediag_i bit for bit.
constexpr __mmask16 kLast = 0x8000;

struct Prep {
  Rows E;  // E'
  __m512 dp, dq, rq, ediag;
};

// Loads row `row` and solves for E' (rows). Lp is read in q's layout
// (QCol), so that Lp - Lq needs one transpose into rows when both are
// column-major (torch.linalg.cholesky's output) and none when both are
// row-major; Lq's elements are broadcast from its own layout.
template <bool HasQ, bool QCol>
GKL_M16 void prepare(const FullRows& r, int64_t row, Work& w, Prep& o) {
  Rows P;
  const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
  load_square<QCol>(lp, r.m_s0[0], r.m_s1[0], P);
  o.dp = diagonal(lp, r.m_s0[0] + r.m_s1[0]);
  const __m512 mp = _mm512_loadu_ps(static_cast<const float*>(r.mu_p) + row * r.mu_rs[0]);
  if (!HasQ) {  // Lq = I: E = Lp - I, b = -mu_p
    _mm512_store_ps(w.b, _mm512_sub_ps(_mm512_setzero_ps(), mp));
    from_memory();
#pragma GCC unroll 16
    for (int i = 0; i < D; ++i) {
      const __m512 e = _mm512_sub_ps(clear_upper<false>(w, P[i], i), _mm512_load_ps(w.eye[i]));
      o.E[i] = _mm512_mask_mov_ps(e, kLast, _mm512_set1_ps(w.b[i]));
    }
    o.dq = o.rq = _mm512_set1_ps(1.0f);
    o.ediag = _mm512_sub_ps(o.dp, o.rq);
    return;
  }
  const __m512 mq = _mm512_loadu_ps(static_cast<const float*>(r.mu_q) + row * r.mu_rs[1]);
  const __m512 delta = _mm512_sub_ps(mq, mp);
  _mm512_store_ps(w.b, delta);
  Rows Q;
  const float* lq = static_cast<const float*>(r.m_q) + row * r.m_rs[1];
  load_square<QCol>(lq, r.m_s0[1], r.m_s1[1], Q);
  o.dq = diagonal(lq, r.m_s0[1] + r.m_s1[1]);
  o.rq = _mm512_div_ps(_mm512_set1_ps(1.0f), o.dq);
  o.ediag = _mm512_mul_ps(_mm512_sub_ps(o.dp, o.dq), o.rq);
  _mm512_store_ps(w.rq, o.rq);
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) {
    _mm512_store_ps(w.Qu + i * D, Q[i]);
    P[i] = clear_upper<QCol>(w, _mm512_sub_ps(P[i], Q[i]), i);
  }
  if (QCol) {  // rows of [Lp - Lq | delta]
    P[D - 1] = delta;
    transpose16(P);
  }
  from_memory();
#pragma GCC unroll 16
  for (int i = 0; i < D; ++i) {  // E'_i = ([Lp_i - Lq_i | delta_i] - sum_{k<i} Lq_ik E'_k) / Lq_ii
    const __m512 d = QCol ? P[i] : _mm512_mask_mov_ps(P[i], kLast, _mm512_set1_ps(w.b[i]));
    __m512 e = d;
#pragma GCC unroll 16
    for (int k = 0; k < i; ++k) e = _mm512_fnmadd_ps(_mm512_set1_ps(w.qu<QCol>(i, k)), o.E[k], e);
    o.E[i] = _mm512_mul_ps(e, _mm512_set1_ps(w.rq[i]));
  }
}

// The 16 diagonal terms phi(2 log(Lp_ii / Lq_ii)) of the prepared row.
template <bool HasQ>
GKL_M16 __m512 diag_terms(const Prep& p, Work& w) {
  alignas(64) float dp[D], dq[D], rq[D];
  _mm512_store_ps(dp, p.dp);
  _mm512_store_ps(dq, p.dq);
  _mm512_store_ps(rq, p.rq);
  for (int k = 0; k < D; ++k) {  // vectorised by the compiler
    w.dg[k] = full_diag_term2<FastMath>(dp[k], HasQ ? dq[k] : 1.0f, HasQ ? rq[k] : 1.0f);
  }
  return _mm512_load_ps(w.dg);
}

// 2 KL of the prepared row: sum_{j<i} E_ij^2 + |b|^2 + the diagonal terms.
// The squares are summed over every lane of E' (four accumulators: one
// would chain 16 FMA latencies; no k-masks, see Work) and the diagonal's,
// E_ii^2 = ediag_i^2 for i < 15, subtracted lane by lane: that difference
// is not one of large terms, as E_ii^2 <= phi(2 log A_ii) (A_ii = 1 +
// E_ii), so its rounding error stays within a few ulps of the KL, and the
// total cannot go negative. Not finite when an input is not (every input
// reaches a term: the caller's slow path turns that into NaN).
template <bool HasQ>
GKL_M16 float kl2(const Prep& p, Work& w) {
  const __m512 ed = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(p.ediag), _mm512_load_si512(w.vhead)));
  __m512 acc[4];
  acc[0] = _mm512_fnmadd_ps(ed, ed, _mm512_mul_ps(p.E[0], p.E[0]));
#pragma GCC unroll 4
  for (int i = 1; i < 4; ++i) acc[i] = _mm512_mul_ps(p.E[i], p.E[i]);
#pragma GCC unroll 16
  for (int i = 4; i < D; ++i) acc[i % 4] = _mm512_fmadd_ps(p.E[i], p.E[i], acc[i % 4]);
  const __m512 sq = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  return _mm512_reduce_add_ps(_mm512_add_ps(sq, diag_terms<HasQ>(p, w)));
}

// Whether an input of the row (the lower triangles and the means) is not
// finite: the slow path of a row whose KL came out inf or NaN.
inline bool row_not_finite(const FullRows& r, int64_t row) {
  for (int k = 0; k < (r.has_q() ? 2 : 1); ++k) {
    const float* m = static_cast<const float*>(k ? r.m_q : r.m_p) + row * r.m_rs[k];
    const float* mu = static_cast<const float*>(k ? r.mu_q : r.mu_p) + row * r.mu_rs[k];
    for (int i = 0; i < D; ++i) {
      if (!std::isfinite(mu[i])) return true;
      for (int j = 0; j <= i; ++j) {
        if (!std::isfinite(m[i * r.m_s0[k] + j * r.m_s1[k]])) return true;
      }
    }
  }
  return false;
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
    const float kl = 0.5f * kl2<HasQ>(p, w);
    out[row] = kl < std::numeric_limits<float>::infinity() || !row_not_finite(r, row) ? kl : NAN;
  }
}

// ---------------------------------------------------------------------------
// Forward for a column-major q (torch.linalg.cholesky's output): the solve
// in 8-lane halves. A zmm row of E' carries ~9 useful lanes on average, and
// on AMD Zen 4 two 8-lane FMAs cost what one 16-lane FMA does; by 8 x 8
// blocks (L = Lq, P = Lp - Lq, rows 0-7 "1", rows 8-15 "2"):
//   L11 [E11 | b1] = [P11 | d1]                      (rows 0-7, lane 7: b)
//   L22 [E21 | E22 | b2] = [P21 - L21 E11 | P22 | d2 - L21 b1]
// 156 8-lane FMAs instead of 120 16-lane ones (78 vs 120 16-lane-
// equivalents). b1 rides in lane 7 of the rows 0-7 (E_i7 = 0 for i < 7;
// row 7's lane 7 starts from delta_7 and ends as b_7, E_77 = ediag_7), b2
// in lane 15 as in prepare(); c = L21 b1 enters b2's column before the
// transpose of the (2, 2) block. Three 8 x 8 transposes (TL, BL, BR of
// Lp - Lq by columns) instead of a 16 x 16 one. The same values as
// prepare() + kl2() up to the order of the sums.
#define GKL_M16Y __attribute__((target("avx512f,avx512vl,fma"), always_inline)) inline

GKL_M16Y void transpose8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

GKL_M16Y __m256 lo8(__m512 x) {
  return _mm512_castps512_ps256(x);
}
GKL_M16Y __m256 hi8(__m512 x) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}
GKL_M16Y __m256 and8(__m256 x, const int32_t* mask) {  // mask: 32-byte aligned
  const __m256i m = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), m));
}

__attribute__((target("avx512f,avx512vl,fma"), noinline)) void forward_rows_halves(const FullRows& r, float* out,
                                                                                  int64_t begin, int64_t end) {
  Work w;
  alignas(64) int32_t lanes_lo7[8], lane7[8];  // lanes 0-6; lane 7
  for (int j = 0; j < 8; ++j) {
    lanes_lo7[j] = j < 7 ? -1 : 0;
    lane7[j] = j == 7 ? -1 : 0;
  }
  alignas(64) int32_t not_7_15[D];  // the diagonal squares the sums hold
  for (int j = 0; j < D; ++j) not_7_15[j] = j % 8 != 7 ? -1 : 0;
  alignas(64) float e1s[8 * 8], ed[D], bl[8 * 8];
  const int64_t sp = r.m_s1[0], sq = r.m_s1[1];  // column strides (both column-major)
  from_memory();
  for (int64_t row = begin; row < end; ++row) {
    Prep p;
    const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
    const float* lq = static_cast<const float*>(r.m_q) + row * r.m_rs[1];
    p.dp = diagonal(lp, sp + 1);
    p.dq = diagonal(lq, sq + 1);
    const __m512 delta = _mm512_sub_ps(_mm512_loadu_ps(static_cast<const float*>(r.mu_q) + row * r.mu_rs[1]),
                                       _mm512_loadu_ps(static_cast<const float*>(r.mu_p) + row * r.mu_rs[0]));
    p.rq = _mm512_div_ps(_mm512_set1_ps(1.0f), p.dq);
    p.ediag = _mm512_mul_ps(_mm512_sub_ps(p.dp, p.dq), p.rq);
    _mm512_store_ps(w.rq, p.rq);
    _mm512_store_ps(ed, p.ediag);
    // Columns of Lp - Lq by 8 x 8 blocks (TL, BL: columns 0-7; BR: 8-15),
    // the diagonal blocks' upper triangles cleared; Lq's columns (the
    // halves read: rows > column) into Qu.
    __m256 TL[8], BL[8], BR[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256 ql = _mm256_loadu_ps(lq + j * sq), qh = _mm256_loadu_ps(lq + j * sq + 8);
      _mm256_store_ps(w.Qu + j * D, ql);
      _mm256_store_ps(w.Qu + j * D + 8, qh);
      TL[j] = and8(_mm256_sub_ps(_mm256_loadu_ps(lp + j * sp), ql), w.vlower[j]);
      BL[j] = _mm256_sub_ps(_mm256_loadu_ps(lp + j * sp + 8), qh);
      const __m256 q2 = _mm256_loadu_ps(lq + (j + 8) * sq + 8);
      _mm256_store_ps(w.Qu + (j + 8) * D + 8, q2);
      BR[j] = and8(_mm256_sub_ps(_mm256_loadu_ps(lp + (j + 8) * sp + 8), q2), w.vlower[j + 8] + 8);
    }
    TL[7] = lo8(delta);
    transpose8(TL);
    transpose8(BL);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) _mm256_store_ps(bl + 8 * i, BL[i]);
    from_memory();
    // Rows 0-7 (lane 7: b).
    __m256 E1[8];
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      __m256 e = TL[i];
#pragma GCC unroll 8
      for (int k = 0; k < i; ++k) e = _mm256_fnmadd_ps(_mm256_set1_ps(w.qu<true>(i, k)), E1[k], e);
      E1[i] = _mm256_mul_ps(e, _mm256_set1_ps(w.rq[i]));
      acc[i % 4] = _mm256_fmadd_ps(E1[i], E1[i], acc[i % 4]);
      _mm256_store_ps(e1s + 8 * i, E1[i]);
    }
    from_memory();
    // c = L21 b1 into b2's column; E11's lane 7 back to E_i7 (0, and E_77).
    __m256 c[2];
#pragma GCC unroll 2
    for (int k = 0; k < 2; ++k) c[k] = _mm256_mul_ps(_mm256_load_ps(w.Qu + k * D + 8), _mm256_set1_ps(e1s[8 * k + 7]));
#pragma GCC unroll 6
    for (int k = 2; k < 8; ++k) {
      c[k % 2] = _mm256_fmadd_ps(_mm256_load_ps(w.Qu + k * D + 8), _mm256_set1_ps(e1s[8 * k + 7]), c[k % 2]);
    }
    BR[7] = _mm256_sub_ps(_mm256_sub_ps(hi8(delta), c[0]), c[1]);
    transpose8(BR);
#pragma GCC unroll 7
    for (int k = 0; k < 7; ++k) E1[k] = and8(E1[k], lanes_lo7);
    E1[7] = _mm256_or_ps(and8(E1[7], lanes_lo7), and8(_mm256_set1_ps(ed[7]), lane7));
    // Rows 8-15: lanes 0-7 (E21 then E22's), lanes 8-15 (E22, lane 15: b2).
    __m256 E2l[8], E2h[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      __m256 l = _mm256_load_ps(bl + 8 * i), h = BR[i];
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) l = _mm256_fnmadd_ps(_mm256_set1_ps(w.qu<true>(i + 8, k)), E1[k], l);
#pragma GCC unroll 8
      for (int k = 0; k < i; ++k) {
        const __m256 q = _mm256_set1_ps(w.qu<true>(i + 8, k + 8));
        l = _mm256_fnmadd_ps(q, E2l[k], l);
        h = _mm256_fnmadd_ps(q, E2h[k], h);
      }
      const __m256 rq = _mm256_set1_ps(w.rq[i + 8]);
      E2l[i] = _mm256_mul_ps(l, rq);
      E2h[i] = _mm256_mul_ps(h, rq);
      acc[i % 4] = _mm256_fmadd_ps(E2l[i], E2l[i], acc[i % 4]);
      acc[(i + 2) % 4] = _mm256_fmadd_ps(E2h[i], E2h[i], acc[(i + 2) % 4]);
    }
    // Squares held: E_ii for i != 7, 15 (lane 7 of rows 0-7 and lane 15 of
    // rows 8-15 are b): subtract those, add the diagonal terms (see kl2).
    const __m512 edm = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(p.ediag), _mm512_load_si512(not_7_15)));
    const __m512 z = _mm512_fnmadd_ps(edm, edm, diag_terms<true>(p, w));
    __m256 s8 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    s8 = _mm256_add_ps(s8, _mm256_add_ps(lo8(z), hi8(z)));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    const float kl = 0.5f * _mm_cvtss_f32(s4);
    out[row] = kl < std::numeric_limits<float>::infinity() || !row_not_finite(r, row) ? kl : NAN;
  }
}
#undef GKL_M16Y

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
  if (HasQ && q_col(r)) {
    static const bool vl = __builtin_cpu_supports("avx512vl");
    if (r.m_s0[0] == 1 && vl) return forward_rows_halves(r, out, begin, end);  // both column-major
    return forward_rows<HasQ, true>(r, out, begin, end);
  }
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
