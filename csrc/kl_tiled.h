// kl_tiled.h — register-tiled forms of the O(D^3) row routines of
// kl_math.h / kl_full_row.h (solve_e, tril_solve_lt, full_s) for the CPU's
// large-D row path. Same recurrences, same results up to rounding.
//
// The plain routines update one row with one axpy per finished row k
// (load, FMA, store over j <= k: short loops, three memory operations per
// FMA). Here an R x 2C tile (R = 8 rows, two 64-byte vectors of C columns)
// stays in 16 registers while every finished row k adds a rank-1 update
// (two vector loads, R broadcasts, 2R FMAs: half the L2 traffic per FMA of
// one-vector tiles). Vectors are GCC vector extensions; the routines are
// compiled for AVX-512 whatever the caller's clone, and run only where the
// CPU has it (available()); elsewhere the row path keeps the plain loops.
// (GCC lowers vector-extension code in the context of the function that
// contains it: helpers compiled for the baseline would be scalarised before
// inlining.)
//
// Only the lower triangle of a result is defined (and, as 0, the rest of
// the tiles holding the diagonal; every caller reads the lower triangle
// only). A last partial vector (D not a multiple of C) goes through a
// zero-padded copy: nothing past column D is read or written. The order of
// every sum depends on D only, so results do not depend on the thread
// count. Host only (GCC/Clang).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kl_math.h"

namespace gaussian_kl {
namespace tiled {

// D from which the row path uses these routines.
constexpr int kMinD = 32;
constexpr int kRows = 8;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t itype __attribute__((vector_size(64)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t itype __attribute__((vector_size(64)));
};

#if defined(__x86_64__) && !defined(GKL_NO_TARGET_CLONES)
#define GKL_TILE_TARGET __attribute__((target("avx512f")))
inline bool available() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
#else
#define GKL_TILE_TARGET
inline bool available() {
  return true;
}
#endif
#define GKL_TILE_INLINE GKL_TILE_TARGET inline __attribute__((always_inline))
#define GKL_TILE_ENTRY GKL_TILE_TARGET __attribute__((noinline))
#define GKL_TILE_LAMBDA GKL_TILE_TARGET __attribute__((always_inline))

template <typename T>
struct Tile {
  using V = typename Vec<T>::type;
  using I = typename Vec<T>::itype;
  static constexpr int C = static_cast<int>(sizeof(V) / sizeof(T));

  template <bool Part>
  static GKL_TILE_INLINE V ld(const T* p, int cw) {
    V v;
    if (!Part) {
      std::memcpy(&v, p, sizeof(V));
    } else {
      T t[C] = {};
      for (int c = 0; c < cw; ++c) t[c] = p[c];
      std::memcpy(&v, t, sizeof(V));
    }
    return v;
  }
  template <bool Part>
  static GKL_TILE_INLINE void st(T* p, const V& v, int cw) {
    if (!Part) {
      std::memcpy(p, &v, sizeof(V));
    } else {
      T t[C];
      std::memcpy(t, &v, sizeof(V));
      for (int c = 0; c < cw; ++c) p[c] = t[c];
    }
  }
  static GKL_TILE_INLINE V splat(T x) { return x - V{}; }  // x - 0 == x for every x: a plain broadcast
  // Column indices j0 .. j0 + C - 1.
  static GKL_TILE_INLINE I cols(int j0) {
    I v;
    for (int c = 0; c < C; ++c) v[c] = j0 + c;
    return v;
  }
  // x where column <= i (the lower triangle of row i), 0 elsewhere.
  static GKL_TILE_INLINE V lower(const V& x, const I& jv, int i) {
    return jv <= (I{} + i) ? x : V{};
  }
};

// Runs tile(R, NV, Part, i0, j0, cw) over column slices of NV = 2 vectors
// (j0 = 0, 2C, ...; NV = 1 where the second vector would lie wholly above
// the diagonal or past D) up to the last row of each block of R rows
// (blocks ascending, or descending with Down), rows left over by D % kRows
// one at a time. Part: the last vector holds cw < C columns.
template <typename T, bool Down, typename F>
GKL_TILE_INLINE void for_tiles(int D, const F& tile) {
  constexpr int C = Tile<T>::C;
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  auto block = [&](auto RC, int i0) GKL_TILE_LAMBDA {
    constexpr int R = decltype(RC)::value;
    for (int j0 = 0; j0 <= i0 + R - 1; j0 += 2 * C) {
      const int rem = D - j0;
      if (rem > C && j0 + C <= i0 + R - 1) {
        if (rem >= 2 * C) {
          tile(RC, Two{}, std::false_type{}, i0, j0, C);
        } else {
          tile(RC, Two{}, std::true_type{}, i0, j0, rem - C);
        }
      } else if (rem >= C) {
        tile(RC, One{}, std::false_type{}, i0, j0, C);
      } else {
        tile(RC, One{}, std::true_type{}, i0, j0, rem);
      }
    }
  };
  using Full = std::integral_constant<int, kRows>;
  if (!Down) {
    int i0 = 0;
    for (; i0 + kRows <= D; i0 += kRows) block(Full{}, i0);
    for (; i0 < D; ++i0) block(One{}, i0);
  } else {
    int i1 = D;
    for (; i1 >= kRows; i1 -= kRows) block(Full{}, i1 - kRows);
    for (; i1 > 0; --i1) block(One{}, i1 - 1);
  }
}

// Vector v of NV starting at p: full, or the last one partial (Part, cw).
template <typename T, int NV, bool Part>
GKL_TILE_INLINE typename Tile<T>::V ldv(const T* p, int v, int cw) {
  using W = Tile<T>;
  return v == NV - 1 ? W::template ld<Part>(p + v * W::C, cw) : W::template ld<false>(p + v * W::C, W::C);
}
template <typename T, int NV, bool Part>
GKL_TILE_INLINE void stv(T* p, int v, const typename Tile<T>::V& x, int cw) {
  using W = Tile<T>;
  if (v == NV - 1) {
    W::template st<Part>(p + v * W::C, x, cw);
  } else {
    W::template st<false>(p + v * W::C, x, W::C);
  }
}

// E <- Lq^-1 (Lp - Lq) (solve_e). Row i:
// (Delta_i - sum_{k<i} Lq_ik E_k) / Lq_ii; E_kj = 0 for j > k, so a slice
// starting at j0 needs only rows k >= j0.
template <typename T>
GKL_TILE_ENTRY void solve_e(const T* Lp, const T* Lq, T* E, int D) {
  using W = Tile<T>;
  using V = typename W::V;
  using I = typename W::I;
  for_tiles<T, false>(D, [&](auto RC, auto NC, auto PartC, int i0, int j0, int cw) GKL_TILE_LAMBDA {
    constexpr int R = decltype(RC)::value, NV = decltype(NC)::value;
    constexpr bool Part = decltype(PartC)::value;
    I jv[NV];
    for (int v = 0; v < NV; ++v) jv[v] = W::cols(j0 + v * W::C);
    V acc[R][NV];
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r;
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = W::lower(ldv<T, NV, Part>(Lp + i * D + j0, v, cw) - ldv<T, NV, Part>(Lq + i * D + j0, v, cw),
                             jv[v], i);
      }
    }
    // Rows k < j0 + C are 0 on the second vector's columns (all > k) and
    // were not necessarily written there.
    const int kmid = j0 + W::C < i0 ? j0 + W::C : i0;
    for (int k = j0; k < kmid; ++k) {
      const V e = ldv<T, NV, Part>(E + k * D + j0, 0, cw);
      for (int r = 0; r < R; ++r) acc[r][0] -= W::splat(Lq[(i0 + r) * D + k]) * e;
    }
    for (int k = kmid; k < i0; ++k) {
      V e[NV];
      for (int v = 0; v < NV; ++v) e[v] = ldv<T, NV, Part>(E + k * D + j0, v, cw);
      for (int r = 0; r < R; ++r) {
        const V l = W::splat(Lq[(i0 + r) * D + k]);
        for (int v = 0; v < NV; ++v) acc[r][v] -= l * e[v];
      }
    }
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r;
      for (int q = 0; q < r; ++q) {
        const V l = W::splat(Lq[i * D + i0 + q]);
        for (int v = 0; v < NV; ++v) acc[r][v] -= l * acc[q][v];
      }
      const V inv = W::splat(T(1) / Lq[i * D + i]);
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = W::lower(acc[r][v] * inv, jv[v], i);
        stv<T, NV, Part>(E + i * D + j0, v, acc[r][v], cw);
      }
    }
  });
}

// X <- tril(Lq^-T R) (tril_solve_lt; X may alias R). Row i, bottom up:
// (R_i - sum_{k>i} Lq_ki X_k) / Lq_ii on columns j <= i (the coefficients
// of a tile's rows for one k are adjacent in row k of Lq).
template <typename T>
GKL_TILE_ENTRY void tril_solve_lt(const T* Lq, const T* Rm, T* X, int D) {
  using W = Tile<T>;
  using V = typename W::V;
  using I = typename W::I;
  for_tiles<T, true>(D, [&](auto RC, auto NC, auto PartC, int i0, int j0, int cw) GKL_TILE_LAMBDA {
    constexpr int R = decltype(RC)::value, NV = decltype(NC)::value;
    constexpr bool Part = decltype(PartC)::value;
    I jv[NV];
    for (int v = 0; v < NV; ++v) jv[v] = W::cols(j0 + v * W::C);
    V acc[R][NV];
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < NV; ++v) acc[r][v] = W::lower(ldv<T, NV, Part>(Rm + (i0 + r) * D + j0, v, cw), jv[v], i0 + r);
    }
    for (int k = i0 + R; k < D; ++k) {
      V x[NV];
      for (int v = 0; v < NV; ++v) x[v] = ldv<T, NV, Part>(X + k * D + j0, v, cw);
      for (int r = 0; r < R; ++r) {
        const V l = W::splat(Lq[k * D + i0 + r]);
        for (int v = 0; v < NV; ++v) acc[r][v] -= l * x[v];
      }
    }
    for (int r = R - 1; r >= 0; --r) {
      const int i = i0 + r;
      for (int q = r + 1; q < R; ++q) {
        const V l = W::splat(Lq[(i0 + q) * D + i]);
        for (int v = 0; v < NV; ++v) acc[r][v] -= l * acc[q][v];
      }
      const V inv = W::splat(T(1) / Lq[i * D + i]);
      for (int v = 0; v < NV; ++v) acc[r][v] = W::lower(acc[r][v] * inv, jv[v], i);
    }
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < NV; ++v) stv<T, NV, Part>(X + (i0 + r) * D + j0, v, acc[r][v], cw);
    }
  });
}

// Lower triangle (or, with Full, all) of S = F + u b^T + diag(d) + F E^T
// with F E^T as rank-1 updates over k: ET (scratch, D*D) is E transposed
// (upper triangular), so its slices are unit-stride. Only the lower
// triangles of F and E are read. d_i = F_ii (full_s: F = E, u = b), or
// E_ii / Lq_ii with Lq (xet_s: F = tril(Lq^-T E), u = Lq^-T b).
template <bool Full, typename T>
GKL_TILE_ENTRY void fet_s(const T* F, const T* u, const T* E, const T* b, const T* Lq, int D, T* S, T* ET) {
  using W = Tile<T>;
  using V = typename W::V;
  using I = typename W::I;
  constexpr int C = W::C;
  // ET = E^T in 16 x 16 blocks (both sides touch 16 cache lines per block);
  // entries j < k are 0 only in the 2C-column slice holding the diagonal
  // (the only part of ET_k a tile reads left of k).
  constexpr int kB = 16;
  for (int j0 = 0; j0 < D; j0 += kB) {
    for (int k0 = 0; k0 <= j0; k0 += kB) {
      for (int j = j0; j < j0 + kB && j < D; ++j) {
        for (int k = k0; k < k0 + kB && k <= j; ++k) ET[k * D + j] = E[j * D + k];
      }
    }
  }
  for (int k = 0; k < D; ++k) {
    for (int j = k / (2 * C) * (2 * C); j < k; ++j) ET[k * D + j] = T(0);
  }
  for_tiles<T, false>(D, [&](auto RC, auto NC, auto PartC, int i0, int j0, int cw) GKL_TILE_LAMBDA {
    constexpr int R = decltype(RC)::value, NV = decltype(NC)::value;
    constexpr bool Part = decltype(PartC)::value;
    I jv[NV];
    V bj[NV];
    for (int v = 0; v < NV; ++v) {
      jv[v] = W::cols(j0 + v * C);
      bj[v] = ldv<T, NV, Part>(b + j0, v, cw);
    }
    V acc[R][NV];
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r;
      const V ui = W::splat(u[i]);
      const T di = Lq ? E[i * D + i] / Lq[i * D + i] : F[i * D + i];
      for (int v = 0; v < NV; ++v) {
        const V dii = jv[v] == (I{} + i) ? W::splat(di) : V{};
        acc[r][v] = ui * bj[v] + ldv<T, NV, Part>(F + i * D + j0, v, cw) + dii;
      }
    }
    // F_ik = 0 for k > i, ET_kj = 0 for k > j.
    const int kend = i0 + R < j0 + NV * C ? i0 + R : j0 + NV * C;
    for (int k = 0; k < kend; ++k) {
      V x[NV];
      for (int v = 0; v < NV; ++v) x[v] = ldv<T, NV, Part>(ET + k * D + j0, v, cw);
      for (int r = 0; r < R; ++r) {
        const V e = W::splat(k <= i0 + r ? F[(i0 + r) * D + k] : T(0));
        for (int v = 0; v < NV; ++v) acc[r][v] += e * x[v];
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < NV; ++v) stv<T, NV, Part>(S + (i0 + r) * D + j0, v, W::lower(acc[r][v], jv[v], i0 + r), cw);
    }
  });
  if (Full) {
    for (int i = 0; i < D; ++i) {
      for (int j = i + 1; j < D; ++j) S[i * D + j] = S[j * D + i];
    }
  }
}

template <bool Full, typename T>
inline void full_s(const T* E, const T* b, int D, T* S, T* ET) {
  fet_s<Full>(E, b, E, b, static_cast<const T*>(nullptr), D, S, ET);
}

template <typename T>
inline void xet_s(const T* X, const T* y, const T* E, const T* b, const T* Lq, int D, T* S, T* ET) {
  fet_s<false>(X, y, E, b, Lq, D, S, ET);
}

#undef GKL_TILE_LAMBDA
#undef GKL_TILE_ENTRY
#undef GKL_TILE_INLINE
#undef GKL_TILE_TARGET

}  // namespace tiled
}  // namespace gaussian_kl
