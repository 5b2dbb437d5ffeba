// cpu/diag_kernels.h — the CPU row loops of the diagonal KL (forward and
// backward) around math/diag.h, compiled once per instruction-set variant
// (cpu/isa_*.cpp). No torch headers.
//
// Within a row the D dimensions are processed in blocks of W independent
// lanes (16 floats or 8 doubles) with one accumulator per lane, which gcc
// vectorises (it needs -fno-trapping-math to if-convert the selects of
// math/diag.h, see setup.py); the lanes are summed in a fixed tree at the end
// of the row. Every addition's order is fixed by D alone, so results do not
// depend on the thread count or on which variant runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../math/diag.h"
#include "../math/fast_math.h"

#define GKL_ALWAYS_INLINE inline __attribute__((always_inline))

GKL_NS_BEGIN

template <typename acc_t>
constexpr int lanes() {
  return sizeof(acc_t) == 4 ? 16 : 8;
}

template <bool Contig, typename scalar_t>
GKL_ALWAYS_INLINE typename AccType<scalar_t>::type ld(const scalar_t* p, int64_t i, int64_t stride) {
  using acc_t = typename AccType<scalar_t>::type;
  return static_cast<acc_t>(p[Contig ? i : i * stride]);
}

// Small D (D <= 16): a row barely fills the lanes, so rows are processed in
// chunks laid out flat. Each input's chunk is used in place when its rows
// are packed ([N, D] contiguous) and gathered into a small local buffer
// otherwise (a q shared by all rows, strided inputs).
constexpr int64_t kFlatChunk = 512;  // elements per chunk (L1 resident)
constexpr int64_t kFlatMaxDim = 16;  // measured: rows win from D = 32 on

template <typename scalar_t>
struct FlatChunk {
  using acc_t = typename AccType<scalar_t>::type;
  acc_t buf[4][kFlatChunk];
  const acc_t* in[4];
  // Load rows [row0, row0 + rows) of each input as flat acc_t arrays.
  GKL_ALWAYS_INLINE void load(const DiagRows& r, int nin, int64_t row0, int64_t rows) {
    const int64_t D = r.dim;
    const void* base[4] = {r.mu_p, r.s_p, r.mu_q, r.s_q};
    for (int j = 0; j < nin; ++j) {
      const scalar_t* p = static_cast<const scalar_t*>(base[j]);
      const int64_t rs = r.row_stride[j], cs = r.col_stride[j];
      acc_t* b = buf[j];
      if (rs == D && cs == 1) {
        const scalar_t* src = p + row0 * D;
        if constexpr (std::is_same<scalar_t, acc_t>::value) {
          in[j] = src;  // packed float rows: read in place
          continue;
        }
        for (int64_t i = 0; i < rows * D; ++i) b[i] = static_cast<acc_t>(src[i]);
      } else {
        for (int64_t k = 0; k < rows; ++k) {
          const scalar_t* src = p + (row0 + k) * rs;
          for (int64_t d = 0; d < D; ++d) b[k * D + d] = static_cast<acc_t>(src[d * cs]);
        }
      }
      in[j] = b;
    }
  }
};

// out[row] = 1/2 sum_d diag_term2(...) for rows [begin, end).
template <typename scalar_t, DiagParam P, bool HasQ, bool Contig>
GKL_ALWAYS_INLINE void forward_rows_body(
    const DiagRows& r, scalar_t* __restrict__ out, int64_t begin, int64_t end) {
  using acc_t = typename AccType<scalar_t>::type;
  using M = FastMath;
  constexpr int W = lanes<acc_t>();
  const int64_t D = r.dim;
  const int64_t* cs = r.col_stride;
  if (D > 0 && D <= kFlatMaxDim) {
    // Flat chunks: terms of whole rows, W at a time, then each row's sum in
    // order d = 0..D-1.
    FlatChunk<scalar_t> c;
    acc_t terms[kFlatChunk];
    const int64_t chunk_rows = kFlatChunk / D;
    for (int64_t row0 = begin; row0 < end; row0 += chunk_rows) {
      const int64_t rows = kl_min(chunk_rows, end - row0);
      const int64_t n = rows * D;
      c.load(r, HasQ ? 4 : 2, row0, rows);
      auto term = [&](int64_t i) __attribute__((always_inline)) {
        return diag_term2<P, HasQ, M>(
            c.in[0][i], c.in[1][i], HasQ ? c.in[2][i] : acc_t(0), HasQ ? c.in[3][i] : acc_t(0));
      };
      int64_t i = 0;
      for (; i + W <= n; i += W) {
        for (int k = 0; k < W; ++k) terms[i + k] = term(i + k);
      }
      for (; i < n; ++i) terms[i] = term(i);
      for (int64_t k = 0; k < rows; ++k) {
        acc_t sum = acc_t(0);
        for (int64_t d = 0; d < D; ++d) sum += terms[k * D + d];
        out[row0 + k] = static_cast<scalar_t>(
            diag_row_finish<P, HasQ>(acc_t(0.5) * sum, D, [&](int64_t d) {
              const int64_t i = k * D + d;
              return DiagWide{c.in[0][i], c.in[1][i], HasQ ? c.in[2][i] : 0.0, HasQ ? c.in[3][i] : 0.0};
            }));
      }
    }
    return;
  }
  for (int64_t row = begin; row < end; ++row) {
    const DiagRowIn<scalar_t, HasQ> p(r, row);
    auto term = [&](int64_t i) __attribute__((always_inline)) {
      return diag_term2<P, HasQ, M>(
          ld<Contig>(p.mp, i, cs[0]), ld<Contig>(p.sp, i, cs[1]),
          HasQ ? ld<Contig>(p.mq, i, cs[2]) : acc_t(0), HasQ ? ld<Contig>(p.sq, i, cs[3]) : acc_t(0));
    };
    const acc_t sum = lane_sum<W, acc_t>(D, term);  // W lanes, a fixed tree
    out[row] = static_cast<scalar_t>(diag_row_finish<P, HasQ>(acc_t(0.5) * sum, D, [&](int64_t i) {
      return DiagWide{ld<Contig>(p.mp, i, cs[0]), ld<Contig>(p.sp, i, cs[1]),
                      HasQ ? ld<Contig>(p.mq, i, cs[2]) : 0.0, HasQ ? ld<Contig>(p.sq, i, cs[3]) : 0.0};
    }));
  }
}

// Gradients for rows [begin, end): each element depends only on its own
// inputs and the row's incoming gradient g[row]. Computed W lanes at a time
// into a small buffer, stored only for the outputs asked for.
template <typename scalar_t, DiagParam P, bool HasQ, bool Contig>
GKL_ALWAYS_INLINE void backward_rows_body(
    const DiagRows& r,
    const scalar_t* __restrict__ g,
    int64_t g_stride,
    const DiagGradOut& o,
    int64_t begin,
    int64_t end) {
  using acc_t = typename AccType<scalar_t>::type;
  using M = FastMath;
  constexpr int W = lanes<acc_t>();
  const int64_t D = r.dim;
  const int64_t* cs = r.col_stride;
  if (D > 0 && D <= kFlatMaxDim) {
    // Flat chunks (see forward); outputs are [N, D] contiguous, so a chunk
    // of rows is one flat range of each output.
    FlatChunk<scalar_t> c;
    acc_t gbuf[kFlatChunk];
    acc_t res[4][kFlatChunk];
    const int64_t chunk_rows = kFlatChunk / D;
    for (int64_t row0 = begin; row0 < end; row0 += chunk_rows) {
      const int64_t rows = kl_min(chunk_rows, end - row0);
      const int64_t n = rows * D;
      c.load(r, HasQ ? 4 : 2, row0, rows);
      for (int64_t k = 0; k < rows; ++k) {
        const acc_t gr = static_cast<acc_t>(g[(row0 + k) * g_stride]);
        for (int64_t d = 0; d < D; ++d) gbuf[k * D + d] = gr;
      }
      auto grad = [&](int64_t i) __attribute__((always_inline)) {
        const DiagGrad<acc_t> v = diag_grad<P, HasQ, M>(
            gbuf[i], c.in[0][i], c.in[1][i], HasQ ? c.in[2][i] : acc_t(0),
            HasQ ? c.in[3][i] : acc_t(0));
        res[0][i] = v.mu_p;
        res[1][i] = v.s_p;
        res[2][i] = v.mu_q;
        res[3][i] = v.s_q;
      };
      int64_t i = 0;
      for (; i + W <= n; i += W) {
        for (int k = 0; k < W; ++k) grad(i + k);
      }
      for (; i < n; ++i) grad(i);
      for (int j = 0; j < 4; ++j) {
        if (!o.grad[j]) continue;
        scalar_t* dst = static_cast<scalar_t*>(o.grad[j]) + row0 * D;
        for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<scalar_t>(res[j][e]);
      }
    }
    return;
  }
  for (int64_t row = begin; row < end; ++row) {
    const DiagRowIn<scalar_t, HasQ> p(r, row);
    scalar_t* out[4];
    for (int j = 0; j < 4; ++j) {
      out[j] = o.grad[j] ? static_cast<scalar_t*>(o.grad[j]) + row * D : nullptr;
    }
    const acc_t gr = static_cast<acc_t>(g[row * g_stride]);
    acc_t buf[4][W];
    auto grad = [&](int64_t i, int k) __attribute__((always_inline)) {
      const DiagGrad<acc_t> v = diag_grad<P, HasQ, M>(
          gr, ld<Contig>(p.mp, i, cs[0]), ld<Contig>(p.sp, i, cs[1]),
          HasQ ? ld<Contig>(p.mq, i, cs[2]) : acc_t(0), HasQ ? ld<Contig>(p.sq, i, cs[3]) : acc_t(0));
      buf[0][k] = v.mu_p;
      buf[1][k] = v.s_p;
      buf[2][k] = v.mu_q;
      buf[3][k] = v.s_q;
    };
    int64_t d = 0;
    for (; d + W <= D; d += W) {
      for (int k = 0; k < W; ++k) grad(d + k, k);
      // Constant trip count: inlined vector stores (a variable count would
      // become a memcpy call per block). The branch is per block.
      for (int j = 0; j < 4; ++j) {
        if (!out[j]) continue;
        for (int k = 0; k < W; ++k) out[j][d + k] = static_cast<scalar_t>(buf[j][k]);
      }
    }
    const int n = static_cast<int>(D - d);
    for (int k = 0; k < n; ++k) grad(d + k, k);
    for (int j = 0; j < 4; ++j) {
      if (!out[j]) continue;
      for (int k = 0; k < n; ++k) out[j][d + k] = static_cast<scalar_t>(buf[j][k]);
    }
  }
}

GKL_NS_END
