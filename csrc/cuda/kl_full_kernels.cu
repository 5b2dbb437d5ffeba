// CUDA kernels of the full-covariance KL.
// - kl_full with D <= 32 (scale_tril or cov): lane groups,
//   kl_full_group_kernels.cu.
// - everything else: one thread per batch element running the same row code
//   as the CPU (kl_full_row.h) on a per-thread workspace in global memory.
//   Correct for any D (blocked/shared-memory kernels for large D are future
//   work).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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

// dtype x (pp, pq, has q) -> f(element tag, PP, PQ, HasQ); mixed pairs
// (pp != pq) always have q.
template <typename F>
void dispatch_full(ScalarKind kind, FullParam pp, FullParam pq, bool has_q, const F& f) {
  auto with_variant = [&](auto tag) {
    if (pp == pq || !has_q) {
      dispatch_full_variant(pp, has_q, [&](auto p, auto hq) { f(tag, p, p, hq); });
    } else {
      dispatch_mixed_variant(pp, pq, [&](auto p, auto q) { f(tag, p, q, std::true_type{}); });
    }
  };
  dispatch_kind(kind, with_variant);
}

}  // namespace

int64_t kl_full_cuda_ws_per_thread(FullParam pp, FullParam pq, const FullRows& r) {
  if (group::usable(pp, pq, r)) return 0;
  return FullWork<float>::size(r.dim);  // elements of one row's workspace (any A)
}

// ws_threads must be a multiple of kThreads (the launcher rounds it).
cudaError_t kl_full_forward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, void* out, void* ws,
    int64_t ws_threads, cudaStream_t stream) {
  if (r.rows == 0) return cudaSuccess;
  if (group::usable(pp, pq, r)) return kl_full_group_forward_launch(kind, pp, r, out, stream);
  const unsigned blocks = static_cast<unsigned>(ws_threads / kThreads);
  const int64_t per = kl_full_cuda_ws_per_thread(pp, pq, r);
  dispatch_full(kind, pp, pq, r.has_q(), [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    kl_full_forward_kernel<S, decltype(PP)::value, decltype(PQ)::value, decltype(HQ)::value>
        <<<blocks, kThreads, 0, stream>>>(r, static_cast<S*>(out), static_cast<A*>(ws), per);
  });
  return cudaGetLastError();
}

cudaError_t kl_full_backward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& r, const void* grad,
    int64_t grad_stride, const FullGradOut& o, void* ws, int64_t ws_threads, cudaStream_t stream) {
  if (r.rows == 0) return cudaSuccess;
  if (group::usable(pp, pq, r)) return kl_full_group_backward_launch(kind, pp, r, grad, grad_stride, o, stream);
  const unsigned blocks = static_cast<unsigned>(ws_threads / kThreads);
  const int64_t per = kl_full_cuda_ws_per_thread(pp, pq, r);
  dispatch_full(kind, pp, pq, r.has_q(), [&](auto tag, auto PP, auto PQ, auto HQ) {
    using S = decltype(tag);
    using A = typename AccType<S>::type;
    kl_full_backward_kernel<S, decltype(PP)::value, decltype(PQ)::value, decltype(HQ)::value>
        <<<blocks, kThreads, 0, stream>>>(
        r, static_cast<const S*>(grad), grad_stride, o, static_cast<A*>(ws), per);
  });
  return cudaGetLastError();
}

}  // namespace gaussian_kl
