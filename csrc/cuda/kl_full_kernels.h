// Launchers of the full-covariance CUDA kernels (light: CUDA runtime and
// kl_args.h only). `ws` is a device workspace of ws_threads * ws_per_thread
// accumulators (float, or double for double inputs): one D x D workspace per
// thread, threads striding over rows, so the temporary is bounded by the
// thread count, never B x D x D. pp, pq: the kind of each side (pp == pq:
// kl_full; otherwise kl_mixed, see kl_full_row.h).
#pragma once

#include <cuda_runtime_api.h>

#include "../kl_args.h"

namespace gaussian_kl {

// Accumulators per thread for event size D (6 D^2 + 3 D), or 0 where the
// pair runs on lane groups (kl_full, D <= 32: kl_full_group.h), which need
// no workspace (the launchers then ignore ws).
int64_t kl_full_cuda_ws_per_thread(FullParam pp, FullParam pq, const FullRows& rows);

cudaError_t kl_full_forward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& rows, void* out, void* ws,
    int64_t ws_threads, cudaStream_t stream);

cudaError_t kl_full_backward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& rows, const void* grad,
    int64_t grad_stride,
    const FullGradOut& o, void* ws, int64_t ws_threads, cudaStream_t stream);

// The lane-group kernels (group::usable pairs; kl_full_group_kernels.cu);
// param: the kind of both sides.
cudaError_t kl_full_group_forward_launch(ScalarKind kind, FullParam param, const FullRows& rows, void* out,
                                         cudaStream_t stream);
cudaError_t kl_full_group_backward_launch(ScalarKind kind, FullParam param, const FullRows& rows, const void* grad,
                                          int64_t grad_stride, const FullGradOut& o, cudaStream_t stream);

}  // namespace gaussian_kl
