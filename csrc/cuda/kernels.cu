// cuda/kernels.cu — the __global__ wrappers of the CUDA kernels and their
// launchers: the bodies are cuda/diag_device.h and cuda/full_device.h
// (run on the host by ctest as well), the geometry cuda/plan.h. Includes
// only math/ and CUDA headers (nvcc: seconds, not a minute of torch).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "diag_device.h"
#include "full_device.h"
#include "half.cuh"
#include "kernels.h"

namespace gaussian_kl {
namespace cuda {
namespace {

extern __shared__ __align__(16) unsigned char gkl_smem[];

// The execution context of cuda/*_device.h: this thread of this block.
struct Block {
  __host__ __device__ int thread() const {
#ifdef __CUDA_ARCH__
    return static_cast<int>(threadIdx.x);
#else
    return 0;
#endif
  }
  __host__ __device__ int threads() const {
#ifdef __CUDA_ARCH__
    return static_cast<int>(blockDim.x);
#else
    return 1;
#endif
  }
  __host__ __device__ int64_t block() const {
#ifdef __CUDA_ARCH__
    return blockIdx.x;
#else
    return 0;
#endif
  }
  __host__ __device__ int64_t blocks() const {
#ifdef __CUDA_ARCH__
    return gridDim.x;
#else
    return 1;
#endif
  }
  __host__ __device__ void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
  template <typename A>
  __host__ __device__ A* smem() const {
#ifdef __CUDA_ARCH__
    return reinterpret_cast<A*>(gkl_smem);
#else
    return nullptr;
#endif
  }
  template <typename A>
  __host__ __device__ A shfl_xor(A v, int mask, int width) const {
#ifdef __CUDA_ARCH__
    return __shfl_xor_sync(0xffffffffu, v, mask, width);
#else
    return v;
#endif
  }
};

template <typename T, DiagParam P, bool HasQ, int V>
__global__ void __launch_bounds__(256) kl_diag_forward_kernel(const DiagRows r, T* __restrict__ out, const DiagPlan p) {
  dev::diag_forward<T, P, HasQ, V>(Block{}, r, out, p);
}

template <typename T, DiagParam P, bool HasQ, int V>
__global__ void __launch_bounds__(256)
    kl_diag_backward_kernel(const DiagRows r, const T* __restrict__ g, int64_t gs, const DiagGradOut o, const DiagPlan p) {
  dev::diag_backward<T, P, HasQ, V>(Block{}, r, g, gs, o, p);
}

template <typename S>
__global__ void __launch_bounds__(256)
    kl_full_forward_kernel(const FullRows r, S* __restrict__ out, const FullPlan p, typename AccType<S>::type* ws) {
  dev::full_forward<S>(Block{}, r, out, p, ws);
}

template <typename S>
__global__ void __launch_bounds__(256) kl_full_backward_kernel(const FullRows r, const S* __restrict__ g, int64_t gs,
                                                               const FullGradOut o, const FullPlan p,
                                                               typename AccType<S>::type* ws) {
  dev::full_backward<S>(Block{}, r, g, gs, o, p, ws);
}

// dtype -> f(element tag).
template <typename F>
void with_dtype(ScalarKind kind, const F& f) {
  switch (kind) {
    case ScalarKind::Float: f(float{}); break;
    case ScalarKind::Double: f(double{}); break;
    case ScalarKind::Half: f(__half{}); break;
    case ScalarKind::BFloat16: f(__nv_bfloat16{}); break;
  }
}

// (param, has q, 16-byte packs) -> f(P, HasQ, Vec) as compile-time constants.
template <typename F>
void with_diag_variant(const DiagRows& r, bool vec, const F& f) {
  auto with_flags = [&](auto P) {
    if (r.mu_q) {
      if (vec) f(P, std::true_type{}, std::true_type{});
      else f(P, std::true_type{}, std::false_type{});
    } else {
      if (vec) f(P, std::false_type{}, std::true_type{});
      else f(P, std::false_type{}, std::false_type{});
    }
  };
  using DP = DiagParam;
  switch (r.param) {
    case DP::Std: with_flags(std::integral_constant<DP, DP::Std>{}); break;
    case DP::Var: with_flags(std::integral_constant<DP, DP::Var>{}); break;
    case DP::LogVar: with_flags(std::integral_constant<DP, DP::LogVar>{}); break;
    case DP::LogStd: with_flags(std::integral_constant<DP, DP::LogStd>{}); break;
  }
}

// 16-byte packs are legal when every input row starts 16-byte aligned,
// holds whole packs, and has unit column stride (and so every output).
template <typename T>
bool packs_ok(const DiagRows& r, const DiagGradOut* o) {
  constexpr int V = 16 / sizeof(T);
  const int n = r.mu_q ? 4 : 2;
  const void* ptrs[4] = {r.mu_p, r.s_p, r.mu_q, r.s_q};
  if (r.dim % V != 0) return false;
  for (int i = 0; i < n; ++i) {
    if (r.col_stride[i] != 1 || reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0 || r.row_stride[i] % V != 0) {
      return false;
    }
  }
  for (int j = 0; o && j < 4; ++j) {
    if (reinterpret_cast<uintptr_t>(o->grad[j]) % 16 != 0) return false;
  }
  return true;
}

int64_t smem_optin() {
  int dev = 0, optin = 48 << 10;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return optin;
}

// Launches kernel with the plan's geometry; its scratch in dynamic shared
// memory when the plan has no global workspace.
template <typename Kernel, typename... Args>
cudaError_t launch_full(Kernel kernel, const FullPlan& p, cudaStream_t stream, Args... args) {
  if (p.blocks == 0) return cudaSuccess;
  if (p.smem_bytes > (48 << 10)) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(p.smem_bytes));
    if (e != cudaSuccess) return e;
  }
  kernel<<<static_cast<unsigned>(p.blocks), p.threads, static_cast<size_t>(p.smem_bytes), stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

cudaError_t kl_diag_forward_launch(ScalarKind kind, const DiagRows& r, void* out, cudaStream_t stream) {
  if (r.rows == 0) return cudaSuccess;
  with_dtype(kind, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = packs_ok<T>(r, nullptr);
    const DiagPlan p = diag_plan(r.rows, r.dim, vec ? 16 / int(sizeof(T)) : 1);
    with_diag_variant(r, vec, [&](auto P, auto HQ, auto Vc) {
      constexpr int V = decltype(Vc)::value ? 16 / int(sizeof(T)) : 1;
      kl_diag_forward_kernel<T, decltype(P)::value, decltype(HQ)::value, V>
          <<<static_cast<unsigned>(p.blocks), p.threads, 0, stream>>>(r, static_cast<T*>(out), p);
    });
  });
  return cudaGetLastError();
}

cudaError_t kl_diag_backward_launch(ScalarKind kind, const DiagRows& r, const void* grad, int64_t gs,
                                    const DiagGradOut& o, cudaStream_t stream) {
  if (r.rows == 0 || r.dim == 0) return cudaSuccess;
  with_dtype(kind, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = packs_ok<T>(r, &o);
    const DiagPlan p = diag_plan(r.rows, r.dim, vec ? 16 / int(sizeof(T)) : 1);
    with_diag_variant(r, vec, [&](auto P, auto HQ, auto Vc) {
      constexpr int V = decltype(Vc)::value ? 16 / int(sizeof(T)) : 1;
      kl_diag_backward_kernel<T, decltype(P)::value, decltype(HQ)::value, V>
          <<<static_cast<unsigned>(p.blocks), p.threads, 0, stream>>>(r, static_cast<const T*>(grad), gs, o, p);
    });
  });
  return cudaGetLastError();
}

FullPlan kl_full_plan(ScalarKind kind, const FullRows& r, bool backward) {
  return full_plan(r.rows, r.dim, backward, kind == ScalarKind::Double ? 8 : 4, smem_optin());
}

cudaError_t kl_full_forward_launch(ScalarKind kind, const FullRows& r, void* out, const FullPlan& p, void* ws,
                                   cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    err = launch_full(&kl_full_forward_kernel<S>, p, stream, r, static_cast<S*>(out), p, static_cast<A*>(ws));
  });
  return err;
}

cudaError_t kl_full_backward_launch(ScalarKind kind, const FullRows& r, const void* grad, int64_t gs,
                                    const FullGradOut& o, const FullPlan& p, void* ws, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    err = launch_full(&kl_full_backward_kernel<S>, p, stream, r, static_cast<const S*>(grad), gs, o, p,
                      static_cast<A*>(ws));
  });
  return err;
}

}  // namespace cuda
}  // namespace gaussian_kl
