// CUDA kernels of the diagonal-Gaussian KL. Includes only kl_math.h and
// CUDA headers (nvcc ~2 s); the torch-facing side is kl_diag_cuda.cpp.
//
// Layout: a group of G lanes (G a power of two <= 32, the smallest that
// covers D / V) owns one row; groups stride over rows. Each lane reads V
// consecutive elements per load (16-byte loads when every input has unit
// column stride and 16-byte-aligned rows, V = 1 otherwise), so a warp reads
// contiguous 512-byte segments. The row sum is a per-lane accumulation in a
// fixed order followed by an xor-shuffle tree inside the group: no shared
// memory, no atomics, bitwise reproducible run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "half_convert.cuh"
#include "kl_diag_kernels.h"

namespace gaussian_kl {
namespace {

constexpr int kThreads = 256;

// V elements of T in one aligned load/store (16 bytes when V > 1).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p, int64_t i, int64_t stride) {
  Pack<T, V> a;
  if (V == 1) {
    a.v[0] = p[i * stride];
  } else {
    a = *reinterpret_cast<const Pack<T, V>*>(p + i);
  }
  return a;
}

// Lanes of this group in the warp, for the *_sync intrinsics: groups of one
// warp may leave the row loop at different iterations.
__device__ __forceinline__ unsigned group_mask(int group) {
  if (group == 32) return 0xffffffffu;
  const int first = (threadIdx.x & 31) & ~(group - 1);
  return ((1u << group) - 1u) << first;
}

template <typename T, DiagParam P, bool HasQ, int V>
__global__ void __launch_bounds__(kThreads)
    kl_diag_forward_kernel(const DiagRows r, T* __restrict__ out, int group) {
  using acc_t = typename AccType<T>::type;
  const int lane = threadIdx.x & (group - 1);
  const int groups = blockDim.x / group;
  const unsigned mask = group_mask(group);
  const int64_t D = r.dim;
  const T* mu_p = static_cast<const T*>(r.mu_p);
  const T* s_p = static_cast<const T*>(r.s_p);
  const T* mu_q = static_cast<const T*>(r.mu_q);
  const T* s_q = static_cast<const T*>(r.s_q);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * groups + threadIdx.x / group; row < r.rows;
       row += static_cast<int64_t>(gridDim.x) * groups) {
    const T* mp = mu_p + row * r.row_stride[0];
    const T* sp = s_p + row * r.row_stride[1];
    const T* mq = HasQ ? mu_q + row * r.row_stride[2] : mp;
    const T* sq = HasQ ? s_q + row * r.row_stride[3] : sp;
    acc_t acc = acc_t(0);
    for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += static_cast<int64_t>(group) * V) {
      const Pack<T, V> a = load_pack<T, V>(mp, d, r.col_stride[0]);
      const Pack<T, V> b = load_pack<T, V>(sp, d, r.col_stride[1]);
      Pack<T, V> c, e;
      if (HasQ) {
        c = load_pack<T, V>(mq, d, r.col_stride[2]);
        e = load_pack<T, V>(sq, d, r.col_stride[3]);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) {
        acc += diag_term2<P, HasQ, StdMath>(
            kl_load(a.v[k]), kl_load(b.v[k]), HasQ ? kl_load(c.v[k]) : acc_t(0),
            HasQ ? kl_load(e.v[k]) : acc_t(0));
      }
    }
    for (int off = group >> 1; off > 0; off >>= 1) {
      acc += __shfl_xor_sync(mask, acc, off, group);
    }
    if (lane == 0) {
      out[row] = kl_store<T>(diag_row_finish<P, HasQ>(acc_t(0.5) * acc, D, [&](int64_t i) {
        return DiagWide{kl_load(mp[i * r.col_stride[0]]), kl_load(sp[i * r.col_stride[1]]),
                        HasQ ? kl_load(mq[i * r.col_stride[2]]) : 0.0f,
                        HasQ ? kl_load(sq[i * r.col_stride[3]]) : 0.0f};
      }));
    }
  }
}

template <typename T, DiagParam P, bool HasQ, int V>
__global__ void __launch_bounds__(kThreads) kl_diag_backward_kernel(
    const DiagRows r,
    const T* __restrict__ g,
    int64_t g_stride,
    const DiagGradOut o,
    int group) {
  using acc_t = typename AccType<T>::type;
  const int lane = threadIdx.x & (group - 1);
  const int groups = blockDim.x / group;
  const int64_t D = r.dim;
  const T* mu_p = static_cast<const T*>(r.mu_p);
  const T* s_p = static_cast<const T*>(r.s_p);
  const T* mu_q = static_cast<const T*>(r.mu_q);
  const T* s_q = static_cast<const T*>(r.s_q);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * groups + threadIdx.x / group; row < r.rows;
       row += static_cast<int64_t>(gridDim.x) * groups) {
    const T* mp = mu_p + row * r.row_stride[0];
    const T* sp = s_p + row * r.row_stride[1];
    const T* mq = HasQ ? mu_q + row * r.row_stride[2] : mp;
    const T* sq = HasQ ? s_q + row * r.row_stride[3] : sp;
    const acc_t gr = kl_load(g[row * g_stride]);
    for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += static_cast<int64_t>(group) * V) {
      const Pack<T, V> a = load_pack<T, V>(mp, d, r.col_stride[0]);
      const Pack<T, V> b = load_pack<T, V>(sp, d, r.col_stride[1]);
      Pack<T, V> c, e;
      if (HasQ) {
        c = load_pack<T, V>(mq, d, r.col_stride[2]);
        e = load_pack<T, V>(sq, d, r.col_stride[3]);
      }
      Pack<T, V> res[4];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const DiagGrad<acc_t> v = diag_grad<P, HasQ, StdMath>(
            gr, kl_load(a.v[k]), kl_load(b.v[k]), HasQ ? kl_load(c.v[k]) : acc_t(0),
            HasQ ? kl_load(e.v[k]) : acc_t(0));
        res[0].v[k] = kl_store<T>(v.mu_p);
        res[1].v[k] = kl_store<T>(v.s_p);
        res[2].v[k] = kl_store<T>(v.mu_q);
        res[3].v[k] = kl_store<T>(v.s_q);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (o.grad[j] == nullptr) continue;  // uniform: same for every thread
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

// 16-byte vector loads are legal when every input row starts 16-byte
// aligned and holds a whole number of packs.
template <typename T>
bool can_vectorize(const DiagRows& r) {
  constexpr int V = 16 / sizeof(T);
  if (!r.contiguous_cols() || r.dim % V != 0) return false;
  const void* ptrs[4] = {r.mu_p, r.s_p, r.mu_q, r.s_q};
  for (int i = 0; i < (r.has_q() ? 4 : 2); ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0) return false;
    if (r.row_stride[i] % V != 0) return false;
  }
  return true;
}

int pick_group(int64_t work_per_row) {
  int g = 1;
  while (g < 32 && g < work_per_row) g <<= 1;
  return g;
}

struct LaunchShape {
  int group;
  unsigned blocks;
};

LaunchShape launch_shape(const DiagRows& r, int v) {
  LaunchShape s;
  s.group = pick_group((r.dim + v - 1) / v);
  const int64_t groups_per_block = kThreads / s.group;
  const int64_t blocks = (r.rows + groups_per_block - 1) / groups_per_block;
  // Beyond ~4M blocks the grid-stride loop takes over.
  s.blocks = static_cast<unsigned>(blocks < (int64_t{1} << 22) ? blocks : (int64_t{1} << 22));
  return s;
}

template <typename T>
cudaError_t forward_typed(DiagParam param, const DiagRows& r, void* out, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = can_vectorize<T>(r);
  const LaunchShape s = launch_shape(r, vec ? V : 1);
  dispatch_diag_variant(param, r.has_q(), vec, [&](auto P, auto HQ, auto C) {
    constexpr int kV = decltype(C)::value ? V : 1;
    kl_diag_forward_kernel<T, decltype(P)::value, decltype(HQ)::value, kV>
        <<<s.blocks, kThreads, 0, stream>>>(r, static_cast<T*>(out), s.group);
  });
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_typed(
    DiagParam param,
    const DiagRows& r,
    const void* grad,
    int64_t grad_stride,
    const DiagGradOut& o,
    cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  bool vec = can_vectorize<T>(r);
  for (int j = 0; j < 4; ++j) {
    vec = vec && reinterpret_cast<uintptr_t>(o.grad[j]) % 16 == 0;
  }
  const LaunchShape s = launch_shape(r, vec ? V : 1);
  dispatch_diag_variant(param, r.has_q(), vec, [&](auto P, auto HQ, auto C) {
    constexpr int kV = decltype(C)::value ? V : 1;
    kl_diag_backward_kernel<T, decltype(P)::value, decltype(HQ)::value, kV>
        <<<s.blocks, kThreads, 0, stream>>>(
            r, static_cast<const T*>(grad), grad_stride, o, s.group);
  });
  return cudaGetLastError();
}

}  // namespace

cudaError_t kl_diag_forward_cuda_launch(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& rows,
    void* out,
    cudaStream_t stream) {
  if (rows.rows == 0) return cudaSuccess;
  switch (kind) {
    case ScalarKind::Float:
      return forward_typed<float>(param, rows, out, stream);
    case ScalarKind::Double:
      return forward_typed<double>(param, rows, out, stream);
    case ScalarKind::Half:
      return forward_typed<__half>(param, rows, out, stream);
    case ScalarKind::BFloat16:
      return forward_typed<__nv_bfloat16>(param, rows, out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t kl_diag_backward_cuda_launch(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& rows,
    const void* grad,
    int64_t grad_stride,
    const DiagGradOut& o,
    cudaStream_t stream) {
  if (rows.rows == 0 || rows.dim == 0) return cudaSuccess;
  switch (kind) {
    case ScalarKind::Float:
      return backward_typed<float>(param, rows, grad, grad_stride, o, stream);
    case ScalarKind::Double:
      return backward_typed<double>(param, rows, grad, grad_stride, o, stream);
    case ScalarKind::Half:
      return backward_typed<__half>(param, rows, grad, grad_stride, o, stream);
    case ScalarKind::BFloat16:
      return backward_typed<__nv_bfloat16>(param, rows, grad, grad_stride, o, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace gaussian_kl
