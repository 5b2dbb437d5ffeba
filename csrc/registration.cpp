// registration.cpp — every schema of the gaussian_kl library, in one place.
// Kernels are registered per backend (cpu/ops.cpp, cuda/ops.cpp) with
// TORCH_LIBRARY_IMPL, autograd in ops/autograd.cpp; fake kernels and the
// second derivatives from Python (gaussian_kl_cuda/_ops.py). The math of
// every op: docs/design.md.
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/kernels.h"

namespace {

// The CPU variant in use (cpu/kernels.h) and every variant this build has
// and this CPU runs.
std::string cpu_isa() {
  try {
    return gaussian_kl::cpu::kernels().isa;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

std::vector<std::string> cpu_isa_variants() {
  const gaussian_kl::cpu::Kernels* all[8];
  const int n = gaussian_kl::cpu::available_variants(all, 8);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.emplace_back(all[i]->isa);
  return out;
}

}  // namespace

TORCH_LIBRARY(gaussian_kl, m) {
  // KL(p || q) of diagonal Gaussians, one value per batch element.
  //   mu_p, s_p, mu_q, s_q: [*batch, D], one shape (broadcast views are fine);
  //   mu_q = s_q = None means q = N(0, I). param: std | var | logvar | logstd.
  //   check: raise ValueError naming the first invalid batch element (one
  //   host sync on CUDA); otherwise invalid rows are NaN.
  m.def(
      "kl_diag(Tensor mu_p, Tensor s_p, Tensor? mu_q, Tensor? s_q, str param, "
      "bool check) -> Tensor");
  // Gradients of sum(grad * kl_diag(...)) w.r.t. the inputs flagged in
  // output_mask, [*batch, D] each; empty tensors for the others.
  m.def(
      "kl_diag_backward(Tensor grad, Tensor mu_p, Tensor s_p, Tensor? mu_q, "
      "Tensor? s_q, str param, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // KL(p || q) of full-covariance Gaussians, one value per batch element.
  //   mu_p, mu_q: [*batch, D]; m_p, m_q: [*batch, D, D], one batch shape;
  //   mu_q = m_q = None means q = N(0, I). param: scale_tril (lower
  //   triangle read) | cov (lower triangle read, symmetric). check as above.
  m.def(
      "kl_full(Tensor mu_p, Tensor m_p, Tensor? mu_q, Tensor? m_q, str param, "
      "bool check) -> Tensor");
  // Gradients w.r.t. (mu_p, m_p, mu_q, m_q) where output_mask says so:
  // scale_tril gradients lower triangular, cov gradients symmetric.
  m.def(
      "kl_full_backward(Tensor grad, Tensor mu_p, Tensor m_p, Tensor? mu_q, "
      "Tensor? m_q, str param, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // KL(p || q) of Gaussians whose sides are of different kinds: full-diagonal
  // (O(D^2) per row: no factor of q, no solve), diagonal-full, and
  // scale_tril-cov / cov-scale_tril. m_p, m_q: [*batch, D, D] for a
  // scale_tril/cov side, [*batch, D] for a diagonal one; p_param, q_param:
  // scale_tril | cov | std | var | logvar | logstd. q is required (against
  // N(0, I) use kl_full or kl_diag). check as above.
  m.def(
      "kl_mixed(Tensor mu_p, Tensor m_p, Tensor mu_q, Tensor m_q, str p_param, str q_param, "
      "bool check) -> Tensor");
  // Gradients w.r.t. (mu_p, m_p, mu_q, m_q) where output_mask says so, each
  // the shape of its input; a diagonal side's w.r.t. its own param.
  m.def(
      "kl_mixed_backward(Tensor grad, Tensor mu_p, Tensor m_p, Tensor mu_q, Tensor m_q, "
      "str p_param, str q_param, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // The CPU kernel variant in use ("avx512", "avx2", "baseline" or
  // "portable"; GKL_CPU_ISA forces one), and every variant available here.
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("cpu_isa_variants() -> str[]", &cpu_isa_variants);
}
