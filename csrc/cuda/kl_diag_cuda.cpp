// Torch-facing CUDA entry points of the diagonal KL: device guard, current
// stream, dtype mapping, launch check. The kernels live in the light
// kl_diag_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../kl_diag.h"
#include "kl_diag_kernels.h"

namespace gaussian_kl {
namespace {

// Args/Returns: as kl_diag_forward_cpu (csrc/cpu/kl_diag_cpu.cpp).
// check=True costs one host sync (the .any() in raise_if_invalid_diag), like
// torch.distributions' own validation; check=False never syncs.
at::Tensor kl_diag_forward_cuda(
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& s_q,
    c10::string_view param,
    bool check) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  at::Tensor out = at::empty(prob.batch_shape, mu_p.options());
  C10_CUDA_CHECK(kl_diag_forward_cuda_launch(
      scalar_kind(prob.dtype), prob.param, prob.rows, out.data_ptr(),
      c10::cuda::getCurrentCUDAStream()));
  if (check) raise_if_invalid_diag(out, prob);
  return out;
}

// Args/Returns: as kl_diag_backward_cpu.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_diag_backward_cuda(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& s_q,
    c10::string_view param,
    std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(mu_p.device());
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  TORCH_CHECK_VALUE(
      grad.sizes() == c10::IntArrayRef(prob.batch_shape),
      "kl_diag_backward: grad must have the batch shape of the inputs");
  TORCH_CHECK_VALUE(
      grad.device() == mu_p.device(), "kl_diag_backward: grad is on ", grad.device(),
      " but mu_p is on ", mu_p.device());
  DiagGradOut o;
  std::vector<at::Tensor> grads = alloc_diag_grads(prob, mu_p, output_mask, &o);
  const at::Tensor g = rows_view(grad.to(prob.dtype), prob.rows.rows);
  C10_CUDA_CHECK(kl_diag_backward_cuda_launch(
      scalar_kind(prob.dtype), prob.param, prob.rows, g.data_ptr(), g.stride(0), o,
      c10::cuda::getCurrentCUDAStream()));
  return {grads[0], grads[1], grads[2], grads[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CUDA, m) {
  m.impl("kl_diag", &kl_diag_forward_cuda);
  m.impl("kl_diag_backward", &kl_diag_backward_cuda);
}

}  // namespace gaussian_kl
