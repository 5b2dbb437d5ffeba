// Launchers of the diagonal-KL CUDA kernels. Pure CUDA runtime + kl_args.h:
// included by the light kl_diag_kernels.cu and by the torch-facing
// kl_diag_cuda.cpp, which owns tensors, dtypes, devices and streams.
#pragma once

#include <cuda_runtime_api.h>

#include "../kl_args.h"

namespace gaussian_kl {

// Forward: out[row] = KL of row `row` ([N] contiguous, dtype `kind`).
// Launches on `stream`; returns the launch status. N == 0 launches nothing.
cudaError_t kl_diag_forward_cuda_launch(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& rows,
    void* out,
    cudaStream_t stream);

// Backward: o.grad[j] ([N, D] contiguous, or null) = grad[row] * dKL/dinput_j.
cudaError_t kl_diag_backward_cuda_launch(
    ScalarKind kind,
    DiagParam param,
    const DiagRows& rows,
    const void* grad,
    int64_t grad_stride,
    const DiagGradOut& o,
    cudaStream_t stream);

}  // namespace gaussian_kl
