// Batch-SIMD rows of the full-covariance KL for small compile-time D
// (scale_tril, both sides): W rows at a time (16 floats / 8 doubles, one per
// vector lane) in structure-of-arrays workspaces, every loop innermost over
// the W lanes, so each arithmetic step is one vector instruction for W rows
// (a single row of D = 4 has too little parallelism for the vector units).
// Same math as kl_full_row.h (E = Lq^-1 (Lp - Lq) form, non-negative sum).
//
// Every row goes through the same lane code: a last partial block is padded
// with copies of its first row and only the real rows are stored, so the
// result of a row never depends on where a thread's chunk starts (results
// stay independent of the thread count). No torch headers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "../kl_args.h"
#include "../kl_math.h"
#include "fast_math.h"
#include "kl_diag_rows.h"  // lanes<>()

namespace gaussian_kl {
namespace cpu {

// Workspace of one block: ~3 D^2 W accumulators (48 KB at D = 16, 768 KB at
// D = 64 in float), allocated once per chunk on the heap, not the stack.
template <typename A, int D>
struct BatchWork {
  static constexpr int W = lanes<A>();
  A Lp[D][D][W], Lq[D][D][W], E[D][D][W], b[D][W], bad[W];
  A T[D][D][W];  // backward: dLp, then dLq
  A y[D][W], gr[W];
};

// Loads rows row0 + k (k < n; lanes k >= n repeat row0) of side `side`
// (lower triangle) into L, adding x - x of every value to bad.
template <typename S, typename A, int D, int W>
GKL_ALWAYS_INLINE void batch_load_tril(const FullRows& r, int side, int64_t row0, int n,
                                       A (&L)[D][D][W], A (&bad)[W]) {
  const S* base = static_cast<const S*>(side == 0 ? r.m_p : r.m_q);
  const int64_t rs = r.m_rs[side], s0 = r.m_s0[side], s1 = r.m_s1[side];
  for (int k = 0; k < W; ++k) {
    const S* m = base + (row0 + (k < n ? k : 0)) * rs;
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) L[i][j][k] = static_cast<A>(m[i * s0 + j * s1]);
    }
  }
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j <= i; ++j) {
      for (int k = 0; k < W; ++k) bad[k] += L[i][j][k] - L[i][j][k];
    }
  }
}

// Fills Lp, Lq (identity without q), E, b (and bad) for one block.
template <typename S, bool HasQ, int D, typename A>
GKL_ALWAYS_INLINE void batch_prepare(const FullRows& r, int64_t row0, int n, BatchWork<A, D>& w) {
  constexpr int W = BatchWork<A, D>::W;
  for (int k = 0; k < W; ++k) w.bad[k] = A(0);
  batch_load_tril<S, A, D, W>(r, 0, row0, n, w.Lp, w.bad);
  const S* mu_p = static_cast<const S*>(r.mu_p);
  const S* mu_q = static_cast<const S*>(r.mu_q);
  for (int k = 0; k < W; ++k) {
    const int64_t row = row0 + (k < n ? k : 0);
    for (int i = 0; i < D; ++i) {
      const A mp = static_cast<A>(mu_p[row * r.mu_rs[0] + i * r.mu_cs[0]]);
      const A mq = HasQ ? static_cast<A>(mu_q[row * r.mu_rs[1] + i * r.mu_cs[1]]) : A(0);
      w.b[i][k] = mq - mp;  // delta
    }
  }
  for (int i = 0; i < D; ++i) {
    for (int k = 0; k < W; ++k) w.bad[k] += w.b[i][k] - w.b[i][k];
  }
  if (!HasQ) {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j <= i; ++j) {
        for (int k = 0; k < W; ++k) {
          w.Lq[i][j][k] = i == j ? A(1) : A(0);
          w.E[i][j][k] = w.Lp[i][j][k] - (i == j ? A(1) : A(0));
        }
      }
    }
    return;
  }
  batch_load_tril<S, A, D, W>(r, 1, row0, n, w.Lq, w.bad);
  // E = Lq^-1 (Lp - Lq), row by row (forward substitution).
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j <= i; ++j) {
      for (int k = 0; k < W; ++k) w.E[i][j][k] = w.Lp[i][j][k] - w.Lq[i][j][k];
    }
    for (int m = 0; m < i; ++m) {
      for (int j = 0; j <= m; ++j) {
        for (int k = 0; k < W; ++k) w.E[i][j][k] -= w.Lq[i][m][k] * w.E[m][j][k];
      }
    }
    A inv[W];
    for (int k = 0; k < W; ++k) inv[k] = A(1) / w.Lq[i][i][k];
    for (int j = 0; j <= i; ++j) {
      for (int k = 0; k < W; ++k) w.E[i][j][k] *= inv[k];
    }
  }
  // b = Lq^-1 delta.
  for (int i = 0; i < D; ++i) {
    for (int m = 0; m < i; ++m) {
      for (int k = 0; k < W; ++k) w.b[i][k] -= w.Lq[i][m][k] * w.b[m][k];
    }
    for (int k = 0; k < W; ++k) w.b[i][k] /= w.Lq[i][i][k];
  }
}

// out[row] = KL for rows [begin, end).
template <typename S, bool HasQ, int D>
GKL_ALWAYS_INLINE void batch_forward(const FullRows& r, S* out, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  constexpr int W = BatchWork<A, D>::W;
  const std::unique_ptr<BatchWork<A, D>> wp(new BatchWork<A, D>);
  BatchWork<A, D>& w = *wp;
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, end - row0));
    batch_prepare<S, HasQ, D>(r, row0, n, w);
    A off[W], dg[W], bb[W];
    for (int k = 0; k < W; ++k) off[k] = dg[k] = bb[k] = A(0);
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < i; ++j) {
        for (int k = 0; k < W; ++k) off[k] += w.E[i][j][k] * w.E[i][j][k];
      }
      for (int k = 0; k < W; ++k) {
        dg[k] += HasQ ? diag_term2<DiagParam::Std, true, FastMath>(A(0), w.Lp[i][i][k], A(0), w.Lq[i][i][k])
                      : diag_term2<DiagParam::Std, false, FastMath>(A(0), w.Lp[i][i][k], A(0), A(0));
        bb[k] += w.b[i][k] * w.b[i][k];
      }
    }
    A kl[W];
    for (int k = 0; k < W; ++k) kl[k] = A(0.5) * (off[k] + dg[k] + bb[k] + w.bad[k]);
    for (int k = 0; k < n; ++k) out[row0 + k] = static_cast<S>(kl[k]);
  }
}

// X = tril(Lq^-T R) for lower-triangular R, lane-wise (may alias).
template <typename A, int D, int W>
GKL_ALWAYS_INLINE void batch_tril_solve_lt(const A (&Lq)[D][D][W], const A (&R)[D][D][W], A (&X)[D][D][W]) {
  for (int i = D - 1; i >= 0; --i) {
    for (int j = 0; j <= i; ++j) {
      for (int k = 0; k < W; ++k) X[i][j][k] = R[i][j][k];
    }
    for (int m = i + 1; m < D; ++m) {
      for (int j = 0; j <= i; ++j) {
        for (int k = 0; k < W; ++k) X[i][j][k] -= Lq[m][i][k] * X[m][j][k];
      }
    }
    A inv[W];
    for (int k = 0; k < W; ++k) inv[k] = A(1) / Lq[i][i][k];
    for (int j = 0; j <= i; ++j) {
      for (int k = 0; k < W; ++k) X[i][j][k] *= inv[k];
    }
  }
}

// Gradients of g * KL for rows [begin, end) (formulas of full_row_backward,
// scale_tril), only the outputs of o that are not null.
template <typename S, bool HasQ, int D>
GKL_ALWAYS_INLINE void batch_backward(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o,
                                      int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  constexpr int W = BatchWork<A, D>::W;
  const std::unique_ptr<BatchWork<A, D>> wp(new BatchWork<A, D>);
  BatchWork<A, D>& w = *wp;
  auto& T = w.T;
  auto& y = w.y;
  auto& gr = w.gr;
  S* gmp = static_cast<S*>(o.grad[0]);
  S* gp = static_cast<S*>(o.grad[1]);
  S* gmq = static_cast<S*>(o.grad[2]);
  S* gq = static_cast<S*>(o.grad[3]);
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, end - row0));
    batch_prepare<S, HasQ, D>(r, row0, n, w);
    for (int k = 0; k < W; ++k) gr[k] = static_cast<A>(g[(row0 + (k < n ? k : 0)) * gs]);
    auto store_mat = [&](int out, const A (&X)[D][D][W], A sign) {
      S* dst = static_cast<S*>(o.grad[out]);
      for (int k = 0; k < n; ++k) {
        S* d = dst + (row0 + k) * D * D;
        for (int i = 0; i < D; ++i) {
          for (int j = 0; j < D; ++j) {
            d[o.at(out, i, j, D)] = static_cast<S>(j <= i ? sign * gr[k] * X[i][j][k] : A(0));
          }
        }
      }
    };
    if (gmp || gmq) {
      // y = Lq^-T b (back substitution).
      for (int i = D - 1; i >= 0; --i) {
        for (int k = 0; k < W; ++k) y[i][k] = w.b[i][k];
        for (int m = i + 1; m < D; ++m) {
          for (int k = 0; k < W; ++k) y[i][k] -= w.Lq[m][i][k] * y[m][k];
        }
        for (int k = 0; k < W; ++k) y[i][k] /= w.Lq[i][i][k];
      }
      for (int k = 0; k < n; ++k) {
        for (int i = 0; i < D; ++i) {
          if (gmp) gmp[(row0 + k) * D + i] = static_cast<S>(-gr[k] * y[i][k]);
          if (gmq) gmq[(row0 + k) * D + i] = static_cast<S>(gr[k] * y[i][k]);
        }
      }
    }
    if (gp) {
      batch_tril_solve_lt<A, D, W>(w.Lq, w.E, T);
      for (int i = 0; i < D; ++i) {
        for (int k = 0; k < W; ++k) T[i][i][k] += w.E[i][i][k] / w.Lp[i][i][k];
      }
      store_mat(1, T, A(1));
    }
    if (HasQ && gq) {
      // Lower triangle of S = E + E^T + E E^T + b b^T, then dLq = -tril(Lq^-T S).
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j <= i; ++j) {
          for (int k = 0; k < W; ++k) {
            T[i][j][k] = w.b[i][k] * w.b[j][k] + w.E[i][j][k] + (i == j ? w.E[i][j][k] : A(0));
          }
          for (int m = 0; m <= j; ++m) {
            for (int k = 0; k < W; ++k) T[i][j][k] += w.E[i][m][k] * w.E[j][m][k];
          }
        }
      }
      batch_tril_solve_lt<A, D, W>(w.Lq, T, T);
      store_mat(3, T, A(-1));
    }
  }
}

}  // namespace cpu
}  // namespace gaussian_kl
