// ops/diag.h — torch-facing helpers shared by the CPU and CUDA entry points
// of the diagonal KL ops: argument checking, the [N, D] views the kernels read,
// and the check=True error that names the first invalid batch element.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <string>
#include <vector>

#include "../math/problem.h"
#include "common.h"

namespace gaussian_kl {

// The diagonal op's inputs, checked and flattened to [N, D] views. The views
// alias the inputs (a q expanded from [D] keeps row stride 0); only an input
// whose batch dims cannot be merged into one stride is copied.
struct DiagProblem {
  DiagRows rows;
  at::Tensor views[4];  // mu_p, s_p, mu_q, s_q as [N, D] (undefined if no q)
  std::vector<int64_t> batch_shape;
  at::ScalarType dtype = at::kFloat;
};

DiagParam parse_diag_param(c10::string_view param);
const char* diag_param_name(DiagParam param);

// Checks what the Python layer already guarantees (same shape, dtype and
// device; floating dtype; rank >= 1), so that direct callers of
// torch.ops.gaussian_kl.* get the same clear errors.
DiagProblem make_diag_problem(
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const c10::optional<at::Tensor>& mu_q,
    const c10::optional<at::Tensor>& s_q,
    c10::string_view param);

// `out` holds one KL per row; rows with invalid input are NaN by
// construction (math/diag.h: diag_term2). If there is one, raise ValueError
// naming the argument, the first bad batch index and the offending value.
// One host sync on CUDA (the .any()); the error path itself may sync more.
void raise_if_invalid_diag(const at::Tensor& out, const DiagProblem& prob);

// Allocate the backward outputs named by mask, [*batch, D] contiguous;
// unneeded ones are empty tensors (the schema returns Tensor, not Tensor?).
std::vector<at::Tensor> alloc_diag_grads(
    const DiagProblem& prob,
    const at::Tensor& like,
    c10::ArrayRef<bool> mask,
    DiagGradOut* out);

}  // namespace gaussian_kl
