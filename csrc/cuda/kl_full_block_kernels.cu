// CUDA kernels of kl_full on a block per batch element (kl_full_block.h):
// scale_tril or cov, q per row, shared (or host-factored) or N(0, I), for
// the D the lane groups leave (D > 32). The block's scratch is dynamic
// shared memory when it fits (up to the device's opt-in limit: D = 128
// float forward and scale_tril backward on an H100/H200), else a slice of a
// global workspace per block (L2-resident; blocks stride over rows).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../kl_full_block.h"
#include "half_convert.cuh"
#include "kl_full_kernels.h"

namespace gaussian_kl {

namespace {

constexpr int kMaxBlockThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 16;  // blocks stride over the rows beyond

// Thread primitives of kl_full_block.h on a CUDA block (blockDim.x a
// multiple of 32); red: 32 accumulators of shared memory for sum().
template <typename A>
struct BlockThreads {
  A* red;
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ int count() const { return static_cast<int>(blockDim.x); }
  __device__ void sync() const { __syncthreads(); }
  __device__ A sum(A v) const {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    __syncthreads();  // the previous sum's reads of red are done
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    A t = A(0);
    for (int k = 0; k < static_cast<int>(blockDim.x >> 5); ++k) t += red[k];
    return t;
  }
};

extern __shared__ __align__(16) unsigned char gkl_block_smem[];

// The block's scratch: its slice of ws, or dynamic shared memory.
template <typename A>
__device__ A* block_scratch(A* ws, int64_t ws_per_block) {
  return ws ? ws + blockIdx.x * ws_per_block : reinterpret_cast<A*>(gkl_block_smem);
}

template <typename S, FullParam P, bool HasQ>
__global__ void __launch_bounds__(kMaxBlockThreads) kl_full_block_forward_kernel(
    const FullRows r, S* __restrict__ out, typename AccType<S>::type* ws, int64_t ws_per_block) {
  using A = typename AccType<S>::type;
  __shared__ A red[32];
  const BlockThreads<A> bl{red};
  const block::Scratch<A> w(block_scratch(ws, ws_per_block), static_cast<int>(r.dim), block::arrays(P, false));
  for (int64_t row = blockIdx.x; row < r.rows; row += gridDim.x) {
    const A kl = block::forward<P, HasQ, StdMath, S>(r, row, bl, w);
    if (threadIdx.x == 0) out[row] = kl_store<S>(kl);
  }
}

template <typename S, FullParam P, bool HasQ>
__global__ void __launch_bounds__(kMaxBlockThreads) kl_full_block_backward_kernel(
    const FullRows r, const S* __restrict__ g, int64_t g_stride, const FullGradOut o,
    typename AccType<S>::type* ws, int64_t ws_per_block) {
  using A = typename AccType<S>::type;
  const BlockThreads<A> bl{nullptr};  // the backward sums nothing
  const block::Scratch<A> w(block_scratch(ws, ws_per_block), static_cast<int>(r.dim), block::arrays(P, true));
  for (int64_t row = blockIdx.x; row < r.rows; row += gridDim.x) {
    block::backward<P, HasQ, StdMath, S>(r, row, kl_load(g[row * g_stride]), o, bl, w);
  }
}

// Threads per block for event size D: a warp-multiple of the D + 1
// columns, at most kMaxBlockThreads (threads then stride over columns).
inline int block_threads(int64_t D) {
  const int64_t t = (D + 1 + 31) / 32 * 32;
  return static_cast<int>(t < kMaxBlockThreads ? t : kMaxBlockThreads);
}

// Launches `kernel` with the plan's blocks; the scratch in dynamic shared
// memory when the plan has no workspace.
template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, const FullCudaPlan& plan, int64_t D, int64_t scratch_bytes, cudaStream_t stream,
                   Args... args) {
  size_t smem = 0;
  if (plan.per_unit == 0) {
    smem = static_cast<size_t>(scratch_bytes);
    if (smem > (48 << 10)) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (e != cudaSuccess) return e;
    }
  }
  kernel<<<static_cast<unsigned>(plan.units), block_threads(D), smem, stream>>>(args...);
  return cudaGetLastError();
}

// dtype x (param, has q) -> f(element tag, P, HasQ, bytes of the block's
// scratch); returns f's error.
template <typename F>
cudaError_t dispatch_block(ScalarKind kind, FullParam param, const FullRows& r, bool backward, const F& f) {
  cudaError_t err = cudaSuccess;
  dispatch_kind(kind, [&](auto tag) {
    using A = typename AccType<decltype(tag)>::type;
    dispatch_full_variant(param, r.has_q(), [&](auto P, auto HQ) {
      const int64_t n = block::scratch_size(r.dim, block::arrays(decltype(P)::value, backward));
      err = f(tag, P, HQ, n * static_cast<int64_t>(sizeof(A)));
    });
  });
  return err;
}

}  // namespace

FullCudaPlan kl_full_block_plan(ScalarKind kind, FullParam param, const FullRows& r, bool backward) {
  const int64_t per = block::scratch_size(r.dim, block::arrays(param, backward));
  const int64_t bytes = per * (kind == ScalarKind::Double ? 8 : 4);
  int dev = 0, optin = 48 << 10;
  if (cudaGetDevice(&dev) == cudaSuccess) {
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  }
  FullCudaPlan plan;
  plan.units = r.rows < kMaxBlocks ? r.rows : kMaxBlocks;
  // 32 accumulators of sum() and alignment beside the dynamic scratch.
  if (bytes > static_cast<int64_t>(optin) - 512) {
    const int64_t cap = kFullCudaWsBytes / bytes;  // bound the workspace, not B
    if (plan.units > cap) plan.units = cap > 1 ? cap : 1;
    plan.per_unit = per;
  }
  return plan;
}

cudaError_t kl_full_block_forward_launch(ScalarKind kind, FullParam param, const FullRows& r, void* out,
                                         const FullCudaPlan& plan, void* ws, cudaStream_t stream) {
  return dispatch_block(kind, param, r, false, [&](auto tag, auto P, auto HQ, int64_t bytes) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    return launch(kl_full_block_forward_kernel<S, decltype(P)::value, decltype(HQ)::value>, plan, r.dim, bytes,
                  stream, r, static_cast<S*>(out), static_cast<A*>(ws), plan.per_unit);
  });
}

cudaError_t kl_full_block_backward_launch(ScalarKind kind, FullParam param, const FullRows& r, const void* grad,
                                          int64_t grad_stride, const FullGradOut& o, const FullCudaPlan& plan,
                                          void* ws, cudaStream_t stream) {
  return dispatch_block(kind, param, r, true, [&](auto tag, auto P, auto HQ, int64_t bytes) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    return launch(kl_full_block_backward_kernel<S, decltype(P)::value, decltype(HQ)::value>, plan, r.dim, bytes,
                  stream, r, static_cast<const S*>(grad), grad_stride, o, static_cast<A*>(ws), plan.per_unit);
  });
}

}  // namespace gaussian_kl
