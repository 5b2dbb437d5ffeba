// Batch-SIMD rows of the full-covariance KL for small compile-time D
// (scale_tril, both sides): W rows at a time (16 floats / 8 doubles, one per
// vector lane). The element type of the workspaces is Lanes<A, W> (W values,
// elementwise arithmetic), so the triangular solves of kl_math.h and
// xet_s of kl_full_row.h run unchanged on W rows at once, each step one
// vector instruction (a single row of D = 4 has too little parallelism for
// the vector units). Only the loads/stores (transposing rows into lanes) and
// the per-lane diagonal terms are written here.
//
// Every row goes through the same lane code: a last partial block is padded
// with copies of its first row and only the real rows are stored, so the
// result of a row never depends on where a thread's chunk starts (results
// stay independent of the thread count). No torch headers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#if defined(__x86_64__)
// GCC 12 warns about the deliberately undefined inputs of its own AVX-512
// unpack intrinsics (-Wuninitialized inside avx512fintrin.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "../kl_args.h"
#include "../kl_full_row.h"  // xet_s
#include "../kl_math.h"
#include "fast_math.h"
#include "kl_diag_rows.h"  // lanes<>()

namespace gaussian_kl {
namespace cpu {

// W values of A with elementwise arithmetic: the "scalar" of the batch
// kernels. Each operator is one loop over W that gcc turns into one vector op.
template <typename A, int W>
struct Lanes {
  A v[W];
  Lanes() = default;
  GKL_ALWAYS_INLINE explicit Lanes(A x) {
    for (int k = 0; k < W; ++k) v[k] = x;
  }
#define GKL_LANES_OP(op)                                                     \
  GKL_ALWAYS_INLINE Lanes& operator op##=(const Lanes& o) {                   \
    for (int k = 0; k < W; ++k) v[k] op## = o.v[k];                           \
    return *this;                                                            \
  }                                                                          \
  GKL_ALWAYS_INLINE friend Lanes operator op(Lanes a, const Lanes& b) {      \
    a op## = b;                                                              \
    return a;                                                                \
  }
  GKL_LANES_OP(+)
  GKL_LANES_OP(-)
  GKL_LANES_OP(*)
  GKL_LANES_OP(/)
#undef GKL_LANES_OP
};

// Workspace of one block, D x D row-major matrices of Lanes: ~4 D^2 W
// accumulators (64 KB at D = 16, 1 MB at D = 64 in float), allocated once
// per chunk on the heap, not the stack.
template <typename A, int D>
struct alignas(64) BatchWork {  // every lane vector on a cache line of its own (no split accesses)
  static constexpr int W = lanes<A>();
  using V = Lanes<A, W>;
  static_assert(sizeof(V) == 64, "one cache line per lane vector");
  V Lp[D * D], Lq[D * D], E[D * D], T[D * D];  // T: backward scratch (X, dLp); Lp: then dLq
  V b[D], y[D], rinv[D], dlp[D];  // rinv: 1 / Lq_ii (the tiled solves); dlp: E_ii / Lp_ii
  V bad, gr;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GKL_NO_TARGET_CLONES)
#define GKL_HAVE_GATHER 1
// The transposition of W rows into lanes with AVX-512 gathers (one vector
// instruction per element instead of W scalar loads and stores). Compiled
// for AVX-512 whatever the caller's clone; called only when the CPU has it
// (tiled::available()). Element (i, j) of lane k is at m + ko[k] + i s0 + j s1.
// Visits the lower triangle in memory order: row by row for row-major
// matrices, column by column for column-major ones (torch.linalg.cholesky's
// output), so consecutive gathers reuse the same cache lines.
template <int D, typename F>
__attribute__((target("avx512f"), always_inline)) inline void gather_order(int64_t s0, int64_t s1,
                                                                           const F& one) {
  if (s1 <= s0) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) one(i, j);
    }
  } else {
    for (int j = 0; j < D; ++j) {
      for (int i = j; i < D; ++i) one(i, j);
    }
  }
}
template <int D>
__attribute__((target("avx512f"), noinline)) void gather_tril(const float* m, const int32_t* ko,
                                                              int64_t s0, int64_t s1, float* L) {
  const __m512i idx = _mm512_loadu_si512(ko);
  auto one = [&](int i, int j) __attribute__((target("avx512f"), always_inline)) {
    const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, idx, m + i * s0 + j * s1, 4);
    _mm512_storeu_ps(L + (i * D + j) * 16, v);
  };
  gather_order<D>(s0, s1, one);
}
template <int D>
__attribute__((target("avx512f"), noinline)) void gather_tril(const double* m, const int32_t* ko,
                                                              int64_t s0, int64_t s1, double* L) {
  const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ko));
  auto one = [&](int i, int j) __attribute__((target("avx512f"), always_inline)) {
    const __m512d v = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), 0xFF, idx, m + i * s0 + j * s1, 8);
    _mm512_storeu_pd(L + (i * D + j) * 8, v);
  };
  gather_order<D>(s0, s1, one);
}

// In-place transpose of a 16 x 16 float block held as 16 vectors.
__attribute__((target("avx512f"), always_inline)) inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int c = 0; c < 16; c += 2) {
    t[c] = _mm512_unpacklo_ps(r[c], r[c + 1]);
    t[c + 1] = _mm512_unpackhi_ps(r[c], r[c + 1]);
  }
  for (int c = 0; c < 16; c += 4) {
    r[c] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[c]), _mm512_castps_pd(t[c + 2])));
    r[c + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[c]), _mm512_castps_pd(t[c + 2])));
    r[c + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[c + 1]), _mm512_castps_pd(t[c + 3])));
    r[c + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[c + 1]), _mm512_castps_pd(t[c + 3])));
  }
  // r[c] now holds, in each 128-bit quarter q, column (c % 4) of rows 4q'..: 4 x 4 blocks transposed.
  for (int h = 0; h < 16; h += 8) {
    for (int c = 0; c < 4; ++c) {
      t[h + c] = _mm512_shuffle_f32x4(r[h + c], r[h + c + 4], 0x88);
      t[h + c + 4] = _mm512_shuffle_f32x4(r[h + c], r[h + c + 4], 0xdd);
    }
  }
  for (int c = 0; c < 8; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0x88);
    r[c + 8] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0xdd);
  }
}

// The lower triangle of 16 row-major float matrices (k < n; lanes k >= n
// repeat matrix 0) into lanes: 16 vector loads of the same 16-element slice
// of a row of each matrix and one 16 x 16 register transpose per slice
// (the gathers of gather_tril cost more for contiguous rows; for
// column-major matrices, whose slices would scatter into 16 rows of the
// workspace, they stay). The slices crossing the diagonal also bring the
// entries above it: they land in the workspace's upper triangle, which
// nothing reads.
template <int D>
__attribute__((target("avx512f"), noinline)) void load_tril_t16(const float* m, int64_t rs, int64_t s0, int n,
                                                                float* L) {
  static_assert(D % 16 == 0, "whole 16-element slices");
  for (int i = 0; i < D; ++i) {
    for (int j0 = 0; j0 <= i; j0 += 16) {
      __m512 r[16];
      for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(m + (k < n ? k : 0) * rs + i * s0 + j0);
      transpose16(r);
      for (int c = 0; c < 16; ++c) _mm512_storeu_ps(L + (i * D + j0 + c) * 16, r[c]);
    }
  }
}

// The lower triangle of 16 float matrices whose D^2 elements are contiguous
// (row- or column-major; D^2 % 16 == 0: D = 4, 8) into lanes, the inverse of
// store_tril_t16: per 16 consecutive elements of a matrix, 16 vector loads
// (lanes k >= n repeat matrix 0) and one 16 x 16 register transpose, each
// result vector stored as the lanes of its element (i, j) when j <= i. On
// AMD Zen 4 a 16-lane gather costs ~25 cycles (gather_tril was 42 % of the
// D = 4 forward's samples in perf): B = 16384, D = 4 forward 0.195 -> 0.128
// ms there (2 threads), either layout.
template <int D>
__attribute__((target("avx512f"), noinline)) void load_tril_f16(const float* m, int64_t rs, bool col_major, int n,
                                                                float* L) {
  static_assert((D * D) % 16 == 0, "whole 16-element tiles");
  for (int f0 = 0; f0 < D * D; f0 += 16) {
    __m512 r[16];
    for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(m + (k < n ? k : 0) * rs + f0);
    transpose16(r);
    for (int c = 0; c < 16; ++c) {
      const int f = f0 + c;
      const int i = col_major ? f % D : f / D, j = col_major ? f / D : f % D;
      if (j <= i) _mm512_storeu_ps(L + (i * D + j) * 16, r[c]);
    }
  }
}

// Stores lanes k < n of a D x D lanes matrix T (T[(i D + j) * 16 + k]) times
// scale[k] as row k's matrix at dst + k D^2 (row-major, or column-major),
// upper triangle exactly 0: 16 x 16 in-register transposes, one vector store
// per 16 consecutive outputs (the scalar path: 16 stores).
template <int D>
__attribute__((target("avx512f"), noinline)) void store_tril_t16(const float* T, const float* scale,
                                                                 bool col_major, float* dst, int n) {
  static_assert((D * D) % 16 == 0, "whole 16-element tiles");
  const __m512 sv = _mm512_loadu_ps(scale);
  for (int f0 = 0; f0 < D * D; f0 += 16) {
    __m512 r[16];
    for (int c = 0; c < 16; ++c) {
      const int f = f0 + c;
      const int i = col_major ? f % D : f / D, j = col_major ? f / D : f % D;
      r[c] = j <= i ? _mm512_mul_ps(_mm512_loadu_ps(T + (i * D + j) * 16), sv) : _mm512_setzero_ps();
    }
    transpose16(r);
    for (int k = 0; k < n; ++k) _mm512_storeu_ps(dst + static_cast<int64_t>(k) * D * D + f0, r[k]);
  }
}

// Register-tiled solves of the batch kernels (D >= 16, D % 4 == 0): the
// recurrences of solve_e, tril_solve_lt and xet_s on 4 x 4 tiles of lane
// vectors held in 16 registers, so each k costs 8 vector loads for 16 FMAs
// (the plain loops load and store an accumulator per FMA: at D = 64 the
// 1 MB workspace is in L2 and that traffic is the bottleneck). Tiles write
// whole 4-column slices, 0 above the diagonal, so E's upper entries inside
// the diagonal tiles are exact zeros (xet_s relies on that).
namespace lanes_tiled {

constexpr int kT = 4;

template <typename A>
struct LV {
  typedef A type __attribute__((vector_size(64)));
};
template <typename A>
using L64 = Lanes<A, 64 / sizeof(A)>;  // one lane vector of the workspace

#define GKL_LT_INLINE __attribute__((target("avx512f"), always_inline)) inline
#define GKL_LT_ENTRY __attribute__((target("avx512f"), noinline))

template <typename A>
GKL_LT_INLINE typename LV<A>::type ld(const L64<A>* p) {
  typename LV<A>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename A>
GKL_LT_INLINE void st(L64<A>* p, const typename LV<A>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

// E <- Lq^-1 (Lp - Lq), rinv[i] = 1 / Lq_ii. Row i: (Delta_i - sum_{k<i}
// Lq_ik E_k) / Lq_ii; a slice starting at j0 needs rows k >= j0 only.
template <int D, typename A>
GKL_LT_ENTRY void solve_e(const L64<A>* Lp, const L64<A>* Lq,
                          L64<A>* E, L64<A>* rinv) {
  using V = typename LV<A>::type;
  for (int i = 0; i < D; ++i) st(&rinv[i], A(1) / ld(&Lq[i * D + i]));
  for (int i0 = 0; i0 < D; i0 += kT) {
    for (int j0 = 0; j0 <= i0; j0 += kT) {
      V acc[kT][kT];
      for (int r = 0; r < kT; ++r) {
        for (int c = 0; c < kT; ++c) {
          const int i = i0 + r, j = j0 + c;
          acc[r][c] = j <= i ? ld(&Lp[i * D + j]) - ld(&Lq[i * D + j]) : V{};
        }
      }
      for (int k = j0; k < i0; ++k) {
        V l[kT], e[kT];
        for (int r = 0; r < kT; ++r) l[r] = ld(&Lq[(i0 + r) * D + k]);
        for (int c = 0; c < kT; ++c) e[c] = ld(&E[k * D + j0 + c]);
        for (int r = 0; r < kT; ++r) {
          for (int c = 0; c < kT; ++c) acc[r][c] -= l[r] * e[c];
        }
      }
      for (int r = 0; r < kT; ++r) {
        const int i = i0 + r;
        for (int q = 0; q < r; ++q) {
          const V l = ld(&Lq[i * D + i0 + q]);
          for (int c = 0; c < kT; ++c) acc[r][c] -= l * acc[q][c];
        }
        const V inv = ld(&rinv[i]);
        for (int c = 0; c < kT; ++c) {
          acc[r][c] = j0 + c <= i ? acc[r][c] * inv : V{};
          st(&E[i * D + j0 + c], acc[r][c]);
        }
      }
    }
  }
}

// X <- tril(Lq^-T R) (X may alias R), rinv from solve_e. Row i, bottom up:
// (R_i - sum_{k>i} Lq_ki X_k) / Lq_ii on the columns j <= i.
template <int D, typename A>
GKL_LT_ENTRY void tril_solve_lt(const L64<A>* Lq, const L64<A>* rinv,
                                const L64<A>* R, L64<A>* X) {
  using V = typename LV<A>::type;
  for (int i0 = D - kT; i0 >= 0; i0 -= kT) {
    for (int j0 = 0; j0 <= i0; j0 += kT) {
      V acc[kT][kT];
      for (int r = 0; r < kT; ++r) {
        for (int c = 0; c < kT; ++c) acc[r][c] = j0 + c <= i0 + r ? ld(&R[(i0 + r) * D + j0 + c]) : V{};
      }
      for (int k = i0 + kT; k < D; ++k) {
        V l[kT], x[kT];
        for (int r = 0; r < kT; ++r) l[r] = ld(&Lq[k * D + i0 + r]);
        for (int c = 0; c < kT; ++c) x[c] = ld(&X[k * D + j0 + c]);
        for (int r = 0; r < kT; ++r) {
          for (int c = 0; c < kT; ++c) acc[r][c] -= l[r] * x[c];
        }
      }
      for (int r = kT - 1; r >= 0; --r) {
        const int i = i0 + r;
        for (int q = r + 1; q < kT; ++q) {
          const V l = ld(&Lq[(i0 + q) * D + i]);
          for (int c = 0; c < kT; ++c) acc[r][c] -= l * acc[q][c];
        }
        const V inv = ld(&rinv[i]);
        for (int c = 0; c < kT; ++c) acc[r][c] = j0 + c <= i ? acc[r][c] * inv : V{};
      }
      for (int r = 0; r < kT; ++r) {
        for (int c = 0; c < kT; ++c) st(&X[(i0 + r) * D + j0 + c], acc[r][c]);
      }
    }
  }
}

// Lower triangle of S = X + y b^T + diag(E_ii rinv_i) + X E^T (xet_s of
// kl_full_row.h: -S = dLq): S_ij = y_i b_j + X_ij + [i == j] E_ii / Lq_ii +
// sum_{k <= j} X_ik E_jk. Reads X's and E's entries above the diagonal
// inside the diagonal tiles (zeros: solve_e, tril_solve_lt).
template <int D, typename A>
GKL_LT_ENTRY void xet_s(const L64<A>* X, const L64<A>* y, const L64<A>* E,
                        const L64<A>* b, const L64<A>* rinv, L64<A>* S) {
  using V = typename LV<A>::type;
  for (int i0 = 0; i0 < D; i0 += kT) {
    for (int j0 = 0; j0 <= i0; j0 += kT) {
      V acc[kT][kT];
      for (int r = 0; r < kT; ++r) {
        const int i = i0 + r;
        const V yi = ld(&y[i]);
        for (int c = 0; c < kT; ++c) {
          const int j = j0 + c;
          acc[r][c] = j <= i ? yi * ld(&b[j]) + ld(&X[i * D + j]) : V{};
          if (i == j) acc[r][c] += ld(&E[i * D + i]) * ld(&rinv[i]);
        }
      }
      for (int k = 0; k < j0 + kT; ++k) {  // E_jk = 0 for k > j (exact zeros up to j0 + 3)
        V xi[kT], ej[kT];
        for (int r = 0; r < kT; ++r) xi[r] = ld(&X[(i0 + r) * D + k]);
        for (int c = 0; c < kT; ++c) ej[c] = ld(&E[(j0 + c) * D + k]);
        for (int r = 0; r < kT; ++r) {
          for (int c = 0; c < kT; ++c) acc[r][c] += xi[r] * ej[c];
        }
      }
      for (int r = 0; r < kT; ++r) {
        for (int c = 0; c < kT; ++c) st(&S[(i0 + r) * D + j0 + c], j0 + c <= i0 + r ? acc[r][c] : V{});
      }
    }
  }
}

#undef GKL_LT_INLINE
#undef GKL_LT_ENTRY

}  // namespace lanes_tiled
#endif

// Loads rows row0 + k (k < n; lanes k >= n repeat row0) of side `side`
// (lower triangle) into L, adding x - x of every value to bad.
template <typename S, typename A, int D, int W>
GKL_ALWAYS_INLINE void batch_load_tril(const FullRows& r, int side, int64_t row0, int n,
                                       Lanes<A, W>* L, Lanes<A, W>& bad) {
  const S* base = static_cast<const S*>(side == 0 ? r.m_p : r.m_q);
  const int64_t rs = r.m_rs[side], s0 = r.m_s0[side], s1 = r.m_s1[side];
  bool done = false;
#ifdef GKL_HAVE_GATHER
  if constexpr (std::is_same<S, float>::value && std::is_same<A, float>::value && D % 16 == 0) {
    if (tiled::available() && s1 == 1) {
      load_tril_t16<D>(base + row0 * rs, rs, s0, n, &L[0].v[0]);
      done = true;
    }
  }
  if constexpr (std::is_same<S, float>::value && std::is_same<A, float>::value && D < 16 && (D * D) % 16 == 0) {
    const bool contig = (s0 == D && s1 == 1) || (s0 == 1 && s1 == D);
    if (tiled::available() && contig && rs >= 0) {
      load_tril_f16<D>(base + row0 * rs, rs, s0 == 1, n, &L[0].v[0]);
      done = true;
    }
  }
  if constexpr (std::is_same<S, A>::value && W * sizeof(A) == 64) {
    const int64_t span = (W - 1) * rs + (D - 1) * (s0 + s1);
    if (!done && tiled::available() && rs >= 0 && s0 >= 0 && s1 >= 0 && span < (int64_t(1) << 31)) {
      int32_t ko[W];
      for (int k = 0; k < W; ++k) ko[k] = static_cast<int32_t>((k < n ? k : 0) * rs);
      gather_tril<D>(base + row0 * rs, ko, s0, s1, &L[0].v[0]);
      done = true;
    }
  }
#endif
  if (!done) {
    for (int k = 0; k < W; ++k) {
      const S* m = base + (row0 + (k < n ? k : 0)) * rs;
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j <= i; ++j) L[i * D + j].v[k] = static_cast<A>(m[i * s0 + j * s1]);
      }
    }
  }
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j <= i; ++j) bad += L[i * D + j] - L[i * D + j];
  }
}

// The O(D^3) routines of a block: register-tiled (lanes_tiled) where the
// block size and the CPU allow, the plain kl_math.h / xet_s loops
// otherwise (as kl_full_row.h's *_rows for one row).
template <typename A, int D>
GKL_ALWAYS_INLINE bool batch_tiled() {
#ifdef GKL_HAVE_GATHER
  if constexpr (D >= 16 && D % lanes_tiled::kT == 0 && lanes<A>() * sizeof(A) == 64) return tiled::available();
#endif
  return false;
}
template <typename A, int D>
GKL_ALWAYS_INLINE void batch_solve_e(BatchWork<A, D>& w) {  // E, and rinv for the tiled solves
#ifdef GKL_HAVE_GATHER
  if (batch_tiled<A, D>()) return lanes_tiled::solve_e<D>(w.Lp, w.Lq, w.E, w.rinv);
#endif
  solve_e(w.Lp, w.Lq, w.E, D);
}
template <typename A, int D, typename V>
GKL_ALWAYS_INLINE void batch_tril_solve_lt(const BatchWork<A, D>& w, const V* R, V* X) {  // X may alias R
#ifdef GKL_HAVE_GATHER
  if (batch_tiled<A, D>()) return lanes_tiled::tril_solve_lt<D>(w.Lq, w.rinv, R, X);
#endif
  tril_solve_lt(w.Lq, R, X, D);
}
template <typename A, int D, typename V>
GKL_ALWAYS_INLINE void batch_xet_s(const BatchWork<A, D>& w, V* S) {  // from X in T, y, E, b
#ifdef GKL_HAVE_GATHER
  if (batch_tiled<A, D>()) return lanes_tiled::xet_s<D>(w.T, w.y, w.E, w.b, w.rinv, S);
#endif
  xet_s(w.T, w.y, w.E, w.b, w.Lq, D, S);
}

// Fills Lp, Lq (identity without q), E = Lq^-1 (Lp - Lq), b = Lq^-1 delta
// (and bad) for one block, with the solves of kl_math.h.
template <typename S, bool HasQ, int D, typename A>
GKL_ALWAYS_INLINE void batch_prepare(const FullRows& r, int64_t row0, int n, BatchWork<A, D>& w) {
  using V = typename BatchWork<A, D>::V;
  constexpr int W = BatchWork<A, D>::W;
  w.bad = V(A(0));
  batch_load_tril<S, A, D, W>(r, 0, row0, n, w.Lp, w.bad);
  const S* mu_p = static_cast<const S*>(r.mu_p);
  const S* mu_q = static_cast<const S*>(r.mu_q);
  for (int k = 0; k < W; ++k) {
    const int64_t row = row0 + (k < n ? k : 0);
    for (int i = 0; i < D; ++i) {
      const A mp = static_cast<A>(mu_p[row * r.mu_rs[0] + i * r.mu_cs[0]]);
      const A mq = HasQ ? static_cast<A>(mu_q[row * r.mu_rs[1] + i * r.mu_cs[1]]) : A(0);
      w.b[i].v[k] = mq - mp;  // delta
    }
  }
  for (int i = 0; i < D; ++i) w.bad += w.b[i] - w.b[i];
  if (!HasQ) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        w.Lq[i * D + j] = V(i == j ? A(1) : A(0));
        w.E[i * D + j] = w.Lp[i * D + j] - w.Lq[i * D + j];
      }
    }
    return;
  }
  batch_load_tril<S, A, D, W>(r, 1, row0, n, w.Lq, w.bad);
  batch_solve_e(w);
  trsv_lower(w.Lq, w.b, D);
}

// out[row] = KL for rows [begin, end): full_kl2's sum, the diagonal terms
// (log, expm1) per lane with FastMath.
template <typename S, bool HasQ, int D>
GKL_ALWAYS_INLINE void batch_forward(const FullRows& r, S* out, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  using V = typename BatchWork<A, D>::V;
  constexpr int W = BatchWork<A, D>::W;
  const std::unique_ptr<BatchWork<A, D>> wp(new BatchWork<A, D>);
  BatchWork<A, D>& w = *wp;
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, end - row0));
    batch_prepare<S, HasQ, D>(r, row0, n, w);
    V off(A(0)), dg(A(0)), bb(A(0));
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < i; ++j) off += w.E[i * D + j] * w.E[i * D + j];
      const V& lp = w.Lp[i * D + i];
      const V& lq = w.Lq[i * D + i];
      for (int k = 0; k < W; ++k) {
        dg.v[k] += HasQ ? full_diag_term2<FastMath>(lp.v[k], lq.v[k], A(1) / lq.v[k])
                        : full_diag_term2<FastMath>(lp.v[k], A(1), A(1));
      }
      bb += w.b[i] * w.b[i];
    }
    const V kl = V(A(0.5)) * (off + dg + bb + w.bad);
    for (int k = 0; k < n; ++k) out[row0 + k] = static_cast<S>(kl.v[k]);
  }
}

// Gradients of g * KL for rows [begin, end) (formulas of full_row_backward,
// scale_tril, with its kl_math.h routines), only the outputs of o that are
// not null.
template <typename S, bool HasQ, int D>
GKL_ALWAYS_INLINE void batch_backward(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o,
                                      int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  constexpr int W = BatchWork<A, D>::W;
  const std::unique_ptr<BatchWork<A, D>> wp(new BatchWork<A, D>);
  BatchWork<A, D>& w = *wp;
  S* gmp = static_cast<S*>(o.grad[0]);
  S* gmq = static_cast<S*>(o.grad[2]);
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, end - row0));
    batch_prepare<S, HasQ, D>(r, row0, n, w);
    for (int k = 0; k < W; ++k) w.gr.v[k] = static_cast<A>(g[(row0 + (k < n ? k : 0)) * gs]);
    auto store_mat = [&](int out, A sign, const typename BatchWork<A, D>::V* src) {
      S* dst = static_cast<S*>(o.grad[out]);
#ifdef GKL_HAVE_GATHER
      if constexpr (std::is_same<S, float>::value && std::is_same<A, float>::value && D < 16 && (D * D) % 16 == 0) {
        if (tiled::available()) {
          A scale[W];
          for (int k = 0; k < W; ++k) scale[k] = sign * w.gr.v[k];
          store_tril_t16<D>(&src[0].v[0], scale, o.col_major[out], dst + row0 * D * D, n);
          return;
        }
      }
#endif
      for (int k = 0; k < n; ++k) {
        S* d = dst + (row0 + k) * D * D;
        for (int i = 0; i < D; ++i) {
          for (int j = 0; j < D; ++j) {
            d[o.at(out, i, j, D)] = static_cast<S>(j <= i ? sign * w.gr.v[k] * src[i * D + j].v[k] : A(0));
          }
        }
      }
    };
    const bool gq = HasQ && o.grad[3];
    if (gmp || gmq || gq) {
      for (int i = 0; i < D; ++i) w.y[i] = w.b[i];
      trsv_lower_t(w.Lq, w.y, D);  // y = Lq^-T b
      for (int k = 0; k < n && (gmp || gmq); ++k) {
        for (int i = 0; i < D; ++i) {
          if (gmp) gmp[(row0 + k) * D + i] = static_cast<S>(-w.gr.v[k] * w.y[i].v[k]);
          if (gmq) gmq[(row0 + k) * D + i] = static_cast<S>(w.gr.v[k] * w.y[i].v[k]);
        }
      }
    }
    if (o.grad[1] || gq) {  // X = tril(Lq^-T E) into T
      if (HasQ) {
        batch_tril_solve_lt(w, w.E, w.T);
      } else {  // Lq = I
        for (int i = 0; i < D; ++i) {
          for (int j = 0; j <= i; ++j) w.T[i * D + j] = w.E[i * D + j];
        }
      }
    }
    if (o.grad[1]) {
      for (int i = 0; i < D; ++i) w.dlp[i] = w.E[i * D + i] / w.Lp[i * D + i];
    }
    if (gq) {  // dLq = -xet_s, into Lp (of which only dlp was still needed)
      batch_xet_s(w, w.Lp);
      store_mat(3, A(-1), w.Lp);
    }
    if (o.grad[1]) {  // dLp = X + diag(E_ii / Lp_ii)
      for (int i = 0; i < D; ++i) w.T[i * D + i] += w.dlp[i];
      store_mat(1, A(1), w.T);
    }
  }
}

}  // namespace cpu
}  // namespace gaussian_kl
