// Torch-facing CUDA entry points of the full-covariance KL ops: kl_full and
// kl_mixed (see the CPU file for Args/Returns).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../kl_full.h"
#include "kl_full_kernels.h"

namespace gaussian_kl {
namespace {

// The launch plan of prob and its global workspace (undefined when the
// kernels need none).
at::Tensor workspace(const FullProblem& prob, bool backward, FullCudaPlan* plan) {
  *plan = kl_full_cuda_plan(scalar_kind(prob.dtype), prob.kind[0], prob.kind[1], prob.rows, backward);
  if (plan->per_unit == 0) return at::Tensor();
  const auto acc = prob.dtype == at::kDouble ? at::kDouble : at::kFloat;
  return at::empty({plan->units * plan->per_unit}, prob.mu[0].options().dtype(acc));
}

// check=True costs one host sync.
at::Tensor forward(const FullProblem& prob, const at::Tensor& like, bool check) {
  at::Tensor out = at::empty(prob.batch_shape, like.options());
  if (prob.rows.rows > 0) {
    FullCudaPlan plan;
    at::Tensor ws = workspace(prob, false, &plan);
    C10_CUDA_CHECK(kl_full_forward_cuda_launch(scalar_kind(prob.dtype), prob.kind[0], prob.kind[1], prob.rows,
                                               out.data_ptr(), plan, ws.defined() ? ws.data_ptr() : nullptr,
                                               c10::cuda::getCurrentCUDAStream()));
  }
  if (check) raise_if_invalid_full(out, prob);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const FullProblem& prob, const at::Tensor& grad, const at::Tensor& like, std::array<bool, 4> mask) {
  TORCH_CHECK_VALUE(grad.sizes() == c10::IntArrayRef(prob.batch_shape), prob.op,
                    "_backward: grad must have the batch shape of the inputs");
  FullGradOut o;
  std::vector<at::Tensor> grads = alloc_full_grads(prob, like, mask, &o);
  if (prob.rows.rows > 0) {
    const at::Tensor g = rows_view(grad.to(prob.dtype), prob.rows.rows);
    FullCudaPlan plan;
    at::Tensor ws = workspace(prob, true, &plan);
    C10_CUDA_CHECK(kl_full_backward_cuda_launch(scalar_kind(prob.dtype), prob.kind[0], prob.kind[1], prob.rows,
                                                g.data_ptr(), g.stride(0), o, plan,
                                                ws.defined() ? ws.data_ptr() : nullptr,
                                                c10::cuda::getCurrentCUDAStream()));
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

at::Tensor kl_full_forward_cuda(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return forward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, false), mu_p, check);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_full_backward_cuda(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return backward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, false), grad, mu_p,
                  output_mask);
}

at::Tensor kl_mixed_forward_cuda(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const at::Tensor& mu_q,
    const at::Tensor& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return forward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, false), mu_p,
                 check);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_mixed_backward_cuda(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const at::Tensor& mu_q,
    const at::Tensor& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return backward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, false), grad,
                  mu_p, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CUDA, m) {
  m.impl("kl_full", &kl_full_forward_cuda);
  m.impl("kl_full_backward", &kl_full_backward_cuda);
  m.impl("kl_mixed", &kl_mixed_forward_cuda);
  m.impl("kl_mixed_backward", &kl_mixed_backward_cuda);
}

}  // namespace gaussian_kl
