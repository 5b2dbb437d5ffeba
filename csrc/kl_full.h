// kl_full.h — torch-facing helpers shared by the CPU and CUDA launchers of
// the full-covariance KL ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <vector>

#include "kl_args.h"
#include "kl_common.h"

namespace gaussian_kl {

struct FullProblem {
  FullRows rows;
  at::Tensor mu[2];  // [N, D] views of mu_p, mu_q (mu_q undefined without q)
  at::Tensor m[2];   // [N, D, D] views of m_p, m_q
  at::Tensor lq_shared;  // shared q covariance factored once (CPU), or undefined
  std::vector<int64_t> batch_shape;
  at::ScalarType dtype = at::kFloat;
  FullParam param = FullParam::ScaleTril;
};

FullParam parse_full_param(c10::string_view param);

// Checks and [N, ...] views, as for the diagonal op. With factor_shared_q, a
// cov q shared by every row (row stride 0) is Cholesky-factored once here
// instead of once per row.
FullProblem make_full_problem(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    bool factor_shared_q);

// Raise ValueError (or torch.linalg.LinAlgError's base, ValueError text)
// naming the argument and the first batch index whose KL is NaN.
void raise_if_invalid_full(const at::Tensor& out, const FullProblem& prob);

std::vector<at::Tensor> alloc_full_grads(
    const FullProblem& prob, const at::Tensor& like, c10::ArrayRef<bool> mask, FullGradOut* out);

}  // namespace gaussian_kl
