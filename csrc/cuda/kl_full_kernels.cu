// CUDA kernels of the full-covariance KL.
// - kl_full with D <= 32 (scale_tril or cov): lane groups,
//   kl_full_group_kernels.cu.
// - the other kl_full pairs (D > 32, a host-factored shared q): a block per
//   batch element, kl_full_block_kernels.cu.
// - kl_mixed (a diagonal side): one thread per batch element running the
//   same row code as the CPU (kl_full_row.h) on a per-thread workspace in
//   global memory (a diagonal q costs O(D^2) per row; the diagonal p
//   against a full q solves in the thread).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../kl_full_block.h"  // block::usable
#include "../kl_full_group.h"  // group::usable
#include "../kl_full_row.h"
#include "half_convert.cuh"
#include "kl_full_kernels.h"

namespace gaussian_kl {

namespace {

constexpr int kThreads = 128;

template <typename S, FullParam PP, FullParam PQ, bool HasQ>
__global__ void __launch_bounds__(kThreads) kl_full_forward_kernel(
    const FullRows r, S* __restrict__ out, typename AccType<S>::type* ws, int64_t ws_per_thread) {
  using A = typename AccType<S>::type;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FullWork<A> w(ws + tid * ws_per_thread, static_cast<int>(r.dim));
  for (int64_t row = tid; row < r.rows; row += nthreads) {
    out[row] = kl_store<S>(full_row_forward<PP, PQ, HasQ, StdMath, S>(r, row, w));
  }
}

template <typename S, FullParam PP, FullParam PQ, bool HasQ>
__global__ void __launch_bounds__(kThreads) kl_full_backward_kernel(
    const FullRows r, const S* __restrict__ g, int64_t g_stride, const FullGradOut o,
    typename AccType<S>::type* ws, int64_t ws_per_thread) {
  using A = typename AccType<S>::type;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FullWork<A> w(ws + tid * ws_per_thread, static_cast<int>(r.dim));
  for (int64_t row = tid; row < r.rows; row += nthreads) {
    full_row_backward<PP, PQ, HasQ, StdMath, S>(r, row, kl_load(g[row * g_stride]), w, o);
  }
}

// dtype x (pp, pq) -> f(element tag, PP, PQ, HasQ = true): the kl_mixed
// pairs (the kl_full pairs run on lane groups or blocks).
template <typename F>
void dispatch_mixed(ScalarKind kind, FullParam pp, FullParam pq, const F& f) {
  dispatch_kind(kind, [&](auto tag) {
    dispatch_mixed_variant(pp, pq, [&](auto p, auto q) { f(tag, p, q, std::true_type{}); });
  });
}

}  // namespace

FullCudaPlan kl_full_cuda_plan(ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, bool backward) {
  if (r.rows == 0 || group::usable(pp, pq, r)) return {};
  if (block::usable(pp, pq, r)) return kl_full_block_plan(kind, pp, r, backward);
  constexpr int64_t kMaxThreads = 1 << 18;  // ~ a full H100/H200 (132 SMs x 2048)
  FullCudaPlan plan;
  plan.per_unit = FullWork<float>::size(r.dim);  // accumulators of one row (any A)
  const int64_t bytes = plan.per_unit * (kind == ScalarKind::Double ? 8 : 4);
  int64_t t = r.rows;
  if (t > kFullCudaWsBytes / bytes) t = kFullCudaWsBytes / bytes;  // fewer threads for large D
  if (t > kMaxThreads) t = kMaxThreads;
  if (t < 1) t = 1;
  plan.units = (t + kThreads - 1) / kThreads * kThreads;
  return plan;
}

cudaError_t kl_full_forward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, void* out, const FullCudaPlan& plan, void* ws,
    cudaStream_t stream) {
  if (r.rows == 0) return cudaSuccess;
  if (group::usable(pp, pq, r)) return kl_full_group_forward_launch(kind, pp, r, out, stream);
  if (block::usable(pp, pq, r)) return kl_full_block_forward_launch(kind, pp, r, out, plan, ws, stream);
  dispatch_mixed(kind, pp, pq, [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    kl_full_forward_kernel<S, decltype(PP)::value, decltype(PQ)::value, decltype(HQ)::value>
        <<<static_cast<unsigned>(plan.units / kThreads), kThreads, 0, stream>>>(
            r, static_cast<S*>(out), static_cast<A*>(ws), plan.per_unit);
  });
  return cudaGetLastError();
}

cudaError_t kl_full_backward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, const void* grad,
    int64_t grad_stride, const FullGradOut& o, const FullCudaPlan& plan, void* ws, cudaStream_t stream) {
  if (r.rows == 0) return cudaSuccess;
  if (group::usable(pp, pq, r)) return kl_full_group_backward_launch(kind, pp, r, grad, grad_stride, o, stream);
  if (block::usable(pp, pq, r)) {
    return kl_full_block_backward_launch(kind, pp, r, grad, grad_stride, o, plan, ws, stream);
  }
  dispatch_mixed(kind, pp, pq, [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    kl_full_backward_kernel<S, decltype(PP)::value, decltype(PQ)::value, decltype(HQ)::value>
        <<<static_cast<unsigned>(plan.units / kThreads), kThreads, 0, stream>>>(
            r, static_cast<const S*>(grad), grad_stride, o, static_cast<A*>(ws), plan.per_unit);
  });
  return cudaGetLastError();
}

}  // namespace gaussian_kl
