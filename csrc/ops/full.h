// ops/full.h — torch-facing helpers shared by the CPU and CUDA entry points
// of the full-covariance KL ops (kl_full: both sides scale_tril or both cov;
// kl_mixed: sides of different kinds, one of them possibly diagonal).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <vector>

#include "../math/problem.h"
#include "common.h"

namespace gaussian_kl {

struct FullProblem {
  FullRows rows;
  at::Tensor mu[2];  // [N, D] views of mu_p, mu_q (mu_q undefined without q)
  at::Tensor m[2];   // [N, D, D] views of m_p, m_q ([N, D] for a diagonal side)
  at::Tensor lq_shared;  // the factor of a shared cov q (see make_full_problem), or undefined
  std::vector<int64_t> batch_shape;
  at::ScalarType dtype = at::kFloat;
  FullParam kind[2] = {FullParam::ScaleTril, FullParam::ScaleTril};  // p, q as given
  const char* op = "kl_full";
  const char* param_name[2] = {"scale_tril", "scale_tril"};
};

// Checks and [N, ...] views, as for the diagonal op. op = "kl_full": one
// param for both sides (scale_tril | cov); op = "kl_mixed": p_param and
// q_param of different kinds, each scale_tril | cov | std | var | logvar |
// logstd (at most one diagonal side). With factor_shared_q (forward only:
// the backward needs the cov gradient), a float or double cov q shared by
// every row (row stride 0) is Cholesky-factored once here by torch, and
// the kernels read that factor as a scale_tril q instead of factoring q in
// every row.
FullProblem make_full_problem(
    const char* op,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    bool factor_shared_q);

// Raise ValueError (or torch.linalg.LinAlgError's base, ValueError text)
// naming the argument and the first batch index whose KL is NaN.
void raise_if_invalid_full(const at::Tensor& out, const FullProblem& prob);

std::vector<at::Tensor> alloc_full_grads(
    const FullProblem& prob, const at::Tensor& like, c10::ArrayRef<bool> mask, FullGradOut* out);

}  // namespace gaussian_kl
