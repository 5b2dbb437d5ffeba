// cpu/transpose.h — a W x W block of W-lane vectors transposed in
// registers with constant two-source shuffles (GCC vector extensions:
// vpermt2ps on AVX-512, lowered to the variant's instructions elsewhere).
// Data movement only: the column-major loads and stores of cpu/full_kernels.h.
#pragma once

#include <type_traits>

#include "../math/config.h"

GKL_NS_BEGIN

// log2(W) rounds; round h swaps the off-diagonal h x h blocks of every
// 2h x 2h block: r_i keeps its lanes c with (c & h) == 0 and takes r_{i+h}'s
// lanes c - h for the others, r_{i+h} takes r_i's lanes c + h and keeps the
// others.
template <typename V, typename I, int W, int H = 1>
inline __attribute__((always_inline)) void transpose_tile(V (&r)[W]) {
  I lo, hi;
#pragma GCC unroll 16
  for (int c = 0; c < W; ++c) {
    lo[c] = (c & H) == 0 ? c : W + c - H;
    hi[c] = (c & H) == 0 ? c + H : W + c;
  }
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) {
    if (i & H) continue;
    const V a = r[i], b = r[i + H];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + H] = __builtin_shuffle(a, b, hi);
  }
  if constexpr (2 * H < W) transpose_tile<V, I, W, 2 * H>(r);
}

GKL_NS_END
