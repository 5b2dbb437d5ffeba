// Rows of the full-covariance KL for float scale_tril at D = 16 N (N = 2, 4:
// D = 32, 64), one matrix row as N 512-bit vectors (lane j of vector v =
// column 16 v + j). The row recurrences of kl_math.h, each step one
// broadcast of an Lq element (read in q's own layout) and one FMA per vector:
//   E = Lq^-1 (Lp - Lq):  E_i = (Lp_i - Lq_i - sum_{k<i} Lq_ik E_k) / Lq_ii,
//   X = Lq^-T E:          X_j = (E_j - sum_{i>j} Lq_ij X_i) / Lq_jj,
// with b = Lq^-1 delta (and y = Lq^-T b) riding along in lane D - 1, free
// above the diagonal in every row (row D - 1's diagonal comes from the
// diagonals), as in kl_full_mat16.h; a row carries only the vectors holding
// its lower triangle and the last. The rows of Lp - Lq are built in a
// row-major scratch (16 x 16 register transposes for a column-major input,
// as torch.linalg.cholesky returns) and E overwrites them; the gradients
// are built as rows or columns in their outputs' layouts. The batch kernels
// (kl_full_batch.h) at these sizes spend most of their time gathering 16
// matrices into lanes; here nothing is gathered but the diagonals. Only the
// lower triangle is read. Compiled for AVX-512 whatever the caller's clone,
// called only where the CPU has it (tiled::available()). No torch headers.
#pragma once

#include <cstdint>

#include "kl_full_mat16.h"  // GKL_HAVE_MAT16, transpose16, diagonal(), from_memory()

namespace gaussian_kl {
namespace cpu {
namespace matn {

#ifdef GKL_HAVE_MAT16
#define GKL_HAVE_MATN 1
#define GKL_MN __attribute__((target("avx512f"), always_inline)) inline
#define GKL_MN_ENTRY __attribute__((target("avx512f"), noinline))

// The layouts read here: those of mat16 (rows or columns of each matrix
// contiguous, int32 offsets, contiguous means).
inline bool usable(const FullRows& r) {
  for (int k = 0; k < (r.has_q() ? 2 : 1); ++k) {
    const int64_t s0 = r.m_s0[k], s1 = r.m_s1[k];
    if (!(s1 == 1 || s0 == 1) || s0 < 0 || s1 < 0 || (s0 + s1) * r.dim >= (int64_t(1) << 31)) return false;
    if (r.mu_cs[k] != 1) return false;
  }
  return tiled::available();
}

template <int N>
struct Work {
  static constexpr int D = 16 * N;
  alignas(64) float R[D * D];  // rows of [Lp - Lq | delta], then of E'
  alignas(64) float dg[D];
  alignas(64) float rq[D];     // 1 / Lq_ii
  alignas(64) float dp[D], dq[D];
};

// The backward's: X' = Lq^-T E' (rows) and a transpose (of E' or of X).
template <int N>
struct BackWork : Work<N> {
  static constexpr int D = 16 * N;
  alignas(64) float X[D * D];
  alignas(64) float T[D * D];
};

// Lanes j <= i of a 16-lane slice starting at column c0 of row i (i.e.
// the lower triangle), as a mask.
GKL_MN __mmask16 tril_mask(int i, int c0) {
  const int n = i - c0 + 1;  // lanes 0..n-1
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0)
                                                            : static_cast<__mmask16>((1u << n) - 1);
}

// Block (rb, cb), cb <= rb, of a matrix's lower triangle in its own layout:
// rows (Col = false: vector t = row 16 rb + t, lane = column 16 cb + lane)
// or columns (Col: vector t = column 16 cb + t, lane = row 16 rb + lane),
// zero above the diagonal.
template <bool Col>
GKL_MN void load_block(const float* m, int64_t s0, int64_t s1, int rb, int cb, __m512 (&V)[16]) {
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t) {
    if (!Col) {
      const int i = 16 * rb + t;
      V[t] = _mm512_maskz_loadu_ps(tril_mask(i, 16 * cb), m + i * s0 + 16 * cb * s1);
    } else {
      const int j = 16 * cb + t, first = j - 16 * rb;  // lanes (rows 16 rb + l) with row >= j
      const __mmask16 lower = first <= 0 ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>(~((1u << first) - 1));
      V[t] = _mm512_maskz_loadu_ps(lower, m + j * s1 + 16 * rb * s0);
    }
  }
}

// 16 diagonal elements m_ii, i = 16 v .. 16 v + 15 (step: the diagonal's stride).
GKL_MN __m512 diagonal(const float* m, int64_t step, int v) {
  return mat16::diagonal(m + 16 * v * step, step);
}

// Rows of [Lp - Lq | delta] (zero above the diagonal, delta_i in lane
// D - 1) into w.R, or of [Lp - I | -mu_p] without q; the diagonals of Lp
// and Lq (1 without q) and 1 / Lq_ii into w. Non-finite inputs make bad NaN.
template <int N, bool HasQ, bool PCol, bool QCol>
GKL_MN void build_rows(const FullRows& r, int64_t row, Work<N>& w, __m512& bad) {
  constexpr int D = 16 * N;
  constexpr __mmask16 kLast = 0x8000;
  const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
  const float* mp = static_cast<const float*>(r.mu_p) + row * r.mu_rs[0];
  const float* lq = HasQ ? static_cast<const float*>(r.m_q) + row * r.m_rs[1] : nullptr;
  const float* mq = HasQ ? static_cast<const float*>(r.mu_q) + row * r.mu_rs[1] : nullptr;
#pragma GCC unroll 4
  for (int rb = 0; rb < N; ++rb) {
    alignas(64) float dl[16];
    {
      const __m512 m = _mm512_loadu_ps(mp + 16 * rb);
      const __m512 d = HasQ ? _mm512_sub_ps(_mm512_loadu_ps(mq + 16 * rb), m) : _mm512_sub_ps(_mm512_setzero_ps(), m);
      bad = _mm512_fmadd_ps(d, _mm512_setzero_ps(), bad);
      _mm512_store_ps(dl, d);
    }
#pragma GCC unroll 4
    for (int cb = 0; cb < N; ++cb) {
      __m512 P[16];
      if (cb <= rb) {
        load_block<PCol>(lp, r.m_s0[0], r.m_s1[0], rb, cb, P);
        if (HasQ) {
          __m512 Q[16];
          load_block<QCol>(lq, r.m_s0[1], r.m_s1[1], rb, cb, Q);
          if (PCol && !QCol) transpose16(P);
          if (QCol && !PCol) transpose16(Q);
#pragma GCC unroll 16
          for (int t = 0; t < 16; ++t) P[t] = _mm512_sub_ps(P[t], Q[t]);  // non-finite in either -> non-finite
          if (PCol && QCol) transpose16(P);
        } else {
          if (PCol) transpose16(P);
          if (rb == cb) {
#pragma GCC unroll 16
            for (int t = 0; t < 16; ++t) {
              P[t] = _mm512_mask_sub_ps(P[t], static_cast<__mmask16>(1u << t), P[t], _mm512_set1_ps(1.0f));
            }
          }
        }
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) bad = _mm512_fmadd_ps(P[t], _mm512_setzero_ps(), bad);
      } else {
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) P[t] = _mm512_setzero_ps();
      }
      if (cb == N - 1) {  // delta_i in lane D - 1 of row i
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) P[t] = _mm512_mask_mov_ps(P[t], kLast, _mm512_set1_ps(dl[t]));
      }
#pragma GCC unroll 16
      for (int t = 0; t < 16; ++t) _mm512_store_ps(w.R + (16 * rb + t) * D + 16 * cb, P[t]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < N; ++v) {
    const __m512 dpv = diagonal(lp, r.m_s0[0] + r.m_s1[0], v);
    const __m512 dqv = HasQ ? diagonal(lq, r.m_s0[1] + r.m_s1[1], v) : _mm512_set1_ps(1.0f);
    _mm512_store_ps(w.dp + 16 * v, dpv);
    _mm512_store_ps(w.dq + 16 * v, dqv);
    _mm512_store_ps(w.rq + 16 * v, _mm512_div_ps(_mm512_set1_ps(1.0f), dqv));
  }
  mat16::from_memory();
}

// Vectors of a row in block rb that the solves carry: those holding lanes
// j <= i, and the last (b, y).
template <int N>
GKL_MN constexpr bool carried(int v, int rb) {
  return v <= rb || v == N - 1;
}

// Two rows a, b of a triangular recurrence solved together over the
// vectors carried in block rb, two accumulators each (even and odd steps,
// to shorten the dependency chains); one load of a solved row feeds both:
//   step:   a -= la0 S0 + la1 S1,  b -= lb0 S0 + lb1 S1   (S0, S1: solved rows),
//   finish: a' = a ra,  b' = (b - lba a') rb               (b's step on a).
template <int N>
struct RowPair {
  __m512 a0[N], a1[N], b0[N], b1[N];

  GKL_MN void init(int rb, const float* ra, const float* rbr) {
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      if (carried<N>(v, rb)) {
        a0[v] = _mm512_load_ps(ra + 16 * v);
        b0[v] = _mm512_load_ps(rbr + 16 * v);
        a1[v] = b1[v] = _mm512_setzero_ps();
      }
    }
  }
  GKL_MN void step(int rb, const float* s0, const float* s1, float la0, float la1, float lb0, float lb1) {
    const __m512 va0 = _mm512_set1_ps(la0), va1 = _mm512_set1_ps(la1);
    const __m512 vb0 = _mm512_set1_ps(lb0), vb1 = _mm512_set1_ps(lb1);
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      if (carried<N>(v, rb)) {
        const __m512 e0 = _mm512_load_ps(s0 + 16 * v);
        const __m512 e1 = _mm512_load_ps(s1 + 16 * v);
        a0[v] = _mm512_fnmadd_ps(va0, e0, a0[v]);
        b0[v] = _mm512_fnmadd_ps(vb0, e0, b0[v]);
        a1[v] = _mm512_fnmadd_ps(va1, e1, a1[v]);
        b1[v] = _mm512_fnmadd_ps(vb1, e1, b1[v]);
      }
    }
  }
  // Stores a', b' to da, db; leaves them in a0, b0.
  GKL_MN void finish(int rb, float ra, float rbs, float lba, float* da, float* db) {
    const __m512 vra = _mm512_set1_ps(ra), vrb = _mm512_set1_ps(rbs), vl = _mm512_set1_ps(lba);
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      if (carried<N>(v, rb)) {
        a0[v] = _mm512_mul_ps(_mm512_add_ps(a0[v], a1[v]), vra);
        b0[v] = _mm512_mul_ps(_mm512_fnmadd_ps(vl, a0[v], _mm512_add_ps(b0[v], b1[v])), vrb);
        _mm512_store_ps(da + 16 * v, a0[v]);
        _mm512_store_ps(db + 16 * v, b0[v]);
      }
    }
  }
};

// E' = Lq^-1 [Lp - Lq | delta] in place in w.R: E'_i = (R_i - sum_{k<i}
// Lq_ik E'_k) / Lq_ii, rows i, i + 1 together (one load of E'_k feeds
// both), two accumulators each (even and odd k) to shorten the dependency
// chains. WithSq: sq += sum_{j<i} E_ij^2 + b_i^2 (lane D - 1).
template <int N, bool WithSq>
GKL_MN void solve_e(const FullRows& r, int64_t row, Work<N>& w, __m512& sq) {
  constexpr int D = 16 * N;
  constexpr __mmask16 kLast = 0x8000;
  const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
  const float* lq = static_cast<const float*>(r.m_q) + row * r.m_rs[1];
  const int64_t qs0 = r.m_s0[1], qs1 = r.m_s1[1];
#pragma GCC unroll 4
  for (int rb = 0; rb < N; ++rb) {
    for (int t = 0; t < 16; t += 2) {
      const int i = 16 * rb + t;
      // Prefetch the next row's matrices, D / 8 lines of each per pair of
      // rows here: its block loads would otherwise wait on memory with
      // nothing to overlap them (1.3-1.9x at D = 32, 64; a hint, harmless
      // past the last row or for a shared q).
#pragma GCC unroll 8
      for (int c = 0; c < D / 8; ++c) {
        _mm_prefetch(reinterpret_cast<const char*>(lp + r.m_rs[0]) + (i / 2 * (D / 8) + c) * 64, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(lq + r.m_rs[1]) + (i / 2 * (D / 8) + c) * 64, _MM_HINT_T0);
      }
      const float* q0 = lq + i * qs0;  // rows i and i + 1 of Lq
      const float* q1 = q0 + qs0;
      RowPair<N> p;
      p.init(rb, w.R + i * D, w.R + (i + 1) * D);
      for (int k = 0; k < i; k += 2) {  // (i is even)
        p.step(rb, w.R + k * D, w.R + (k + 1) * D, q0[k * qs1], q0[(k + 1) * qs1], q1[k * qs1], q1[(k + 1) * qs1]);
      }
      p.finish(rb, w.rq[i], w.rq[i + 1], q1[i * qs1], w.R + i * D, w.R + (i + 1) * D);
      if (WithSq) {  // sum_{j<i} E_ij^2 and b_i^2 (lane D - 1), rows i and i + 1
#pragma GCC unroll 4
        for (int v = 0; v < N; ++v) {
          if (carried<N>(v, rb)) {
            const __mmask16 last = v == N - 1 ? kLast : static_cast<__mmask16>(0);
            sq = _mm512_mask3_fmadd_ps(p.a0[v], p.a0[v], sq, tril_mask(i - 1, 16 * v) | last);
            sq = _mm512_mask3_fmadd_ps(p.b0[v], p.b0[v], sq, tril_mask(i, 16 * v) | last);
          }
        }
      }
    }
  }
  mat16::from_memory();
}

// 2 KL of row `row`. PCol, QCol: Lp, Lq column-major (else row-major).
template <int N, bool HasQ, bool PCol, bool QCol>
GKL_MN float row_kl2(const FullRows& r, int64_t row, Work<N>& w) {
  __m512 bad = _mm512_setzero_ps();
  __m512 sq = _mm512_setzero_ps();
  if (!HasQ) {  // E = Lp - I, b = -mu_p: the strictly lower Lp and mu_p, squared (any orientation)
    const float* lp = static_cast<const float*>(r.m_p) + row * r.m_rs[0];
    const float* mp = static_cast<const float*>(r.mu_p) + row * r.mu_rs[0];
#pragma GCC unroll 4
    for (int rb = 0; rb < N; ++rb) {
#pragma GCC unroll 4
      for (int cb = 0; cb <= rb; ++cb) {
        __m512 B[16];
        load_block<PCol>(lp, r.m_s0[0], r.m_s1[0], rb, cb, B);
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) {
          // strictly lower: rows: lanes < t; columns: lanes > t
          const __mmask16 m = rb != cb ? static_cast<__mmask16>(0xFFFF)
                              : PCol   ? static_cast<__mmask16>(~((2u << t) - 1))
                                       : static_cast<__mmask16>((1u << t) - 1);
          bad = _mm512_fmadd_ps(B[t], _mm512_setzero_ps(), bad);
          sq = _mm512_mask3_fmadd_ps(B[t], B[t], sq, m);
        }
      }
    }
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      const __m512 m = _mm512_loadu_ps(mp + 16 * v);
      bad = _mm512_fmadd_ps(m, _mm512_setzero_ps(), bad);
      sq = _mm512_fmadd_ps(m, m, sq);
      _mm512_store_ps(w.dp + 16 * v, diagonal(lp, r.m_s0[0] + r.m_s1[0], v));
    }
    for (int k = 0; k < 16 * N; ++k) {  // vectorised by the compiler
      w.dg[k] = full_diag_term2<FastMath>(w.dp[k], 1.0f, 1.0f);
    }
  } else {
    build_rows<N, true, PCol, QCol>(r, row, w, bad);
    for (int k = 0; k < 16 * N; ++k) {  // vectorised by the compiler
      w.dg[k] = full_diag_term2<FastMath>(w.dp[k], w.dq[k], w.rq[k]);
    }
    solve_e<N, true>(r, row, w, sq);
  }
  __m512 acc = _mm512_add_ps(sq, bad);
#pragma GCC unroll 4
  for (int v = 0; v < N; ++v) acc = _mm512_add_ps(acc, _mm512_load_ps(w.dg + 16 * v));
  return _mm512_reduce_add_ps(acc);
}

template <int N, bool HasQ, bool PCol, bool QCol>
GKL_MN_ENTRY void forward_rows(const FullRows& r, float* out, int64_t begin, int64_t end) {
  Work<N> w;
  for (int64_t row = begin; row < end; ++row) out[row] = 0.5f * row_kl2<N, HasQ, PCol, QCol>(r, row, w);
}

// X' = Lq^-T E' (rows) into w.X: X'_j = (E'_j - sum_{i>j} Lq_ij X'_i) /
// Lq_jj over the carried vectors (lane D - 1: y = Lq^-T b), rows j, j - 1
// together; only the lanes l <= j of X'_j are the lower triangle of X (the
// others are finite and never stored).
template <int N>
GKL_MN void solve_x(const FullRows& r, int64_t row, BackWork<N>& w) {
  constexpr int D = 16 * N;
  const float* lq = static_cast<const float*>(r.m_q) + row * r.m_rs[1];
  const int64_t qs0 = r.m_s0[1], qs1 = r.m_s1[1];
#pragma GCC unroll 4
  for (int rb = N - 1; rb >= 0; --rb) {
    for (int t = 15; t > 0; t -= 2) {
      const int j = 16 * rb + t;  // rows j, j - 1
      RowPair<N> p;
      p.init(rb, w.R + j * D, w.R + (j - 1) * D);
      for (int i = j + 1; i < D; i += 2) {  // (D - 1 - j is even)
        const float* q0 = lq + i * qs0;  // rows i and i + 1 of Lq
        p.step(rb, w.X + i * D, w.X + (i + 1) * D, q0[j * qs1], q0[qs0 + j * qs1], q0[(j - 1) * qs1],
               q0[qs0 + (j - 1) * qs1]);
      }
      p.finish(rb, w.rq[j], w.rq[j - 1], lq[j * qs0 + (j - 1) * qs1], w.X + j * D, w.X + (j - 1) * D);
    }
  }
  mat16::from_memory();
}

// dst = src^T for the blocks (rb, cb) of src with cb <= rb, or every block
// (All), D x D row-major.
template <int N, bool All>
GKL_MN void transpose_blocks(const float* src, float* dst) {
  constexpr int D = 16 * N;
#pragma GCC unroll 4
  for (int rb = 0; rb < N; ++rb) {
#pragma GCC unroll 4
    for (int cb = 0; cb < N; ++cb) {
      if (!All && cb > rb) continue;
      __m512 B[16];
#pragma GCC unroll 16
      for (int t = 0; t < 16; ++t) B[t] = _mm512_load_ps(src + (16 * rb + t) * D + 16 * cb);
      transpose16(B);
#pragma GCC unroll 16
      for (int t = 0; t < 16; ++t) _mm512_store_ps(dst + (16 * cb + t) * D + 16 * rb, B[t]);
    }
  }
  mat16::from_memory();
}

// Lane l of vector v (column or row 16 v + l) as a one-lane mask, 0 when
// index n is not in vector v.
GKL_MN __mmask16 lane_of(int n, int v) {
  const int l = n - 16 * v;
  return l >= 0 && l < 16 ? static_cast<__mmask16>(1u << l) : static_cast<__mmask16>(0);
}

// Lanes l of vector v with 16 v + l >= n (the lower triangle of column n).
GKL_MN __mmask16 from_mask(int n, int v) {
  const int first = n - 16 * v;
  return first <= 0 ? static_cast<__mmask16>(0xFFFF) : first >= 16 ? static_cast<__mmask16>(0)
                                                                     : static_cast<__mmask16>(~((1u << first) - 1));
}

// The gradients from X' = Lq^-T E' (as kl_full_mat16.h):
//   d mu_q = -d mu_p = y,   dLp = tril(X) + diag(E_ii / Lp_ii),
//   dLq = -tril(X + X E^T + y b^T) - diag(E_ii / Lq_ii),
// each matrix built as rows (row-major output) or columns (column-major
// output, from X^T) and stored whole (zero above the diagonal).
template <int N, bool HasQ, bool PCol, bool QCol>
GKL_MN_ENTRY void backward_rows(const FullRows& r, const float* g, int64_t gs, const FullGradOut& o,
                                int64_t begin, int64_t end) {
  constexpr int D = 16 * N;
  BackWork<N> w;
  float* gmp = static_cast<float*>(o.grad[0]);
  float* gLp = static_cast<float*>(o.grad[1]);
  float* gmq = static_cast<float*>(o.grad[2]);
  float* gLq = HasQ ? static_cast<float*>(o.grad[3]) : nullptr;
  const bool lp_col = o.col_major[1], lq_col = o.col_major[3];
  const __m512i col_idx = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(D));
  for (int64_t row = begin; row < end; ++row) {
    __m512 bad = _mm512_setzero_ps(), unused = _mm512_setzero_ps();
    build_rows<N, HasQ, PCol, QCol>(r, row, w, bad);
    float* X = HasQ ? w.X : w.R;  // without q, X' = E'
    if (HasQ) {
      solve_e<N, false>(r, row, w, unused);
      solve_x<N>(r, row, w);
    }
    const float gr = g[row * gs];
    const __m512 gv = _mm512_set1_ps(gr);
    __m512 y[N], ed[N], elq[N];  // y = Lq^-T b; E_ii; E_ii / Lq_ii
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      y[v] = _mm512_i32gather_ps(col_idx, X + 16 * v * D + D - 1, 4);
      const __m512 rq = _mm512_load_ps(w.rq + 16 * v);
      ed[v] = _mm512_mul_ps(_mm512_sub_ps(_mm512_load_ps(w.dp + 16 * v), _mm512_load_ps(w.dq + 16 * v)), rq);
      elq[v] = _mm512_mul_ps(ed[v], rq);
    }
    alignas(64) float ys[D], eds[D], elqs[D];
#pragma GCC unroll 4
    for (int v = 0; v < N; ++v) {
      _mm512_store_ps(ys + 16 * v, y[v]);
      _mm512_store_ps(eds + 16 * v, ed[v]);
      _mm512_store_ps(elqs + 16 * v, elq[v]);
    }
    X[(D - 1) * D + D - 1] = elqs[D - 1];  // X_{D-1,D-1} (lane D - 1 held y_{D-1})
    mat16::from_memory();
    if (gmp || gmq) {
#pragma GCC unroll 4
      for (int v = 0; v < N; ++v) {
        const __m512 yg = _mm512_mul_ps(y[v], gv);
        if (gmp) _mm512_storeu_ps(gmp + row * D + 16 * v, _mm512_sub_ps(_mm512_setzero_ps(), yg));
        if (gmq) _mm512_storeu_ps(gmq + row * D + 16 * v, yg);
      }
    }
    bool t_is_xt = false;  // w.T holds X^T
    if (gLp) {  // g [tril(X) + diag(E_ii / Lp_ii)]
      float* dst = gLp + row * D * D;
      __m512 add[N];
#pragma GCC unroll 4
      for (int v = 0; v < N; ++v) add[v] = _mm512_div_ps(ed[v], _mm512_load_ps(w.dp + 16 * v));
      if (lp_col) {
        transpose_blocks<N, false>(X, w.T);
        t_is_xt = true;
      }
      const float* src = lp_col ? w.T : X;
      for (int n = 0; n < D; ++n) {  // row n (row-major) or column n (column-major)
#pragma GCC unroll 4
        for (int v = 0; v < N; ++v) {
          const __mmask16 m = lp_col ? from_mask(n, v) : tril_mask(n, 16 * v);
          __m512 x = _mm512_maskz_load_ps(m, src + n * D + 16 * v);
          x = _mm512_mask_add_ps(x, lane_of(n, v), x, add[v]);
          _mm512_storeu_ps(dst + n * D + 16 * v, _mm512_mul_ps(x, gv));
        }
      }
    }
    if (HasQ && gLq) {  // -g [tril(X + X E^T + y b^T) + diag(E_ii / Lq_ii)]
      float* dst = gLq + row * D * D;
      const __m512 ng = _mm512_sub_ps(_mm512_setzero_ps(), gv);
      const float corner = elqs[D - 1] * eds[D - 1];  // X_{D-1,D-1} E_{D-1,D-1}
      if (lq_col) {  // column n: X_:n + b_n y + sum_{k<=n, k<D-1} E_nk X_:k, lanes i >= n
        if (!t_is_xt) transpose_blocks<N, false>(X, w.T);
        for (int n = 0; n < D; ++n) {
          const int nb = n / 16;
          const __m512 bn = _mm512_set1_ps(w.R[n * D + D - 1]);
          __m512 s0[N], s1[N];
#pragma GCC unroll 4
          for (int v = 0; v < N; ++v) {
            if (v >= nb) {
              s0[v] = _mm512_fmadd_ps(bn, y[v], _mm512_load_ps(w.T + n * D + 16 * v));
              s1[v] = _mm512_setzero_ps();
            }
          }
          const int kmax = n < D - 1 ? n : D - 2;
          int k = 0;
          for (; k + 1 <= kmax; k += 2) {
            const __m512 e0 = _mm512_set1_ps(w.R[n * D + k]), e1 = _mm512_set1_ps(w.R[n * D + k + 1]);
#pragma GCC unroll 4
            for (int v = 0; v < N; ++v) {
              if (v >= nb) {
                s0[v] = _mm512_fmadd_ps(e0, _mm512_load_ps(w.T + k * D + 16 * v), s0[v]);
                s1[v] = _mm512_fmadd_ps(e1, _mm512_load_ps(w.T + (k + 1) * D + 16 * v), s1[v]);
              }
            }
          }
          if (k <= kmax) {
            const __m512 e0 = _mm512_set1_ps(w.R[n * D + k]);
#pragma GCC unroll 4
            for (int v = 0; v < N; ++v) {
              if (v >= nb) s0[v] = _mm512_fmadd_ps(e0, _mm512_load_ps(w.T + k * D + 16 * v), s0[v]);
            }
          }
#pragma GCC unroll 4
          for (int v = 0; v < N; ++v) {
            __m512 sv = _mm512_setzero_ps();
            if (v >= nb) {
              sv = _mm512_add_ps(s0[v], s1[v]);
              sv = _mm512_mask_add_ps(sv, lane_of(n, v), sv,
                                      _mm512_set1_ps(n == D - 1 ? elqs[n] + corner : elqs[n]));
              sv = _mm512_maskz_mul_ps(from_mask(n, v), sv, ng);
            }
            _mm512_storeu_ps(dst + n * D + 16 * v, sv);
          }
        }
      } else {  // row n: X_n + y_n b + sum_{k<=n, k<D-1} X_nk (E^T)_k, lanes j <= n
        transpose_blocks<N, true>(w.R, w.T);  // (E'^T)_k; (E'^T)_{D-1} = b
        for (int n = 0; n < D; ++n) {
          const int nb = n / 16;
          const __m512 yn = _mm512_set1_ps(ys[n]);
          __m512 s0[N], s1[N];
#pragma GCC unroll 4
          for (int v = 0; v < N; ++v) {
            if (v <= nb) {
              s0[v] = _mm512_fmadd_ps(yn, _mm512_load_ps(w.T + (D - 1) * D + 16 * v),
                                      _mm512_load_ps(X + n * D + 16 * v));
              s1[v] = _mm512_setzero_ps();
            }
          }
          const int kmax = n < D - 1 ? n : D - 2;
          int k = 0;
          for (; k + 1 <= kmax; k += 2) {
            const __m512 x0 = _mm512_set1_ps(X[n * D + k]), x1 = _mm512_set1_ps(X[n * D + k + 1]);
#pragma GCC unroll 4
            for (int v = 0; v < N; ++v) {
              if (v <= nb) {
                s0[v] = _mm512_fmadd_ps(x0, _mm512_load_ps(w.T + k * D + 16 * v), s0[v]);
                s1[v] = _mm512_fmadd_ps(x1, _mm512_load_ps(w.T + (k + 1) * D + 16 * v), s1[v]);
              }
            }
          }
          if (k <= kmax) {
            const __m512 x0 = _mm512_set1_ps(X[n * D + k]);
#pragma GCC unroll 4
            for (int v = 0; v < N; ++v) {
              if (v <= nb) s0[v] = _mm512_fmadd_ps(x0, _mm512_load_ps(w.T + k * D + 16 * v), s0[v]);
            }
          }
#pragma GCC unroll 4
          for (int v = 0; v < N; ++v) {
            __m512 sv = _mm512_setzero_ps();
            if (v <= nb) {
              sv = _mm512_add_ps(s0[v], s1[v]);
              sv = _mm512_mask_add_ps(sv, lane_of(n, v), sv,
                                      _mm512_set1_ps(n == D - 1 ? elqs[n] + corner : elqs[n]));
              sv = _mm512_maskz_mul_ps(tril_mask(n, 16 * v), sv, ng);
            }
            _mm512_storeu_ps(dst + n * D + 16 * v, sv);
          }
        }
      }
    }
  }
}

template <int N, bool HasQ>
void backward(const FullRows& r, const float* g, int64_t gs, const FullGradOut& o, int64_t begin, int64_t end) {
  const bool pcol = r.m_s1[0] != 1, qcol = HasQ && r.m_s1[1] != 1;
  if (pcol) {
    return qcol ? backward_rows<N, HasQ, true, true>(r, g, gs, o, begin, end)
                : backward_rows<N, HasQ, true, false>(r, g, gs, o, begin, end);
  }
  return qcol ? backward_rows<N, HasQ, false, true>(r, g, gs, o, begin, end)
              : backward_rows<N, HasQ, false, false>(r, g, gs, o, begin, end);
}

// Rows [begin, end) of a problem usable() accepts, D = 16 N.
template <int N, bool HasQ>
void forward(const FullRows& r, float* out, int64_t begin, int64_t end) {
  const bool pcol = r.m_s1[0] != 1, qcol = HasQ && r.m_s1[1] != 1;
  if (pcol) {
    return qcol ? forward_rows<N, HasQ, true, true>(r, out, begin, end)
                : forward_rows<N, HasQ, true, false>(r, out, begin, end);
  }
  return qcol ? forward_rows<N, HasQ, false, true>(r, out, begin, end)
              : forward_rows<N, HasQ, false, false>(r, out, begin, end);
}

#undef GKL_MN
#undef GKL_MN_ENTRY
#endif  // GKL_HAVE_MAT16

}  // namespace matn
}  // namespace cpu
}  // namespace gaussian_kl
