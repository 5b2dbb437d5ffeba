// cuda/full_device.h — the CUDA kernels of kl_full and kl_mixed as plain
// templates over an execution context C (one thread of a block), so that
// the same bodies run on the GPU (cuda/kernels.cu passes the real block)
// and on the host in ctest (tests/cpp/test_emulation.cpp passes fibers).
// The math is math/full.h's under the Threads policy below; the launch
// geometry is cuda/plan.h's. No torch or CUDA headers.
//
// A context provides:
//   int thread() const, threads() const; int64_t block() const, blocks() const
//   void sync() const                       the block's barrier
//   template <class A> A* smem() const      the block's dynamic shared memory
//   template <class A> A shfl_xor(A, int mask, int width) const   (diag kernel)
#pragma once

#include "../math/full.h"
#include "plan.h"

GKL_NS_BEGIN
namespace dev {

// math/full.h's policy on the G threads of a group sharing a scratch: a
// thread owns the columns t, t + G, ... and the rows t, t + G, ... of the
// phases that split rows; every element is one value (kW = 1). All groups
// of a block run the same steps, so sync() is the block's barrier.
template <typename A, class C>
struct Threads {
  using T = A;
  using V = A;
  static constexpr int kW = 1, kNV = 1, kR = 1;
  const C* c;
  int t, G;
  A* red;  // G accumulators of this group (total())

  GKL_INLINE int dim(int D) const { return D; }
  GKL_INLINE int ldim(int ld) const { return ld; }
  GKL_INLINE V load(const T* p) const { return *p; }
  GKL_INLINE void store(T* p, V v) const { *p = v; }
  GKL_INLINE V splat(T x) const { return x; }
  GKL_INLINE V zero() const { return A(0); }
  GKL_INLINE V keep(V v, int j, int lo, int hi, int extra = -1) const {
    return (j >= lo && j < hi) || j == extra ? v : A(0);
  }
  template <typename F>
  GKL_INLINE void slices(int lo, int hi, const F& f) const {
    for (int j = lo + t; j < hi; j += G) f(j, std::integral_constant<int, 1>{});
  }
  template <typename F>
  GKL_INLINE void rows(int lo, int hi, const F& f) const {
    for (int i = lo + t; i < hi; i += G) f(i);
  }
  GKL_INLINE void sync() const { c->sync(); }
  // The group's sum, in thread order (the same on every thread: results
  // do not depend on scheduling).
  GKL_INLINE T total(V v) const {
    c->sync();  // the previous sum's reads of red are done
    red[t] = v;
    c->sync();
    A s = A(0);
    for (int k = 0; k < G; ++k) s += red[k];
    return s;
  }
  GKL_INLINE T dot(const T* a, const T* b, int n) const {
    A s = A(0);
    for (int j = 0; j < n; ++j) s += a[j] * b[j];
    return s;
  }
  template <typename F, typename... Args>
  GKL_INLINE T each(const F& f, Args... args) const {
    return f(args...);
  }
  GKL_INLINE void column(const T* M, int ld, int col, T* v, int D) const {
    for (int i = t; i < D; i += G) v[i] = M[i * ld + col];
  }
  GKL_INLINE void transpose(const T* src, T* dst, int ld, int D) const {
    for (int i = t; i < D; i += G) {
      for (int j = 0; j < D; ++j) dst[j * ld + i] = src[i * ld + j];
    }
  }
  GKL_INLINE void mirror(T* m, int ld, int D) const {
    for (int i = t; i < D; i += G) {
      for (int j = 0; j < i; ++j) m[j * ld + i] = m[i * ld + j];
    }
  }
};

// The sides of row `row` into the scratch (lower triangles, 0 above; a
// scale_tril q also transposed into QT; a diagonal side's standard
// deviations on the diagonal; delta into b), threads over elements.
template <typename S, typename A, class X>
GKL_INLINE void load_row(const X& x, const FullRows& r, int64_t row, FullWork<A>& w) {
  const int D = w.D, ld = w.ld;
  for (int k = 0; k < (r.mu_q ? 2 : 1); ++k) {
    const S* m = static_cast<const S*>(k ? r.m_q : r.m_p) + row * r.m_rs[k];
    A* M = k ? w.Q : w.P;
    A* MT = k && r.kind[1] == FullParam::ScaleTril ? w.QT : nullptr;
    for (int e = x.t; e < D * D; e += x.G) {
      // Columns of a column-major input in memory order.
      const bool col = r.m_s0[k] == 1 && r.m_s1[k] != 1;
      const int i = col ? e % D : e / D, j = col ? e / D : e % D;
      A v = A(0);
      if (r.kind[k] == FullParam::Diag) {
        if (i == j) v = diag_param_std<StdMath>(kl_load(m[i * r.m_s0[k]]), r.diag_param);
      } else if (j <= i) {
        v = kl_load(m[i * r.m_s0[k] + j * r.m_s1[k]]);
      }
      M[i * ld + j] = v;
      if (MT) MT[j * ld + i] = v;
    }
  }
  w.qt_loaded = r.mu_q && r.kind[1] == FullParam::ScaleTril;
  const S* mp = static_cast<const S*>(r.mu_p) + row * r.mu_rs[0];
  const S* mq = r.mu_q ? static_cast<const S*>(r.mu_q) + row * r.mu_rs[1] : nullptr;
  for (int i = x.t; i < D; i += x.G) {
    const A p = kl_load(mp[i * r.mu_cs[0]]);
    w.b[i] = mq ? kl_load(mq[i * r.mu_cs[1]]) - p : -p;
  }
}

// The gradients into the outputs (math/full.h's sink), threads over
// elements; matrices row- or column-major per output.
template <typename S, typename A, class X>
struct Sink {
  const X* x;
  const FullGradOut* o;
  int64_t row;
  int D, ld;
  bool store;  // false for a group past the last row
  GKL_INLINE bool col_major(int k) const { return o->col_major[k]; }
  GKL_INLINE void vec(int k, const A* v, A c) const {
    if (!store) return;
    S* dst = static_cast<S*>(o->grad[k]) + row * D;
    for (int i = x->t; i < D; i += x->G) dst[i] = kl_store<S>(c * v[i]);
  }
  GKL_INLINE void mat(int k, const A* M, A c, int how) const {  // how: 0 tril, 1 sym, 2 tril_t
    if (!store) return;
    S* dst = static_cast<S*>(o->grad[k]) + row * int64_t(D) * D;
    for (int e = x->t; e < D * D; e += x->G) {
      const int i = o->col_major[k] ? e % D : e / D, j = o->col_major[k] ? e / D : e % D;
      A m = A(0);
      if (how == 2) {
        m = j <= i ? M[j * ld + i] : A(0);
      } else {
        m = j <= i ? M[i * ld + j] : (how == 1 ? M[j * ld + i] : A(0));
      }
      dst[e] = kl_store<S>(c * m);
    }
  }
  GKL_INLINE void tril(int k, const A* M, A c) const { mat(k, M, c, 0); }
  GKL_INLINE void sym(int k, const A* M, A c) const { mat(k, M, c, 1); }
  GKL_INLINE void tril_t(int k, const A* MT, A c) const { mat(k, MT, c, 2); }
};

// The scratch of this thread's group: its slice of the global workspace,
// or of the block's dynamic shared memory.
template <typename A, class C>
GKL_INLINE A* group_scratch(const C& c, const cuda::FullPlan& p, A* ws) {
  const int g = c.thread() / p.group;
  A* base = ws ? ws + c.block() * p.groups * p.group_elems : c.template smem<A>();
  return base + g * p.group_elems;
}

// Group g of block b takes rows b * groups + g, then strides by the grid's
// groups, each row loaded into the group's scratch and prepared;
// f(x, w, bad, row, active) finishes it (bad: prepare()'s validity term). Every group runs every step (a group
// past the last row recomputes it and stores nothing), so the block's
// barriers line up.
template <typename S, class C, class F>
GKL_INLINE void each_row(const C& c, const FullRows& r, const cuda::FullPlan& p, typename AccType<S>::type* ws,
                         bool backward, const F& f) {
  using A = typename AccType<S>::type;
  const int D = static_cast<int>(r.dim);
  A* scratch = group_scratch(c, p, ws);
  const Threads<A, C> x{&c, c.thread() % p.group, p.group, scratch + (p.group_elems - p.group)};
  FullWork<A> w(scratch, D, D, backward);
  const int64_t stride = c.blocks() * p.groups;
  for (int64_t base = c.block() * p.groups; base < r.rows; base += stride) {
    const int64_t mine = base + c.thread() / p.group;
    const bool active = mine < r.rows;
    const int64_t row = active ? mine : r.rows - 1;
    c.sync();  // the previous row's reads of the scratch are done
    load_row<S>(x, r, row, w);
    c.sync();
    const A bad = prepare<StdMath>(x, w, sides_of(r));
    f(x, w, bad, row, active);
  }
}

template <typename S, class C>
GKL_INLINE void full_forward(const C& c, const FullRows& r, S* out, const cuda::FullPlan& p,
                             typename AccType<S>::type* ws) {
  each_row<S>(c, r, p, ws, false, [&](const auto& x, const auto& w, auto bad, int64_t row, bool active) {
    const auto kl2v = kl2<StdMath>(x, w, bad);
    if (active && x.t == 0) out[row] = kl_store<S>(finish_kl<S>(kl2v, r, row));
  });
}

template <typename S, class C>
GKL_INLINE void full_backward(const C& c, const FullRows& r, const S* g, int64_t gs, const FullGradOut& o,
                              const cuda::FullPlan& p, typename AccType<S>::type* ws) {
  using A = typename AccType<S>::type;
  const bool need[4] = {o.grad[0] != nullptr, o.grad[1] != nullptr, o.grad[2] != nullptr, o.grad[3] != nullptr};
  each_row<S>(c, r, p, ws, true, [&](const auto& x, const auto& w, auto, int64_t row, bool active) {
    const Sink<S, A, Threads<A, C>> sink{&x, &o, row, static_cast<int>(r.dim), static_cast<int>(r.dim), active};
    backward<StdMath>(x, w, sides_of(r), r.diag_param, kl_load(g[row * gs]), need, sink);
  });
}

}  // namespace dev
GKL_NS_END
