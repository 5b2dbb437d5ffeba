// cpu/full_kernels.h — the CPU strategies of kl_full and kl_mixed: data
// movement around math/full.h, compiled once per instruction-set variant
// (cpu/isa_*.cpp). Two strategies (docs/architecture.md, "CPU"):
//
//   Lanes  D <= 8: W problems per vector (16 float / 8 double with
//          AVX-512), each workspace element one vector; the inputs of W
//          batch elements go into lanes, the gradients out of them.
//   Rows   every other D: one problem at a time, each matrix row as
//          vectors, register-tiled solves.
//
// Both load a problem's sides into a FullWork (lower triangles, zero
// elsewhere; a diagonal side's standard deviations on the diagonal; delta
// in b), run prepare + kl2 (forward) or prepare + backward, and write the
// results in each output's dtype and layout. The compute is instantiated
// per (policy, compile-time D); the input dtype touches loads and stores
// only. No torch headers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#include "../math/fast_math.h"
#include "../math/full.h"
#include "policies.h"
#include "transpose.h"

GKL_NS_BEGIN

// Elementary functions: fast polynomials for float, libm for double.
template <typename A>
using MathOf = std::conditional_t<std::is_same<A, float>::value, FastMath, StdMath>;

// The variant's vector: 64 bytes with AVX-512, 32 with AVX2, 16 otherwise
// (wider GCC vectors would be split into several instructions each).
#if defined(GKL_VARIANT_AVX512) && defined(GKL_X86_VARIANTS)
constexpr int kVectorBytes = 64;
#elif defined(GKL_VARIANT_AVX2) && defined(GKL_X86_VARIANTS)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename A>
constexpr int kLanes = kVectorBytes / sizeof(A);

// A zeroed, 64-byte aligned buffer of n elements of T.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t n) {
    const size_t bytes = kl_max<size_t>(64, (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    p_ = static_cast<T*>(p);
  }
  ~Buffer() { std::free(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() const { return p_; }

 private:
  T* p_;
};

// The matrices of row `row` (if any) towards the cache while the current
// row computes (a hint; the hardware prefetchers miss the jump between
// matrices).
template <typename A>
GKL_CPU_INLINE void prefetch_row(const FullRows& r, int64_t row) {
  if (row >= r.rows) return;
  const int64_t bytes = r.dim * r.dim * int64_t(sizeof(A));
  for (int k = 0; k < (r.mu_q ? 2 : 1); ++k) {
    if (r.m_rs[k] == 0) continue;
    const char* m = reinterpret_cast<const char*>(static_cast<const A*>(k ? r.m_q : r.m_p) + row * r.m_rs[k]);
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(m + off, 0, 2);
  }
}

// ---------------------------------------------------------------------------
// Rows: one problem at a time
// ---------------------------------------------------------------------------

// The register tile: with one vector per row (D <= W) all 16 rows of a
// solve stay in registers; wider rows take 8 rows x 2 vectors.
template <typename A, int DC = 0>
using RowsOf = std::conditional_t<DC != 0 && DC <= kLanes<A>, Rows<A, kLanes<A>, 1, 16, DC>,
                                  Rows<A, kLanes<A>, 2, 8, DC>>;

// Side k of row `row` into M (D x ld): the lower triangle, zero above it
// (entries above the diagonal are never read: junk there is ignored), or
// a diagonal side's standard deviations on the diagonal.
template <typename S, typename A>
void rows_load_side(const FullRows& r, int k, int64_t row, A* M, int ld) {
  using X = RowsOf<A>;
  constexpr int W = X::kW;
  const int D = static_cast<int>(r.dim);
  const S* m = static_cast<const S*>(k ? r.m_q : r.m_p) + row * r.m_rs[k];
  const int64_t s0 = r.m_s0[k], s1 = r.m_s1[k];
  const X x;
  for (int i = 0; i < D; ++i) {
    A* mi = M + static_cast<int64_t>(i) * ld;
    for (int j = 0; j < ld; j += W) x.store(mi + j, x.zero());
    if (r.kind[k] == FullParam::Diag) {
      mi[i] = diag_param_std<MathOf<A>>(kl_load(m[i * s0]), r.diag_param);
      continue;
    }
    const S* src = m + i * s0;
    if (std::is_same<S, A>::value && s1 == 1) {
      const A* sa = reinterpret_cast<const A*>(src);
      int j = 0;
      for (; j + W <= i + 1; j += W) x.store(mi + j, x.load(sa + j));
      for (; j <= i; ++j) mi[j] = sa[j];
    } else {
      for (int j = 0; j <= i; ++j) mi[j] = kl_load(src[j * s1]);
    }
  }
}

// Any pair, any layout: both sides into P / Q, delta into b (prepare()
// then factors, assembles and solves).
template <typename S, typename A>
void rows_load(const FullRows& r, int64_t row, const FullWork<A>& w) {
  rows_load_side<S>(r, 0, row, w.P, w.ld);
  if (r.mu_q) rows_load_side<S>(r, 1, row, w.Q, w.ld);
  const int D = static_cast<int>(r.dim);
  const S* mp = static_cast<const S*>(r.mu_p) + row * r.mu_rs[0];
  const S* mq = r.mu_q ? static_cast<const S*>(r.mu_q) + row * r.mu_rs[1] : nullptr;
  for (int i = 0; i < D; ++i) {
    const A p = kl_load(mp[i * r.mu_cs[0]]);
    w.b[i] = mq ? kl_load(mq[i * r.mu_cs[1]]) - p : -p;
  }
}

// The fast load of the common case: both sides scale_tril (or p alone),
// float or double, packed D x D matrices in one layout (row-major, or
// column-major as torch.linalg.cholesky returns them), D a compile-time
// multiple of the vector width (the specialised sizes). E' comes straight
// from the inputs in W x W blocks of Lp - Lq read in that layout and
// transposed into rows once (column-major); q's factor goes to QT in the
// solves' layout (a copy for column-major q); the diagonals come out of
// the diagonal blocks. fused_layout(): 0 (not this case), 1 (row-major),
// 2 (column-major).
template <typename S, int DC>
int fused_layout(const FullRows& r) {
  using A = typename AccType<S>::type;
  if (DC == 0 || DC % kLanes<A> != 0 || !std::is_same<S, A>::value) return 0;
  const bool has_q = r.mu_q != nullptr;
  if (r.kind[0] != FullParam::ScaleTril || (has_q && r.kind[1] != FullParam::ScaleTril)) return 0;
  if (r.mu_cs[0] != 1 || (has_q && r.mu_cs[1] != 1)) return 0;
  const int64_t D = DC;
  auto layout = [&](int k) {
    return r.m_s0[k] == D && r.m_s1[k] == 1 ? 1 : (r.m_s0[k] == 1 && r.m_s1[k] == D ? 2 : 0);
  };
  const int l = layout(0);
  return has_q && layout(1) != l ? 0 : l;
}

template <typename A, int D, bool Col, bool HasQ>
void rows_load_fused(const FullRows& r, int64_t row, const FullWork<A>& w) {
  using X = RowsOf<A, D>;
  using V = typename X::V;
  using I = typename X::I;
  constexpr int W = X::kW;
  constexpr int ld = D;
  static_assert(D % W == 0, "whole blocks");
  const X x;
  const A* lp = static_cast<const A*>(r.m_p) + row * r.m_rs[0];
  const A* lq = HasQ ? static_cast<const A*>(r.m_q) + row * r.m_rs[1] : nullptr;
  const A* mp = static_cast<const A*>(r.mu_p) + row * r.mu_rs[0];
  const A* mq = HasQ ? static_cast<const A*>(r.mu_q) + row * r.mu_rs[1] : nullptr;
  GKL_UNROLL
  for (int j = 0; j < D; j += W) x.store(w.b + j, (HasQ ? x.load(mq + j) : V{}) - x.load(mp + j));
  // The diagonal of a diagonal block: lane c of vector c, either orientation.
  auto diagonal = [&](const V (&t)[W]) GKL_LAMBDA {
    V d = V{};
    GKL_UNROLL
    for (int c = 0; c < W; ++c) d += x.keep(t[c], 0, c, c + 1);
    return d;
  };
  constexpr int last = D - W;  // the block column holding column D - 1 (delta)
  GKL_UNROLL
  for (int bi = 0; bi < D; bi += W) {
    GKL_UNROLL
    for (int bj = 0; bj < D; bj += W) {
      if (bj > bi) {  // above the diagonal: only delta's column
        GKL_UNROLL
        for (int c = 0; c < W; ++c) {
          const int i = bi + c;
          x.store(w.E + i * ld + bj, bj == last ? x.keep(x.splat(w.b[i]), bj, D - 1, D) : V{});
        }
        continue;
      }
      // Block (bi, bj) as W vectors: columns bj + c (Col) or rows bi + c.
      V t[W], u[W];
      const int off = Col ? bj * D + bi : bi * D + bj;
      GKL_UNROLL
      for (int c = 0; c < W; ++c) {
        t[c] = x.load(lp + off + c * D);
        if (HasQ) u[c] = x.load(lq + off + c * D);
      }
      if (HasQ) {
        if (Col) {
          GKL_UNROLL
          for (int c = 0; c < W; ++c) x.store(w.QT + off + c * D, u[c]);  // Lq^T's rows: Lq's columns
        } else {
          V ut[W];
          GKL_UNROLL
          for (int c = 0; c < W; ++c) ut[c] = u[c];
          transpose_tile<V, I, W>(ut);
          GKL_UNROLL
          for (int c = 0; c < W; ++c) x.store(w.QT + (bj + c) * D + bi, ut[c]);
        }
      }
      if (bi == bj) {
        const V dq = HasQ ? diagonal(u) : x.splat(A(1));
        x.store(w.dp + bi, diagonal(t));
        x.store(w.dq + bi, dq);
        x.store(w.rq + bi, x.splat(A(1)) / dq);
      }
      if (HasQ) {
        GKL_UNROLL
        for (int c = 0; c < W; ++c) t[c] -= u[c];
      }
      if (Col) transpose_tile<V, I, W>(t);  // now rows bi + c
      GKL_UNROLL
      for (int c = 0; c < W; ++c) {
        const int i = bi + c;
        V e = t[c];
        if (bi == bj) {
          e = x.keep(e, bj, 0, i + 1);
          if (!HasQ) e -= x.keep(x.splat(A(1)), bj, i, i + 1);
        }
        if (bj == last) e = x.keep(e, bj, 0, D - 1) + x.keep(x.splat(w.b[i]), bj, D - 1, D);
        x.store(w.E + i * ld + bj, e);
      }
    }
  }
}

// The gradients of one problem into the outputs (row-major or
// column-major matrices, vectors), in the output dtype S.
template <typename T>
struct RowsSink {
  const FullGradOut* o;
  int64_t row;
  int D, ld;
  void (*vec_)(const RowsSink&, int, const T*, T);
  void (*mat_)(const RowsSink&, int, const T*, T, bool);
  void (*rows_t_)(const RowsSink&, int, const T*, T);
  bool col_major(int k) const { return o->col_major[k]; }
  void vec(int k, const T* v, T c) const { vec_(*this, k, v, c); }
  void tril(int k, const T* M, T c) const { mat_(*this, k, M, c, false); }
  void sym(int k, const T* M, T c) const { mat_(*this, k, M, c, true); }
  void tril_t(int k, const T* MT, T c) const { rows_t_(*this, k, MT, c); }

  template <typename S>
  static void vec_impl(const RowsSink& s, int k, const T* v, T c) {
    S* dst = static_cast<S*>(s.o->grad[k]) + s.row * s.D;
    for (int i = 0; i < s.D; ++i) dst[i] = kl_store<S>(c * v[i]);
  }
  // A column-major output from the rows of its transpose (zero below
  // their diagonal): column i of the output is row i of MT.
  template <typename S>
  static void rows_t_impl(const RowsSink& s, int k, const T* MT, T c) {
    const int D = s.D, ld = s.ld;
    S* dst = static_cast<S*>(s.o->grad[k]) + s.row * int64_t(D) * D;
    using X = RowsOf<T>;
    constexpr int W = X::kW;
    const X x;
    for (int i = 0; i < D; ++i) {
      const T* m = MT + int64_t(i) * ld;
      S* d = dst + int64_t(i) * D;
      int j = 0;
      if constexpr (std::is_same<S, T>::value) {
        for (; j + W <= D; j += W) x.store(d + j, x.load(m + j) * x.splat(c));
      }
      for (; j < D; ++j) d[j] = kl_store<S>(c * m[j]);
    }
  }
  // c * tril(M) (0 above the diagonal), or c * M's lower triangle mirrored.
  template <typename S>
  static void mat_impl(const RowsSink& s, int k, const T* M, T c, bool sym) {
    const int D = s.D, ld = s.ld;
    S* dst = static_cast<S*>(s.o->grad[k]) + s.row * int64_t(D) * D;
    const bool col = s.o->col_major[k];
    if constexpr (std::is_same<S, T>::value) {
      if (D % kLanes<T> == 0) return mat_blocks(dst, M, ld, D, c, col, sym);
    }
    // In blocks of 16 x 16 (either layout, both sides touch 16 cache lines).
    constexpr int kB = 16;
    for (int i0 = 0; i0 < D; i0 += kB) {
      for (int j0 = 0; j0 < D; j0 += kB) {
        const int i1 = kl_min(D, i0 + kB), j1 = kl_min(D, j0 + kB);
        for (int a = col ? j0 : i0; a < (col ? j1 : i1); ++a) {
          for (int bb = col ? i0 : j0; bb < (col ? i1 : j1); ++bb) {
            const int i = col ? bb : a, j = col ? a : bb;
            const T m = j <= i ? M[i * ld + j] : (sym ? M[j * ld + i] : T(0));
            dst[int64_t(a) * D + bb] = kl_store<S>(c * m);
          }
        }
      }
    }
  }
  // The same in W x W blocks of vectors (D a multiple of W): rows of M's
  // lower triangle, transposed in registers for a column-major output or
  // for the mirrored half of a symmetric one.
  static void mat_blocks(T* dst, const T* M, int ld, int D, T c, bool col, bool sym) {
    using X = RowsOf<T>;
    using V = typename X::V;
    using I = typename X::I;
    constexpr int W = X::kW;
    const X x;
    const V cv = x.splat(c);
    auto put = [&](int bi, int bj, V(&t)[W], bool rows) {  // t: rows (or columns) of block (bi, bj)
      if (rows == col) transpose_tile<V, I, W>(t);
      for (int q = 0; q < W; ++q) x.store(dst + (col ? int64_t(bj + q) * D + bi : int64_t(bi + q) * D + bj), t[q]);
    };
    for (int bi = 0; bi < D; bi += W) {
      for (int bj = 0; bj < D; bj += W) {
        V t[W];
        if (bj > bi && !sym) {
          for (int q = 0; q < W; ++q) t[q] = V{};
          put(bi, bj, t, true);
          continue;
        }
        const int si = bj > bi ? bj : bi, sj = bj > bi ? bi : bj;  // the lower block read
        for (int q = 0; q < W; ++q) t[q] = x.load(M + int64_t(si + q) * ld + sj) * cv;
        if (bi == bj) {
          V u[W];
          for (int q = 0; q < W; ++q) u[q] = t[q];
          if (sym) transpose_tile<V, I, W>(u);  // u[q]: the mirrored entries of row bi + q
          for (int q = 0; q < W; ++q) {
            t[q] = x.keep(t[q], bj, 0, bi + q + 1) + (sym ? x.keep(u[q], bj, bi + q + 1, bj + W) : V{});
          }
          put(bi, bj, t, true);
        } else {
          put(bi, bj, t, bj < bi);  // a mirrored block is block (bj, bi) read by columns
        }
      }
    }
  }
  template <typename S>
  static RowsSink make(const FullGradOut& o, int D, int ld) {
    return RowsSink{&o, 0, D, ld, &vec_impl<S>, &mat_impl<S>, &rows_t_impl<S>};
  }
};

// The compute of one problem, per (policy, compile-time D, Fused: the
// sides loaded by rows_load_fused (scale_tril, q present or not) or 0:
// any pair through prepare()): everything between the loads and the
// stores.
template <typename A, int DC, int Fused>
__attribute__((noinline)) A rows_engine_forward(const FullWork<A>& w, Sides s) {
  const RowsOf<A, DC> x;
  if (Fused) {
    const Sides t{FullParam::ScaleTril, FullParam::ScaleTril, Fused == 2};
    solve_e(x, w, t);
    return kl2<MathOf<A>>(x, w, A(0));
  }
  const A bad = prepare<MathOf<A>>(x, w, s);
  return kl2<MathOf<A>>(x, w, bad);
}

template <typename A, int DC, int Fused>
__attribute__((noinline)) void rows_engine_backward(const FullWork<A>& w, Sides s, DiagParam dp, A g,
                                                     const bool (&need)[4], const RowsSink<A>& out) {
  const RowsOf<A, DC> x;
  if (Fused) {
    const Sides t{FullParam::ScaleTril, FullParam::ScaleTril, Fused == 2};
    solve_e(x, w, t);
    backward<MathOf<A>>(x, w, t, dp, g, need, out);
    return;
  }
  prepare<MathOf<A>>(x, w, s);
  backward<MathOf<A>>(x, w, s, dp, g, need, out);
}

// f(Layout, HasQ) for the fused case of the problem, or f(0, false).
template <typename S, int DC, typename F>
void with_fused(const FullRows& r, const F& f) {
  using L1 = std::integral_constant<int, 1>;
  using L2 = std::integral_constant<int, 2>;
  const bool hq = r.mu_q != nullptr;
  switch (fused_layout<S, DC>(r)) {
    case 1: return hq ? f(L1{}, std::true_type{}) : f(L1{}, std::false_type{});
    case 2: return hq ? f(L2{}, std::true_type{}) : f(L2{}, std::false_type{});
    default: return f(std::integral_constant<int, 0>{}, std::false_type{});
  }
}

// Row `row` into w: the fused loads of layout L (1 row-, 2 column-major;
// HQ: with q) with the next row prefetched, or (L = 0) the generic ones.
template <typename S, int DC, int L, bool HQ, typename A>
GKL_CPU_INLINE void rows_load_any(const FullRows& r, int64_t row, const FullWork<A>& w) {
  if constexpr (L != 0) {
    rows_load_fused<A, DC, L == 2, HQ>(r, row, w);
    prefetch_row<A>(r, row + 1);
  } else {
    rows_load<S>(r, row, w);
  }
}

template <typename S, int DC>
void rows_forward(const FullRows& r, S* out, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  const int D = static_cast<int>(r.dim), ld = RowsOf<A>::ld_for(D);
  const Buffer<A> buf(FullWork<A>::size(D, ld, false));
  const FullWork<A> w(buf.data(), D, ld, false);
  const Sides s = sides_of(r);
  // A compile-time D serves the fused case only; other pairs and layouts
  // at that D take the run-time-D engine (compile time: bench/README.md).
  with_fused<S, DC>(r, [&](auto L, auto HQ) {
    constexpr int kL = decltype(L)::value;
    constexpr int kF = kL == 0 ? 0 : (decltype(HQ)::value ? 2 : 1);
    for (int64_t row = begin; row < end; ++row) {
      rows_load_any<S, DC, kL, decltype(HQ)::value>(r, row, w);
      out[row] = kl_store<S>(finish_kl<S>(rows_engine_forward<A, kF ? DC : 0, kF>(w, s), r, row));
    }
  });
}

template <typename S, int DC>
void rows_backward(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  const int D = static_cast<int>(r.dim), ld = RowsOf<A>::ld_for(D);
  const Buffer<A> buf(FullWork<A>::size(D, ld, true));
  const FullWork<A> w(buf.data(), D, ld, true);
  const Sides s = sides_of(r);
  const bool need[4] = {o.grad[0] != nullptr, o.grad[1] != nullptr, o.grad[2] != nullptr, o.grad[3] != nullptr};
  RowsSink<A> sink = RowsSink<A>::template make<S>(o, D, ld);
  with_fused<S, DC>(r, [&](auto L, auto HQ) {
    constexpr int kL = decltype(L)::value;
    constexpr int kF = kL == 0 ? 0 : (decltype(HQ)::value ? 2 : 1);
    for (int64_t row = begin; row < end; ++row) {
      rows_load_any<S, DC, kL, decltype(HQ)::value>(r, row, w);
      sink.row = row;
      rows_engine_backward<A, kF ? DC : 0, kF>(w, s, r.diag_param, kl_load(g[row * gs]), need, sink);
    }
  });
}

// ---------------------------------------------------------------------------
// Lanes: W problems at a time
// ---------------------------------------------------------------------------

template <typename A>
using Lane = LaneVec<A, kLanes<A>>;
template <typename A>
using LanesOf = Lanes<A, kLanes<A>>;

// Element (base + off[l]) of W inputs into lane l of a vector: gathered
// where the variant has gathers (32-bit offsets), else built in registers
// (W narrow stores followed by a vector load would stall on forwarding).
template <typename S, typename A>
GKL_CPU_INLINE Lane<A> lanes_gather(const S* base, const int32_t* off32, const int64_t* off, bool small) {
  constexpr int W = kLanes<A>;
#if defined(GKL_VARIANT_AVX512) && defined(GKL_X86_VARIANTS)
  if constexpr (std::is_same<S, A>::value) {
    if (small) {
      Lane<A> e;
      if constexpr (std::is_same<A, float>::value) {
        const __m512 g = _mm512_i32gather_ps(_mm512_loadu_si512(off32), base, 4);
        std::memcpy(&e.v, &g, sizeof(g));
      } else {
        const __m512d g = _mm512_i32gather_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(off32)), base, 8);
        std::memcpy(&e.v, &g, sizeof(g));
      }
      return e;
    }
  }
#elif defined(GKL_VARIANT_AVX2) && defined(GKL_X86_VARIANTS)
  if constexpr (std::is_same<S, A>::value) {
    if (small) {
      Lane<A> e;
      if constexpr (std::is_same<A, float>::value) {
        const __m256 g = _mm256_i32gather_ps(base, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off32)), 4);
        std::memcpy(&e.v, &g, sizeof(g));
      } else {
        const __m256d g = _mm256_i32gather_pd(base, _mm_loadu_si128(reinterpret_cast<const __m128i*>(off32)), 8);
        std::memcpy(&e.v, &g, sizeof(g));
      }
      return e;
    }
  }
#endif
  (void)off32;
  (void)small;
  typename VecOf<A, W>::type t;
  for (int l = 0; l < W; ++l) t[l] = kl_load(base[off[l]]);
  return Lane<A>(t);
}

// f(e, lane vector) for each element e < K of the rows row0 + l (l < n;
// lanes l >= n repeat row0) of a [rows, K] input with unit column stride:
// element e of row row0 + l in lane l. AVX-512: for K = 2, 4, 8 and a
// contiguous block of rows, its K vectors deinterleaved in log2(K) rounds
// of even/odd splits; otherwise W rows read as vectors (masked to the
// row) and transposed in registers, W columns at a time. Elsewhere one
// gather or W loads per element.
template <typename A, typename F>
GKL_CPU_INLINE void lanes_rows(const A* m, int64_t rs, int K, int n, const F& f) {
  constexpr int W = kLanes<A>;
#if defined(GKL_VARIANT_AVX512) && defined(GKL_X86_VARIANTS)
  using V = typename VecOf<A, W>::type;
  using I = typename VecOf<typename IntOf<A>::type, W>::type;
  auto out = [&](int e, const V& v) { f(e, Lane<A>(v)); };
  auto unzip = [&](auto KC) {
    constexpr int KK = decltype(KC)::value;
    V t[KK];
    for (int c = 0; c < KK; ++c) std::memcpy(&t[c], m + c * W, sizeof(V));  // W * KK contiguous values
    I ev, od;
    for (int c = 0; c < W; ++c) {
      ev[c] = 2 * c;
      od[c] = 2 * c + 1;
    }
    for (int h = KK; h > 1; h >>= 1) {
      V u[KK];
      for (int a = 0; a < KK / 2; ++a) {
        u[a] = __builtin_shuffle(t[2 * a], t[2 * a + 1], ev);
        u[a + KK / 2] = __builtin_shuffle(t[2 * a], t[2 * a + 1], od);
      }
      for (int c = 0; c < KK; ++c) t[c] = u[c];
    }
    for (int c = 0; c < KK; ++c) out(c, t[c]);
  };
  if (n == W && rs == K) {  // a contiguous block of W rows
    if (K == 1) {
      V t;
      std::memcpy(&t, m, sizeof(V));
      return out(0, t);
    }
    if (K == 2) return unzip(std::integral_constant<int, 2>{});
    if (K == 4) return unzip(std::integral_constant<int, 4>{});
    if (K == 8) return unzip(std::integral_constant<int, 8>{});
  }
  for (int e0 = 0; e0 < K; e0 += W) {
    const int cw = K - e0 < W ? K - e0 : W;
    V t[W];
    for (int l = 0; l < W; ++l) {
      const A* src = m + (l < n ? l : 0) * rs + e0;
      if constexpr (std::is_same<A, float>::value) {
        const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << cw) - 1), src);
        std::memcpy(&t[l], &v, sizeof(V));
      } else {
        const __m512d v = _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << cw) - 1), src);
        std::memcpy(&t[l], &v, sizeof(V));
      }
    }
    transpose_tile<V, I, W>(t);
    for (int c = 0; c < cw; ++c) out(e0 + c, t[c]);
  }
#else
  alignas(64) int32_t off32[W];
  int64_t off[W];
  const bool small = (W - 1) * (rs < 0 ? -rs : rs) + K < (int64_t(1) << 30);
  for (int e = 0; e < K; ++e) {
    for (int l = 0; l < W; ++l) {
      off[l] = (l < n ? l : 0) * rs + e;
      off32[l] = static_cast<int32_t>(off[l]);
    }
    f(e, lanes_gather<A, A>(m, off32, off, small));
  }
#endif
}

// The inverse of lanes_rows: row row0 + l (l < n) of a [rows, K] output
// with unit column stride gets lane l of get(e) at column e. AVX-512 with
// a contiguous block of W rows: K = 2, 4, 8 interleaved by even/odd merges,
// else W x W register transposes, W columns at a time; otherwise lane by
// lane.
template <typename S, typename A, typename G>
GKL_CPU_INLINE void lanes_store_rows(S* d, int64_t rs, int K, int n, const G& get) {
  constexpr int W = kLanes<A>;
#if defined(GKL_VARIANT_AVX512) && defined(GKL_X86_VARIANTS)
  if constexpr (std::is_same<S, A>::value) {
    using V = typename VecOf<A, W>::type;
    using I = typename VecOf<typename IntOf<A>::type, W>::type;
    auto vec = [&](int e) { return get(e).v; };
    auto zip = [&](auto KC) {
      constexpr int KK = decltype(KC)::value;
      V t[KK];
      for (int c = 0; c < KK; ++c) t[c] = vec(c);
      I lo, hi;  // interleave halves: (a0 b0 a1 b1 ...) of the first and second W / 2 lanes
      for (int c = 0; c < W; ++c) {
        lo[c] = (c % 2 ? W : 0) + c / 2;
        hi[c] = (c % 2 ? W : 0) + W / 2 + c / 2;
      }
      for (int h = 2; h <= KK; h <<= 1) {  // the inverse rounds of unzip()
        V u[KK];
        for (int a = 0; a < KK / 2; ++a) {
          u[2 * a] = __builtin_shuffle(t[a], t[a + KK / 2], lo);
          u[2 * a + 1] = __builtin_shuffle(t[a], t[a + KK / 2], hi);
        }
        for (int c = 0; c < KK; ++c) t[c] = u[c];
      }
      for (int c = 0; c < KK; ++c) std::memcpy(d + c * W, &t[c], sizeof(V));
    };
    if (n == W && rs == K) {
      if (K == 1) {
        const V v = vec(0);
        std::memcpy(d, &v, sizeof(V));
        return;
      }
      if (K == 2) return zip(std::integral_constant<int, 2>{});
      if (K == 4) return zip(std::integral_constant<int, 4>{});
      if (K == 8) return zip(std::integral_constant<int, 8>{});
    }
    for (int e0 = 0; e0 < K; e0 += W) {
      const int cw = K - e0 < W ? K - e0 : W;
      V t[W];
      for (int c = 0; c < W; ++c) t[c] = c < cw ? vec(e0 + c) : V{};
      transpose_tile<V, I, W>(t);
      for (int l = 0; l < n; ++l) {
        if constexpr (std::is_same<A, float>::value) {
          __m512 v;
          std::memcpy(&v, &t[l], sizeof(V));
          _mm512_mask_storeu_ps(d + l * rs + e0, static_cast<__mmask16>((1u << cw) - 1), v);
        } else {
          __m512d v;
          std::memcpy(&v, &t[l], sizeof(V));
          _mm512_mask_storeu_pd(d + l * rs + e0, static_cast<__mmask8>((1u << cw) - 1), v);
        }
      }
    }
    return;
  }
#endif
  for (int e = 0; e < K; ++e) {
    const Lane<A> x = get(e);
    for (int l = 0; l < n; ++l) d[l * rs + e] = kl_store<S>(x.v[l]);
  }
}

// Side k of rows row0 + l (l < n; lanes l >= n repeat row0) into M (and,
// for a scale_tril q, its transpose into MT): the lower triangle (the
// upper stays zero from the buffer's allocation), or a diagonal side's
// standard deviations on the diagonal. Packed row- or column-major float
// or double matrices go through lanes_rows (K = D^2), the rest element by
// element.
template <typename S, typename A, int DC>
void lanes_load_side(const FullRows& r, int k, int64_t row0, int n, Lane<A>* M, Lane<A>* MT, int ld_) {
  constexpr int W = kLanes<A>;
  const int D = DC ? DC : static_cast<int>(r.dim), ld = DC ? DC : ld_;
  const S* m = static_cast<const S*>(k ? r.m_q : r.m_p) + row0 * r.m_rs[k];
  const int64_t rs = r.m_rs[k], s0 = r.m_s0[k], s1 = r.m_s1[k];
  const bool diag = r.kind[k] == FullParam::Diag;
  auto put = [&](int i, int j, const Lane<A>& x) {
    if (diag) {
      M[i * ld + i] = LanesOf<A>().each([&](auto v) { return diag_param_std<MathOf<A>>(v, r.diag_param); }, x);
      return;
    }
    M[i * ld + j] = x;
    if (MT) MT[j * ld + i] = x;
  };
  const bool packed = !diag && ((s0 == D && s1 == 1) || (s0 == 1 && s1 == D));
  if (std::is_same<S, A>::value && (packed || (diag && s0 == 1))) {
    lanes_rows<A>(reinterpret_cast<const A*>(m), rs, diag ? D : D * D, n, [&](int e, const Lane<A>& x) {
      const int i = diag ? e : (s1 == 1 ? e / D : e % D), j = diag ? e : (s1 == 1 ? e % D : e / D);
      if (j <= i) put(i, j, x);
    });
    return;
  }
  int64_t off[W];
  alignas(64) int32_t off32[W];
  for (int l = 0; l < W; ++l) off[l] = (l < n ? l : 0) * rs;
  // The gathers' 32-bit offsets must hold every element read.
  const int64_t span = (W - 1) * (rs < 0 ? -rs : rs) + (D - 1) * ((s0 < 0 ? -s0 : s0) + (s1 < 0 ? -s1 : s1));
  const bool small = span < (int64_t(1) << 30);
  for (int i = 0; i < D; ++i) {
    for (int j = diag ? i : 0; j <= i; ++j) {
      const int64_t base = diag ? i * s0 : i * s0 + j * s1;
      int64_t o2[W];
      for (int l = 0; l < W; ++l) {
        o2[l] = off[l] + base;
        off32[l] = static_cast<int32_t>(o2[l]);
      }
      put(i, j, lanes_gather<S, A>(m, off32, o2, small));
    }
  }
}

template <typename S, typename A, int DC>
void lanes_load(const FullRows& r, int64_t row0, int n, FullWork<Lane<A>>& w) {
  constexpr int W = kLanes<A>;
  const bool qt = r.mu_q && r.kind[1] == FullParam::ScaleTril;
  lanes_load_side<S, A, DC>(r, 0, row0, n, w.P, nullptr, w.ld);
  if (r.mu_q) lanes_load_side<S, A, DC>(r, 1, row0, n, w.Q, qt ? w.QT : nullptr, w.ld);
  w.qt_loaded = qt;
  const int D = DC ? DC : static_cast<int>(r.dim);
  const S* mp = static_cast<const S*>(r.mu_p) + row0 * r.mu_rs[0];
  const S* mq = r.mu_q ? static_cast<const S*>(r.mu_q) + row0 * r.mu_rs[1] : nullptr;
  if (std::is_same<S, A>::value && r.mu_cs[0] == 1 && (!mq || r.mu_cs[1] == 1)) {
    lanes_rows<A>(reinterpret_cast<const A*>(mp), r.mu_rs[0], D, n, [&](int i, const Lane<A>& x) { w.b[i] = -x; });
    if (mq) {
      lanes_rows<A>(reinterpret_cast<const A*>(mq), r.mu_rs[1], D, n, [&](int i, const Lane<A>& x) { w.b[i] += x; });
    }
    return;
  }
  int64_t op[W], oq[W];
  alignas(64) int32_t p32[W], q32[W];
  const int64_t span = (W - 1) * kl_max(kl_abs(r.mu_rs[0]), kl_abs(r.mu_rs[1])) +
                       (D - 1) * kl_max(kl_abs(r.mu_cs[0]), kl_abs(r.mu_cs[1]));
  const bool small = span < (int64_t(1) << 30);
  for (int i = 0; i < D; ++i) {
    for (int l = 0; l < W; ++l) {
      const int64_t lr = l < n ? l : 0;
      op[l] = lr * r.mu_rs[0] + i * r.mu_cs[0];
      oq[l] = lr * r.mu_rs[1] + i * r.mu_cs[1];
      p32[l] = static_cast<int32_t>(op[l]);
      q32[l] = static_cast<int32_t>(oq[l]);
    }
    const Lane<A> p = lanes_gather<S, A>(mp, p32, op, small);
    w.b[i] = mq ? lanes_gather<S, A>(mq, q32, oq, small) - p : -p;
  }
}

template <typename A>
struct LanesSink {
  using T = Lane<A>;
  const FullGradOut* o;
  int64_t row0;
  int n, D, ld;
  void (*vec_)(const LanesSink&, int, const T*, const T&);
  void (*mat_)(const LanesSink&, int, const T*, const T&, bool);
  bool col_major(int) const { return false; }  // lanes are stored element by element in either layout
  void vec(int k, const T* v, const T& c) const { vec_(*this, k, v, c); }
  void tril(int k, const T* M, const T& c) const { mat_(*this, k, M, c, false); }
  void sym(int k, const T* M, const T& c) const { mat_(*this, k, M, c, true); }
  void tril_t(int, const T*, const T&) const {}  // never asked: col_major() is false

  template <typename S>
  static void vec_impl(const LanesSink& s, int k, const T* v, const T& c) {
    S* dst = static_cast<S*>(s.o->grad[k]) + s.row0 * s.D;
    lanes_store_rows<S, A>(dst, s.D, s.D, s.n, [&](int e) { return c * v[e]; });
  }
  template <typename S>
  static void mat_impl(const LanesSink& s, int k, const T* M, const T& c, bool sym) {
    const int D = s.D, ld = s.ld;
    const bool col = s.o->col_major[k];
    S* dst = static_cast<S*>(s.o->grad[k]) + s.row0 * int64_t(D) * D;
    const T zero(A(0));
    lanes_store_rows<S, A>(dst, int64_t(D) * D, D * D, s.n, [&](int e) {
      const int i = col ? e % D : e / D, j = col ? e / D : e % D;
      return j <= i ? c * M[i * ld + j] : (sym ? c * M[j * ld + i] : zero);
    });
  }
  template <typename S>
  static LanesSink make(const FullGradOut& o, int D, int ld) {
    return LanesSink{&o, 0, 0, D, ld, &vec_impl<S>, &mat_impl<S>};
  }
};

template <typename A, int DC>
__attribute__((noinline)) Lane<A> lanes_engine_forward(const FullWork<Lane<A>>& w, Sides s) {
  const Lanes<A, kLanes<A>, DC> x;
  const auto bad = prepare<MathOf<A>>(x, w, s);
  return kl2<MathOf<A>>(x, w, bad);
}

template <typename A, int DC>
__attribute__((noinline)) void lanes_engine_backward(const FullWork<Lane<A>>& w, Sides s, DiagParam dp,
                                                      const Lane<A>& g, const bool (&need)[4],
                                                      const LanesSink<A>& out) {
  const Lanes<A, kLanes<A>, DC> x;
  prepare<MathOf<A>>(x, w, s);
  backward<MathOf<A>>(x, w, s, dp, g, need, out);
}

template <typename S, int DC>
void lanes_forward(const FullRows& r, S* out, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  constexpr int W = kLanes<A>;
  const int D = static_cast<int>(r.dim);
  const Buffer<Lane<A>> buf(FullWork<Lane<A>>::size(D, D, false));
  FullWork<Lane<A>> w(buf.data(), D, D, false);
  const Sides s = sides_of(r);
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(kl_min<int64_t>(W, end - row0));
    lanes_load<S, A, DC>(r, row0, n, w);
    const Lane<A> kl2v = lanes_engine_forward<A, DC>(w, s);
    for (int l = 0; l < n; ++l) out[row0 + l] = kl_store<S>(finish_kl<S>(kl2v.v[l], r, row0 + l));
  }
}

template <typename S, int DC>
void lanes_backward(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o, int64_t begin, int64_t end) {
  using A = typename AccType<S>::type;
  constexpr int W = kLanes<A>;
  const int D = static_cast<int>(r.dim);
  const Buffer<Lane<A>> buf(FullWork<Lane<A>>::size(D, D, true));
  FullWork<Lane<A>> w(buf.data(), D, D, true);
  const Sides s = sides_of(r);
  const bool need[4] = {o.grad[0] != nullptr, o.grad[1] != nullptr, o.grad[2] != nullptr, o.grad[3] != nullptr};
  LanesSink<A> sink = LanesSink<A>::template make<S>(o, D, D);
  for (int64_t row0 = begin; row0 < end; row0 += W) {
    const int n = static_cast<int>(kl_min<int64_t>(W, end - row0));
    lanes_load<S, A, DC>(r, row0, n, w);
    Lane<A> gv;
    for (int l = 0; l < W; ++l) gv.v[l] = kl_load(g[(row0 + (l < n ? l : 0)) * gs]);
    sink.row0 = row0;
    sink.n = n;
    lanes_engine_backward<A, DC>(w, s, r.diag_param, gv, need, sink);
  }
}

// ---------------------------------------------------------------------------
// Which strategy runs which problem
// ---------------------------------------------------------------------------

// Lanes up to this D (measured: bench/README.md, "CPU strategies").
constexpr int kLanesMaxD = 8;

// The sizes compiled for a fixed D (float and double inputs), AVX-512 only
// (the variant whose speed the tables in bench/ measure; the others run
// the same code with D read at run time).
#if defined(GKL_VARIANT_AVX512) && defined(GKL_X86_VARIANTS)
#define GKL_LANES_DIMS 2, 3, 4, 8
#define GKL_ROWS_DIMS 16, 32, 64
#else
#define GKL_LANES_DIMS 0
#define GKL_ROWS_DIMS 0
#endif

// f(std::integral_constant<int, DC>) with DC = D for the sizes listed, 0
// (D read at run time) otherwise.
template <typename S, int... Ds, typename F>
void with_dim(int64_t D, const F& f) {
  if constexpr ((std::is_same<S, float>::value || std::is_same<S, double>::value) && ((Ds > 0) && ...)) {
    bool done = false;
    ((D == Ds && !done ? (f(std::integral_constant<int, Ds>{}), done = true) : false), ...);
    if (done) return;
  }
  f(std::integral_constant<int, 0>{});
}

template <typename S>
void full_forward_typed(const FullRows& r, S* out, int64_t begin, int64_t end) {
  if (r.dim <= kLanesMaxD) {
    with_dim<S, GKL_LANES_DIMS>(r.dim, [&](auto DC) { lanes_forward<S, decltype(DC)::value>(r, out, begin, end); });
  } else {
    with_dim<S, GKL_ROWS_DIMS>(r.dim, [&](auto DC) { rows_forward<S, decltype(DC)::value>(r, out, begin, end); });
  }
}

template <typename S>
void full_backward_typed(const FullRows& r, const S* g, int64_t gs, const FullGradOut& o, int64_t begin,
                         int64_t end) {
  if (r.dim <= kLanesMaxD) {
    with_dim<S, GKL_LANES_DIMS>(r.dim,
                                [&](auto DC) { lanes_backward<S, decltype(DC)::value>(r, g, gs, o, begin, end); });
  } else {
    with_dim<S, GKL_ROWS_DIMS>(r.dim,
                               [&](auto DC) { rows_backward<S, decltype(DC)::value>(r, g, gs, o, begin, end); });
  }
}

GKL_NS_END
