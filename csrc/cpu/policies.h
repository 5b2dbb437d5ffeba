// cpu/policies.h — the two ways the CPU runs math/full.h (docs/architecture.md):
//
//   Rows<A, W, NV, R>  one problem at a time; a row of a matrix is ld / W
//                      vectors of W columns (GCC vector extensions, lowered
//                      to the instruction set the translation unit is
//                      compiled for); the solves keep an R x NV tile of
//                      vectors in registers.
//   Lanes<A, W>        W problems at a time, one per vector lane: every
//                      element of the workspace is a vector (problem k in
//                      lane k), so the scalar recurrences run on W problems
//                      per instruction (small D, where one problem has too
//                      little work for a vector).
//
// Both are one worker: sync() does nothing, rows() and slices() visit
// everything. The CUDA policy (cuda/device.h) is the same interface over
// the threads of a block. No torch headers.
#pragma once

#include <cstring>
#include <type_traits>

#include "../math/full.h"
#include "transpose.h"

GKL_NS_BEGIN

#define GKL_CPU_INLINE inline __attribute__((always_inline))

// A GCC vector of W values of A (and its integer twin for lane masks).
template <typename A, int W>
struct VecOf {
  typedef A type __attribute__((vector_size(W * sizeof(A))));
};

// W values of A, one per problem: the element type of the Lanes policy, a
// GCC vector (each operator one vector instruction); v[k] is problem k's
// value.
template <typename A, int W>
struct LaneVec {
  using Vec = typename VecOf<A, W>::type;
  Vec v;
  LaneVec() = default;
  GKL_CPU_INLINE LaneVec(A x) : v(x - Vec{}) {}  // NOLINT: a splat, as for a scalar
  GKL_CPU_INLINE explicit LaneVec(const Vec& r) : v(r) {}
#define GKL_LANES_OP(op)                                                         \
  GKL_CPU_INLINE LaneVec& operator op##=(const LaneVec& o) {                     \
    v op## = o.v;                                                                \
    return *this;                                                                \
  }                                                                              \
  GKL_CPU_INLINE friend LaneVec operator op(const LaneVec& a, const LaneVec& b) { \
    return LaneVec(a.v op b.v);                                                  \
  }
  GKL_LANES_OP(+)
  GKL_LANES_OP(-)
  GKL_LANES_OP(*)
  GKL_LANES_OP(/)
#undef GKL_LANES_OP
  GKL_CPU_INLINE friend LaneVec operator-(const LaneVec& a) { return LaneVec(-a.v); }
};

template <typename A>
struct IntOf;
template <>
struct IntOf<float> {
  using type = int32_t;
};
template <>
struct IntOf<double> {
  using type = int64_t;
};

// One problem at a time; rows as vectors of W columns. DC > 0: the event
// size is DC (the leading dimension its round-up to W), a compile-time
// constant for every loop.
template <typename A, int W, int NV, int R, int DC = 0>
struct Rows {
  using T = A;
  using V = typename VecOf<A, W>::type;
  using I = typename VecOf<typename IntOf<A>::type, W>::type;
  static constexpr int kW = W, kNV = NV, kR = R;
  static constexpr int ld_for(int D) { return D < W ? W : (D + W - 1) / W * W; }
  GKL_CPU_INLINE int dim(int D) const { return DC ? DC : D; }
  GKL_CPU_INLINE int ldim(int ld) const { return DC ? ld_for(DC) : ld; }

  GKL_CPU_INLINE V load(const T* p) const {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  GKL_CPU_INLINE void store(T* p, const V& v) const { std::memcpy(p, &v, sizeof(V)); }
  GKL_CPU_INLINE V splat(T x) const { return x - V{}; }  // x - 0 == x for every x: a plain broadcast
  GKL_CPU_INLINE V zero() const { return V{}; }
  // v on the columns j0 + c in [lo, hi) or == extra, 0 elsewhere.
  GKL_CPU_INLINE V keep(const V& v, int j0, int lo, int hi, int extra = -1) const {
    using E = typename IntOf<A>::type;
    const I c = iota();
    const I m = ((c >= E(lo - j0)) & (c < E(hi - j0))) | (c == E(extra - j0));
    return m ? v : V{};
  }
  // Lane indices 0 .. W - 1 (a constant).
  static GKL_CPU_INLINE I iota() {
    I c;
    for (int k = 0; k < W; ++k) c[k] = k;
    return c;
  }
  // Slices of NV vectors, then single vectors, over [lo, hi) rounded up
  // to whole vectors (the padding columns are zero).
  template <typename F>
  GKL_CPU_INLINE void slices(int lo, int hi, const F& f) const {
    const int end = (hi + W - 1) / W * W;
    int j0 = lo;
    for (; j0 + NV * W <= end; j0 += NV * W) f(j0, std::integral_constant<int, NV>{});
    for (; j0 < end; j0 += W) f(j0, std::integral_constant<int, 1>{});
  }
  template <typename F>
  GKL_CPU_INLINE void rows(int lo, int hi, const F& f) const {
    for (int i = lo; i < hi; ++i) f(i);
  }
  GKL_CPU_INLINE void sync() const {}
  // Sum of the lanes in a fixed tree (results do not depend on the thread
  // count or the variant: every variant sums in this order).
  GKL_CPU_INLINE T total(const V& v) const { return sum_tree<W / 2>(v); }
  // t[k] += t[k + s] for s = W/2, W/4, ..., 1, in registers.
  template <int Sh>
  static GKL_CPU_INLINE T sum_tree(const V& v) {
    if constexpr (Sh == 0) {
      return v[0];
    } else {
      I idx;
      for (int k = 0; k < W; ++k) idx[k] = (k + Sh) % W;
      return sum_tree<Sh / 2>(v + __builtin_shuffle(v, idx));
    }
  }
  GKL_CPU_INLINE T dot(const T* a, const T* b, int n) const {
    V acc = V{};
    int j = 0;
    for (; j + W <= n; j += W) acc += load(a + j) * load(b + j);
    if (j < n) acc += keep(load(a + j) * load(b + j), j, 0, n);
    return total(acc);
  }
  template <typename F, typename... Args>
  GKL_CPU_INLINE T each(const F& f, Args... args) const {
    return f(args...);
  }
  // v[i] = M[i * ld + c]: each vector built in registers (not from W
  // scalar stores, which a vector load could not forward).
  GKL_CPU_INLINE void column(const T* M, int ld, int c, T* v, int D) const {
    for (int j0 = 0; j0 < D; j0 += W) {
      V t;
      GKL_UNROLL
      for (int k = 0; k < W; ++k) t[k] = j0 + k < D ? M[(j0 + k) * ld + c] : T(0);
      store(v + j0, t);
    }
  }
  // dst = src^T: W x W blocks transposed in registers (ld is a multiple
  // of W, and the padding columns are zero, so whole blocks are read).
  GKL_CPU_INLINE void transpose(const T* src, T* dst, int ld, int D) const {
    for (int bi = 0; bi < D; bi += W) {
      for (int bj = 0; bj < D; bj += W) {
        V t[W];
        GKL_UNROLL
        for (int q = 0; q < W; ++q) t[q] = bi + q < D ? load(src + (bi + q) * ld + bj) : V{};
        transpose_tile<V, I, W>(t);
        GKL_UNROLL
        for (int q = 0; q < W; ++q) {
          if (bj + q < D) store(dst + (bj + q) * ld + bi, t[q]);
        }
      }
    }
  }
  // m's upper triangle = its lower triangle, transposed.
  GKL_CPU_INLINE void mirror(T* m, int ld, int D) const {
    for (int bi = 0; bi < D; bi += W) {
      for (int bj = 0; bj <= bi; bj += W) {  // block (bi, bj) of the lower triangle -> (bj, bi)
        V t[W];
        GKL_UNROLL
        for (int q = 0; q < W; ++q) t[q] = bi + q < D ? load(m + (bi + q) * ld + bj) : V{};
        transpose_tile<V, I, W>(t);  // t[q]: column bj + q of the block = row bj + q of its mirror
        GKL_UNROLL
        for (int q = 0; q < W; ++q) {
          if (bj + q >= D) continue;
          T* row = m + (bj + q) * ld + bi;
          // Keep the lower triangle where the mirror block is the diagonal one.
          store(row, bi == bj ? keep(load(row), bi, 0, bj + q + 1) + keep(t[q], bi, bj + q + 1, bi + W) : t[q]);
        }
      }
    }
  }
};

// W problems at a time, one per lane (DC as for Rows; ld = D).
template <typename A, int W, int DC = 0>
struct Lanes {
  using T = LaneVec<A, W>;
  using V = T;
  static constexpr int kW = 1, kNV = 4, kR = 4;
  static constexpr int ld_for(int D) { return D; }
  GKL_CPU_INLINE int dim(int D) const { return DC ? DC : D; }
  GKL_CPU_INLINE int ldim(int ld) const { return DC ? DC : ld; }

  GKL_CPU_INLINE V load(const T* p) const { return *p; }
  GKL_CPU_INLINE void store(T* p, const V& v) const { *p = v; }
  GKL_CPU_INLINE V splat(const T& x) const { return x; }
  GKL_CPU_INLINE V zero() const { return V(A(0)); }
  GKL_CPU_INLINE V keep(const V& v, int j, int lo, int hi, int extra = -1) const {
    return (j >= lo && j < hi) || j == extra ? v : V(A(0));
  }
  template <typename F>
  GKL_CPU_INLINE void slices(int lo, int hi, const F& f) const {
    int j = lo;
    for (; j + kNV <= hi; j += kNV) f(j, std::integral_constant<int, kNV>{});
    for (; j < hi; ++j) f(j, std::integral_constant<int, 1>{});
  }
  template <typename F>
  GKL_CPU_INLINE void rows(int lo, int hi, const F& f) const {
    for (int i = lo; i < hi; ++i) f(i);
  }
  GKL_CPU_INLINE void sync() const {}
  GKL_CPU_INLINE T total(const V& v) const { return v; }
  GKL_CPU_INLINE T dot(const T* a, const T* b, int n) const {
    T acc(A(0));
    for (int j = 0; j < n; ++j) acc += a[j] * b[j];
    return acc;
  }
  // f per lane: f(args.v[k]...) into lane k.
  template <typename F, typename... Args>
  GKL_CPU_INLINE T each(const F& f, const Args&... args) const {
    T out;
    for (int k = 0; k < W; ++k) out.v[k] = f(args.v[k]...);
    return out;
  }
  GKL_CPU_INLINE void column(const T* M, int ld, int c, T* v, int D) const {
    for (int i = 0; i < D; ++i) v[i] = M[i * ld + c];
  }
  GKL_CPU_INLINE void transpose(const T* src, T* dst, int ld, int D) const {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < D; ++j) dst[j * ld + i] = src[i * ld + j];
    }
  }
  GKL_CPU_INLINE void mirror(T* m, int ld, int D) const {
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < i; ++j) m[j * ld + i] = m[i * ld + j];
    }
  }
};

GKL_NS_END
