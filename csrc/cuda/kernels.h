// cuda/kernels.h — the launchers of the CUDA kernels (cuda/kernels.cu),
// for the torch-facing cuda/ops.cpp: CUDA runtime types and the op
// structs only, no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include "../math/problem.h"
#include "plan.h"

namespace gaussian_kl {
namespace cuda {

// out[row] = KL of row `row` ([N] contiguous, dtype `kind`), on `stream`.
cudaError_t kl_diag_forward_launch(ScalarKind kind, const DiagRows& rows, void* out, cudaStream_t stream);

// o.grad[j] ([N, D] contiguous, or null) = grad[row] * dKL / dinput_j.
cudaError_t kl_diag_backward_launch(ScalarKind kind, const DiagRows& rows, const void* grad, int64_t grad_stride,
                                    const DiagGradOut& o, cudaStream_t stream);

// The plan of a kl_full / kl_mixed launch on the current device (its
// shared-memory limit); plan.ws_bytes of global workspace to pass as ws.
FullPlan kl_full_plan(ScalarKind kind, const FullRows& rows, bool backward);

cudaError_t kl_full_forward_launch(ScalarKind kind, const FullRows& rows, void* out, const FullPlan& plan, void* ws,
                                   cudaStream_t stream);
cudaError_t kl_full_backward_launch(ScalarKind kind, const FullRows& rows, const void* grad, int64_t grad_stride,
                                    const FullGradOut& o, const FullPlan& plan, void* ws, cudaStream_t stream);

}  // namespace cuda
}  // namespace gaussian_kl
