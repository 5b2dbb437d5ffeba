// Torch-facing CUDA entry points of the full-covariance KL ops: kl_full and
// kl_mixed (see the CPU file for Args/Returns).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../kl_full.h"
#include "kl_full_kernels.h"

namespace gaussian_kl {
namespace {

constexpr int64_t kBlock = 128;           // kThreads of kl_full_kernels.cu
constexpr int64_t kMaxThreads = 1 << 18;  // ~ a full H100/H200 (132 SMs x 2048)
constexpr int64_t kWsBytes = 256 << 20;   // workspace cap: fewer threads for large D

// Threads (a multiple of kBlock) and their workspace for `rows` rows; none
// for the pairs that run on lane groups.
at::Tensor workspace(const FullProblem& prob, int64_t* threads) {
  const auto acc = prob.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t per = kl_full_cuda_ws_per_thread(prob.kind[0], prob.kind[1], prob.rows);
  if (per == 0) {
    *threads = 0;
    return at::Tensor();
  }
  const int64_t bytes = per * (acc == at::kDouble ? 8 : 4);
  int64_t t = std::min<int64_t>(prob.rows.rows, std::max<int64_t>(1, kWsBytes / bytes));
  t = std::min<int64_t>(t, kMaxThreads);  // bounded by the thread count, not by B
  t = (t + kBlock - 1) / kBlock * kBlock;
  *threads = t;
  return at::empty({t * per}, prob.mu[0].options().dtype(acc));
}

// check=True costs one host sync.
at::Tensor forward(const FullProblem& prob, const at::Tensor& like, bool check) {
  at::Tensor out = at::empty(prob.batch_shape, like.options());
  if (prob.rows.rows > 0) {
    int64_t threads = 0;
    at::Tensor ws = workspace(prob, &threads);
    C10_CUDA_CHECK(kl_full_forward_cuda_launch(scalar_kind(prob.dtype), prob.kind[0], prob.kind[1],
                                               prob.rows, out.data_ptr(), ws.defined() ? ws.data_ptr() : nullptr, threads,
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
    int64_t threads = 0;
    at::Tensor ws = workspace(prob, &threads);
    C10_CUDA_CHECK(kl_full_backward_cuda_launch(scalar_kind(prob.dtype), prob.kind[0], prob.kind[1],
                                                prob.rows, g.data_ptr(), g.stride(0), o, ws.defined() ? ws.data_ptr() : nullptr,
                                                threads, c10::cuda::getCurrentCUDAStream()));
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
