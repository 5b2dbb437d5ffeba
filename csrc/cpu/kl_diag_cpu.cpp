// Torch-facing CPU entry points of the diagonal KL: argument checks, output
// allocation, at::parallel_for over rows. The row kernels are in
// kl_diag_{forward,backward}_kernels.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../kl_diag.h"
#include "kl_diag_kernels.h"

namespace gaussian_kl {
namespace {

int64_t grain_rows(int64_t dim) {
  // ~32K elements per task: enough to amortise the fork, small enough to
  // spread a 1e5-element problem over the cores.
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1));
}

// Args: mu_p, s_p [*batch, D]; mu_q, s_q [*batch, D] or both None (q = N(0, I),
//   a dedicated kernel that never reads q). All one dtype and device; broadcast
//   views (stride 0) are read in place. param: std | var | logvar | logstd.
//   check: raise ValueError at the first invalid batch element.
// Returns: KL(p || q) per batch element, shape [*batch], dtype of the inputs.
at::Tensor kl_diag_forward_cpu(
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& s_q,
    c10::string_view param,
    bool check) {
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  at::Tensor out = at::empty(prob.batch_shape, mu_p.options());
  const DiagRows& r = prob.rows;
  const ScalarKind kind = scalar_kind(prob.dtype);
  void* o = out.data_ptr();
  at::parallel_for(0, r.rows, grain_rows(r.dim), [&](int64_t b, int64_t e) {
    cpu::kl_diag_forward_rows(kind, prob.param, r, o, b, e);
  });
  if (check) raise_if_invalid_diag(out, prob);
  return out;
}

// Args: grad [*batch] (any strides, e.g. an expanded scalar), the forward's
//   inputs and param, output_mask: which of (mu_p, s_p, mu_q, s_q) to
//   differentiate.
// Returns: four gradients, [*batch, D] contiguous where asked for, empty
//   tensors otherwise (and for mu_q/s_q when q is N(0, I)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_diag_backward_cpu(
    const at::Tensor& grad,
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& s_q,
    c10::string_view param,
    std::array<bool, 4> output_mask) {
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  TORCH_CHECK_VALUE(
      grad.sizes() == c10::IntArrayRef(prob.batch_shape),
      "kl_diag_backward: grad must have the batch shape of the inputs");
  DiagGradOut o;
  std::vector<at::Tensor> grads = alloc_diag_grads(prob, mu_p, output_mask, &o);
  const DiagRows& r = prob.rows;
  const at::Tensor g = rows_view(grad.to(prob.dtype), r.rows);
  const void* gp = g.const_data_ptr();
  const int64_t gs = g.stride(0);
  const ScalarKind kind = scalar_kind(prob.dtype);
  if (r.dim > 0) {
    at::parallel_for(0, r.rows, grain_rows(r.dim), [&](int64_t b, int64_t e) {
      cpu::kl_diag_backward_rows(kind, prob.param, r, gp, gs, o, b, e);
    });
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CPU, m) {
  m.impl("kl_diag", &kl_diag_forward_cpu);
  m.impl("kl_diag_backward", &kl_diag_backward_cpu);
}

}  // namespace gaussian_kl
