// Torch-facing CPU entry points of the full-covariance KL ops: kl_full (both
// sides scale_tril or both cov) and kl_mixed (sides of different kinds:
// full-diagonal, diagonal-full, scale_tril-cov, cov-scale_tril).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../kl_full.h"
#include "kl_full_kernels.h"

namespace gaussian_kl {
namespace {

int64_t grain_rows(int64_t dim) {
  // ~32K flops per task (a row costs ~D^3/3).
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim * dim * dim / 3, 1));
}

at::Tensor forward(const FullProblem& prob, const at::Tensor& like, bool check) {
  at::Tensor out = at::empty(prob.batch_shape, like.options());
  const ScalarKind kind = scalar_kind(prob.dtype);
  void* o = out.data_ptr();
  at::parallel_for(0, prob.rows.rows, grain_rows(prob.rows.dim), [&](int64_t b, int64_t e) {
    cpu::kl_full_forward_rows(kind, prob.kind[0], prob.kind[1], prob.rows, o, b, e);
  });
  if (check) raise_if_invalid_full(out, prob);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const FullProblem& prob, const at::Tensor& grad, const at::Tensor& like, std::array<bool, 4> mask) {
  TORCH_CHECK_VALUE(grad.sizes() == c10::IntArrayRef(prob.batch_shape), prob.op,
                    "_backward: grad must have the batch shape of the inputs");
  FullGradOut o;
  std::vector<at::Tensor> grads = alloc_full_grads(prob, like, mask, &o);
  const at::Tensor g = rows_view(grad.to(prob.dtype), prob.rows.rows);
  const void* gp = g.const_data_ptr();
  const int64_t gs = g.stride(0);
  const ScalarKind kind = scalar_kind(prob.dtype);
  at::parallel_for(0, prob.rows.rows, grain_rows(prob.rows.dim), [&](int64_t b, int64_t e) {
    cpu::kl_full_backward_rows(kind, prob.kind[0], prob.kind[1], prob.rows, gp, gs, o, b, e);
  });
  return {grads[0], grads[1], grads[2], grads[3]};
}

// Args: mu_p [*batch, D], m_p [*batch, D, D] (scale_tril: lower triangle read;
//   cov: lower triangle read as a symmetric matrix); mu_q, m_q the same or both
//   None (q = N(0, I): no factor of q, no solve). param: scale_tril | cov.
//   check: raise ValueError naming the first invalid batch element.
// Returns: KL(p || q) per batch element, shape [*batch].
at::Tensor kl_full_forward_cpu(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    bool check) {
  return forward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, true), mu_p, check);
}

// Args: grad [*batch], the forward's inputs, output_mask over (mu_p, m_p,
//   mu_q, m_q). Returns: the four gradients ([*batch, D] / [*batch, D, D],
//   lower triangular for scale_tril, symmetric for cov), empty if not asked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_full_backward_cpu(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    std::array<bool, 4> output_mask) {
  return backward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, true), grad, mu_p,
                  output_mask);
}

// Args: mu_p, mu_q [*batch, D]; m_p, m_q [*batch, D, D] for a scale_tril/cov
//   side, [*batch, D] for a diagonal side (p_param/q_param std | var | logvar
//   | logstd); the two params of different kinds. Returns: KL per batch element.
at::Tensor kl_mixed_forward_cpu(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const at::Tensor& mu_q,
    const at::Tensor& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    bool check) {
  return forward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, true), mu_p,
                 check);
}

// Returns: the gradients w.r.t. (mu_p, m_p, mu_q, m_q), each of its input's
//   shape, where output_mask says so (a diagonal side's in its own param).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_mixed_backward_cpu(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const at::Tensor& mu_q,
    const at::Tensor& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    std::array<bool, 4> output_mask) {
  return backward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, true), grad,
                  mu_p, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CPU, m) {
  m.impl("kl_full", &kl_full_forward_cpu);
  m.impl("kl_full_backward", &kl_full_backward_cpu);
  m.impl("kl_mixed", &kl_mixed_forward_cpu);
  m.impl("kl_mixed_backward", &kl_mixed_backward_cpu);
}

}  // namespace gaussian_kl
