// cuda/ops.cpp — the CUDA entry points of every op: argument checks and
// views (ops/), output and workspace allocation, device guard, current
// stream, launch check. The kernels are in the light cuda/kernels.cu;
// every op's Args and Returns are in csrc/registration.cpp. check=True
// costs one host sync (the .any() of the NaN check), like
// torch.distributions' own validation; check=False never syncs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../ops/diag.h"
#include "../ops/full.h"
#include "kernels.h"

namespace gaussian_kl {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor kl_diag_cuda(const at::Tensor& mu_p, const at::Tensor& s_p, const std::optional<at::Tensor>& mu_q,
                        const std::optional<at::Tensor>& s_q, c10::string_view param, bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  at::Tensor out = at::empty(prob.batch_shape, mu_p.options());
  C10_CUDA_CHECK(cuda::kl_diag_forward_launch(scalar_kind(prob.dtype), prob.rows, out.data_ptr(),
                                              c10::cuda::getCurrentCUDAStream()));
  if (check) raise_if_invalid_diag(out, prob);
  return out;
}

Grads kl_diag_backward_cuda(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& s_p,
                            const std::optional<at::Tensor>& mu_q, const std::optional<at::Tensor>& s_q,
                            c10::string_view param, std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  const at::Tensor g = grad_rows("kl_diag", grad, mu_p, prob.batch_shape, prob.dtype, prob.rows.rows);
  DiagGradOut o;
  std::vector<at::Tensor> grads = alloc_diag_grads(prob, mu_p, output_mask, &o);
  C10_CUDA_CHECK(cuda::kl_diag_backward_launch(scalar_kind(prob.dtype), prob.rows, g.data_ptr(), g.stride(0), o,
                                               c10::cuda::getCurrentCUDAStream()));
  return {grads[0], grads[1], grads[2], grads[3]};
}

// The launch plan of prob and its global workspace (undefined when the
// scratch fits in shared memory).
at::Tensor workspace(const FullProblem& prob, bool backward, cuda::FullPlan* plan) {
  *plan = cuda::kl_full_plan(scalar_kind(prob.dtype), prob.rows, backward);
  if (plan->ws_bytes == 0) return at::Tensor();
  return at::empty({plan->ws_bytes}, prob.mu[0].options().dtype(at::kByte));
}

at::Tensor full_forward(const FullProblem& prob, const at::Tensor& like, bool check) {
  at::Tensor out = at::empty(prob.batch_shape, like.options());
  if (prob.rows.rows > 0) {
    cuda::FullPlan plan;
    const at::Tensor ws = workspace(prob, false, &plan);
    C10_CUDA_CHECK(cuda::kl_full_forward_launch(scalar_kind(prob.dtype), prob.rows, out.data_ptr(), plan,
                                                ws.defined() ? ws.data_ptr() : nullptr,
                                                c10::cuda::getCurrentCUDAStream()));
  }
  if (check) raise_if_invalid_full(out, prob);
  return out;
}

Grads full_backward(const FullProblem& prob, const at::Tensor& grad, const at::Tensor& like,
                    std::array<bool, 4> mask) {
  const at::Tensor g = grad_rows(prob.op, grad, like, prob.batch_shape, prob.dtype, prob.rows.rows);
  FullGradOut o;
  std::vector<at::Tensor> grads = alloc_full_grads(prob, like, mask, &o);
  if (prob.rows.rows > 0 && prob.rows.dim > 0) {
    cuda::FullPlan plan;
    const at::Tensor ws = workspace(prob, true, &plan);
    C10_CUDA_CHECK(cuda::kl_full_backward_launch(scalar_kind(prob.dtype), prob.rows, g.data_ptr(), g.stride(0), o,
                                                 plan, ws.defined() ? ws.data_ptr() : nullptr,
                                                 c10::cuda::getCurrentCUDAStream()));
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

at::Tensor kl_full_cuda(const at::Tensor& mu_p, const at::Tensor& m_p, const std::optional<at::Tensor>& mu_q,
                        const std::optional<at::Tensor>& m_q, c10::string_view param, bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return full_forward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, true), mu_p, check);
}

Grads kl_full_backward_cuda(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& m_p,
                            const std::optional<at::Tensor>& mu_q, const std::optional<at::Tensor>& m_q,
                            c10::string_view param, std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return full_backward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, false), grad, mu_p,
                       output_mask);
}

at::Tensor kl_mixed_cuda(const at::Tensor& mu_p, const at::Tensor& m_p, const at::Tensor& mu_q,
                         const at::Tensor& m_q, c10::string_view p_param, c10::string_view q_param, bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return full_forward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, true), mu_p, check);
}

Grads kl_mixed_backward_cuda(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& m_p,
                             const at::Tensor& mu_q, const at::Tensor& m_q, c10::string_view p_param,
                             c10::string_view q_param, std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  return full_backward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, false), grad, mu_p,
                       output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CUDA, m) {
  m.impl("kl_diag", &kl_diag_cuda);
  m.impl("kl_diag_backward", &kl_diag_backward_cuda);
  m.impl("kl_full", &kl_full_cuda);
  m.impl("kl_full_backward", &kl_full_backward_cuda);
  m.impl("kl_mixed", &kl_mixed_cuda);
  m.impl("kl_mixed_backward", &kl_mixed_backward_cuda);
}

}  // namespace gaussian_kl
