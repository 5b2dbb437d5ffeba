// Launchers of the full-covariance CUDA kernels (light: CUDA runtime and
// kl_args.h only). pp, pq: the kind of each side (pp == pq or no q:
// kl_full; otherwise kl_mixed, see kl_full_row.h). Three kinds of kernel:
// kl_full with D <= 32 on lane groups, the other kl_full pairs on a block
// per row, kl_mixed on a thread per row with a D x D workspace per thread.
#pragma once

#include <cuda_runtime_api.h>

#include "../kl_args.h"

namespace gaussian_kl {

// How a launch runs: `units` threads (the per-row kernels: a multiple of
// 128) or blocks (the block kernels), each with `per_unit` accumulators of
// the global workspace `ws` (float, or double for double inputs); per_unit
// 0: no workspace (the lane groups; the block kernels with their scratch in
// shared memory). The workspace is bounded by kFullCudaWsBytes, never
// B x D x D: units stride over the rows.
struct FullCudaPlan {
  int64_t units = 0;
  int64_t per_unit = 0;
};
constexpr int64_t kFullCudaWsBytes = int64_t(256) << 20;

// The plan of a forward or backward launch on the current device.
FullCudaPlan kl_full_cuda_plan(ScalarKind kind, FullParam pp, FullParam pq, const FullRows& rows, bool backward);

cudaError_t kl_full_forward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& rows, void* out, const FullCudaPlan& plan,
    void* ws, cudaStream_t stream);

cudaError_t kl_full_backward_cuda_launch(
    ScalarKind kind, FullParam pp, FullParam pq, const FullRows& rows, const void* grad,
    int64_t grad_stride, const FullGradOut& o, const FullCudaPlan& plan, void* ws, cudaStream_t stream);

// The lane-group kernels (group::usable pairs, D <= 32;
// kl_full_group_kernels.cu); param: the kind of both sides.
cudaError_t kl_full_group_forward_launch(ScalarKind kind, FullParam param, const FullRows& rows, void* out,
                                         cudaStream_t stream);
cudaError_t kl_full_group_backward_launch(ScalarKind kind, FullParam param, const FullRows& rows, const void* grad,
                                          int64_t grad_stride, const FullGradOut& o, cudaStream_t stream);

// The block kernels (the other block::usable pairs; kl_full_block_kernels.cu).
FullCudaPlan kl_full_block_plan(ScalarKind kind, FullParam param, const FullRows& rows, bool backward);
cudaError_t kl_full_block_forward_launch(ScalarKind kind, FullParam param, const FullRows& rows, void* out,
                                         const FullCudaPlan& plan, void* ws, cudaStream_t stream);
cudaError_t kl_full_block_backward_launch(ScalarKind kind, FullParam param, const FullRows& rows, const void* grad,
                                          int64_t grad_stride, const FullGradOut& o, const FullCudaPlan& plan,
                                          void* ws, cudaStream_t stream);

}  // namespace gaussian_kl
