// cuda/diag_device.h — the CUDA kernels of kl_diag as plain templates over
// an execution context C (see cuda/full_device.h), so that the GPU and
// the host emulation in ctest run the same bodies. Layout (cuda/plan.h):
// a group of G lanes owns one row, each lane reads `vec` consecutive
// elements per load (16-byte packs where every row allows), the row sum
// is a fixed xor-shuffle tree inside the group (no atomics: bitwise
// reproducible). Groups stride over rows; every lane of a block runs
// every iteration (a group past the last row recomputes it and stores
// nothing), so the shuffles always find the whole warp.
#pragma once

#include "../math/diag.h"
#include "plan.h"

GKL_NS_BEGIN
namespace dev {

// V elements of T in one aligned load/store (16 bytes when V > 1).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
GKL_INLINE Pack<T, V> load_pack(const T* p, int64_t i, int64_t stride) {
  Pack<T, V> a;
  if (V == 1) {
    a.v[0] = p[i * stride];
  } else {
    a = *reinterpret_cast<const Pack<T, V>*>(p + i);
  }
  return a;
}

// The packs of row `in` at column d: p's mean and scale (a, b), q's (e, f)
// with q.
template <typename T, int V, bool HasQ>
struct Packs {
  Pack<T, V> a, b, e, f;
  GKL_INLINE Packs(const DiagRowIn<T, HasQ>& in, int64_t d, const int64_t* cs) {
    a = load_pack<T, V>(in.mp, d, cs[0]);
    b = load_pack<T, V>(in.sp, d, cs[1]);
    if (HasQ) {
      e = load_pack<T, V>(in.mq, d, cs[2]);
      f = load_pack<T, V>(in.sq, d, cs[3]);
    }
  }
};

template <typename T, DiagParam P, bool HasQ, int V, class C>
GKL_INLINE void diag_forward(const C& c, const DiagRows& r, T* out, const cuda::DiagPlan& pl) {
  using A = typename AccType<T>::type;
  const int G = pl.group, lane = c.thread() & (G - 1);
  const int64_t groups = c.threads() / G, D = r.dim;
  for (int64_t base = c.block() * groups; base < r.rows; base += c.blocks() * groups) {
    const int64_t mine = base + c.thread() / G;
    const bool active = mine < r.rows;
    const int64_t row = active ? mine : r.rows - 1;
    const DiagRowIn<T, HasQ> in(r, row);
    A acc = A(0);
    for (int64_t d = int64_t(lane) * V; d < D; d += int64_t(G) * V) {
      const Packs<T, V, HasQ> x(in, d, r.col_stride);
      for (int k = 0; k < V; ++k) {
        acc += diag_term2<P, HasQ, StdMath>(kl_load(x.a.v[k]), kl_load(x.b.v[k]), HasQ ? kl_load(x.e.v[k]) : A(0),
                                            HasQ ? kl_load(x.f.v[k]) : A(0));
      }
    }
    for (int off = G >> 1; off > 0; off >>= 1) acc += c.shfl_xor(acc, off, G);
    if (active && lane == 0) {
      out[row] = kl_store<T>(diag_row_finish<P, HasQ>(A(0.5) * acc, D, [&](int64_t i) {
        return DiagWide{kl_load(in.mp[i * r.col_stride[0]]), kl_load(in.sp[i * r.col_stride[1]]),
                        HasQ ? kl_load(in.mq[i * r.col_stride[2]]) : 0.0, HasQ ? kl_load(in.sq[i * r.col_stride[3]]) : 0.0};
      }));
    }
  }
}

template <typename T, DiagParam P, bool HasQ, int V, class C>
GKL_INLINE void diag_backward(const C& c, const DiagRows& r, const T* g, int64_t gs, const DiagGradOut& o,
                              const cuda::DiagPlan& pl) {
  using A = typename AccType<T>::type;
  const int G = pl.group, lane = c.thread() & (G - 1);
  const int64_t groups = c.threads() / G, D = r.dim;
  for (int64_t base = c.block() * groups; base < r.rows; base += c.blocks() * groups) {
    const int64_t row = base + c.thread() / G;
    if (row >= r.rows) continue;  // no shuffles here: groups may leave early
    const DiagRowIn<T, HasQ> in(r, row);
    const A gr = kl_load(g[row * gs]);
    for (int64_t d = int64_t(lane) * V; d < D; d += int64_t(G) * V) {
      const Packs<T, V, HasQ> x(in, d, r.col_stride);
      Pack<T, V> res[4];
      for (int k = 0; k < V; ++k) {
        const DiagGrad<A> v = diag_grad<P, HasQ, StdMath>(gr, kl_load(x.a.v[k]), kl_load(x.b.v[k]),
                                                          HasQ ? kl_load(x.e.v[k]) : A(0),
                                                          HasQ ? kl_load(x.f.v[k]) : A(0));
        res[0].v[k] = kl_store<T>(v.mu_p);
        res[1].v[k] = kl_store<T>(v.s_p);
        res[2].v[k] = kl_store<T>(v.mu_q);
        res[3].v[k] = kl_store<T>(v.s_q);
      }
      for (int j = 0; j < 4; ++j) {
        if (o.grad[j] == nullptr) continue;
        T* dst = static_cast<T*>(o.grad[j]) + row * D + d;  // contiguous [N, D]
        if (V == 1) {
          *dst = res[j].v[0];
        } else {
          *reinterpret_cast<Pack<T, V>*>(dst) = res[j];
        }
      }
    }
  }
}

}  // namespace dev
GKL_NS_END
