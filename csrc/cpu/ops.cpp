// cpu/ops.cpp — the CPU entry points of every op: argument checks and
// views (ops/), output allocation, at::parallel_for over rows, and the
// kernels of the CPU variant in use (cpu/kernels.h). Every op's Args and
// Returns are in csrc/registration.cpp.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "../ops/diag.h"
#include "../ops/full.h"
#include "kernels.h"

namespace gaussian_kl {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// ~32K elements (diag) or ~32K flops (full: a row costs ~D^3 / 3) per task:
// enough to amortise the fork, small enough to spread a 1e5-element
// problem over the cores.
int64_t diag_grain(int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1)); }
int64_t full_grain(int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim * dim * dim / 3, 1)); }

const cpu::Kernels& kern() {
  try {
    return cpu::kernels();
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

at::Tensor kl_diag_cpu(const at::Tensor& mu_p, const at::Tensor& s_p, const std::optional<at::Tensor>& mu_q,
                       const std::optional<at::Tensor>& s_q, c10::string_view param, bool check) {
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  const cpu::Kernels& k = kern();
  at::Tensor out = at::empty(prob.batch_shape, mu_p.options());
  const ScalarKind kind = scalar_kind(prob.dtype);
  void* o = out.data_ptr();
  at::parallel_for(0, prob.rows.rows, diag_grain(prob.rows.dim),
                   [&](int64_t b, int64_t e) { k.diag_for(kind, prob.rows).forward(kind, prob.rows, o, b, e); });
  if (check) raise_if_invalid_diag(out, prob);
  return out;
}

Grads kl_diag_backward_cpu(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& s_p,
                           const std::optional<at::Tensor>& mu_q, const std::optional<at::Tensor>& s_q,
                           c10::string_view param, std::array<bool, 4> output_mask) {
  const DiagProblem prob = make_diag_problem(mu_p, s_p, mu_q, s_q, param);
  const cpu::Kernels& k = kern();
  const at::Tensor g = grad_rows("kl_diag", grad, mu_p, prob.batch_shape, prob.dtype, prob.rows.rows);
  DiagGradOut o;
  std::vector<at::Tensor> grads = alloc_diag_grads(prob, mu_p, output_mask, &o);
  const void* gp = g.const_data_ptr();
  const int64_t gs = g.stride(0);
  const ScalarKind kind = scalar_kind(prob.dtype);
  if (prob.rows.dim > 0) {
    at::parallel_for(0, prob.rows.rows, diag_grain(prob.rows.dim),
                     [&](int64_t b, int64_t e) { k.diag_for(kind, prob.rows).backward(kind, prob.rows, gp, gs, o, b, e); });
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

at::Tensor full_forward(const FullProblem& prob, const at::Tensor& like, bool check) {
  const cpu::Kernels& k = kern();
  at::Tensor out = at::empty(prob.batch_shape, like.options());
  const ScalarKind kind = scalar_kind(prob.dtype);
  void* o = out.data_ptr();
  at::parallel_for(0, prob.rows.rows, full_grain(prob.rows.dim),
                   [&](int64_t b, int64_t e) { k.full.forward(kind, prob.rows, o, b, e); });
  if (check) raise_if_invalid_full(out, prob);
  return out;
}

Grads full_backward(const FullProblem& prob, const at::Tensor& grad, const at::Tensor& like,
                    std::array<bool, 4> mask) {
  const cpu::Kernels& k = kern();
  const at::Tensor g = grad_rows(prob.op, grad, like, prob.batch_shape, prob.dtype, prob.rows.rows);
  FullGradOut o;
  std::vector<at::Tensor> grads = alloc_full_grads(prob, like, mask, &o);
  const void* gp = g.const_data_ptr();
  const int64_t gs = g.stride(0);
  const ScalarKind kind = scalar_kind(prob.dtype);
  if (prob.rows.dim > 0) {
    at::parallel_for(0, prob.rows.rows, full_grain(prob.rows.dim),
                     [&](int64_t b, int64_t e) { k.full.backward(kind, prob.rows, gp, gs, o, b, e); });
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

at::Tensor kl_full_cpu(const at::Tensor& mu_p, const at::Tensor& m_p, const std::optional<at::Tensor>& mu_q,
                       const std::optional<at::Tensor>& m_q, c10::string_view param, bool check) {
  return full_forward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, true), mu_p, check);
}

Grads kl_full_backward_cpu(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& m_p,
                           const std::optional<at::Tensor>& mu_q, const std::optional<at::Tensor>& m_q,
                           c10::string_view param, std::array<bool, 4> output_mask) {
  return full_backward(make_full_problem("kl_full", mu_p, m_p, mu_q, m_q, param, param, false), grad, mu_p,
                       output_mask);
}

at::Tensor kl_mixed_cpu(const at::Tensor& mu_p, const at::Tensor& m_p, const at::Tensor& mu_q,
                        const at::Tensor& m_q, c10::string_view p_param, c10::string_view q_param, bool check) {
  return full_forward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, true), mu_p, check);
}

Grads kl_mixed_backward_cpu(const at::Tensor& grad, const at::Tensor& mu_p, const at::Tensor& m_p,
                            const at::Tensor& mu_q, const at::Tensor& m_q, c10::string_view p_param,
                            c10::string_view q_param, std::array<bool, 4> output_mask) {
  return full_backward(make_full_problem("kl_mixed", mu_p, m_p, mu_q, m_q, p_param, q_param, false), grad, mu_p,
                       output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, CPU, m) {
  m.impl("kl_diag", &kl_diag_cpu);
  m.impl("kl_diag_backward", &kl_diag_backward_cpu);
  m.impl("kl_full", &kl_full_cpu);
  m.impl("kl_full_backward", &kl_full_backward_cpu);
  m.impl("kl_mixed", &kl_mixed_cpu);
  m.impl("kl_mixed_backward", &kl_mixed_backward_cpu);
}

}  // namespace gaussian_kl
