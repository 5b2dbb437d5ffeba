// The libtorch entry: the ops registered by libgaussian_kl, called through
// the dispatcher from C++ (no Python), against an ATen float64 closed form.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <optional>

namespace {

int g_pass = 0, g_fail = 0;

void check(bool ok, const char* what) {
  ok ? ++g_pass : ++g_fail;
  if (!ok) std::printf("FAIL %s\n", what);
}

at::Tensor ref_logvar(const at::Tensor& mp, const at::Tensor& lp, const at::Tensor& mq,
                      const at::Tensor& lq) {
  auto d = mq - mp;
  return 0.5 * ((lp - lq).exp() + d * d * (-lq).exp() - 1 + lq - lp).sum(-1);
}

}  // namespace

int main() {
  using Fwd = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                         const std::optional<at::Tensor>&, c10::string_view, bool);
  using Bwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      const std::optional<at::Tensor>&, c10::string_view, std::array<bool, 4>);
  auto fwd = c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_diag", "").typed<Fwd>();
  auto bwd =
      c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_diag_backward", "").typed<Bwd>();

  at::manual_seed(0);
  for (int64_t D : {3, 16, 45}) {
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    auto mp = at::randn({33, D}, opt), lp = at::randn({33, D}, opt) * 0.5;
    auto mq = at::randn({D}, opt), lq = at::randn({D}, opt) * 0.5;
    auto out = fwd.call(mp, lp, mq.expand({33, D}), lq.expand({33, D}), "logvar", true);
    check(at::allclose(out, ref_logvar(mp, lp, mq, lq), 1e-12, 1e-12), "forward vs ATen");
    auto out32 = fwd.call(mp.to(at::kFloat), lp.to(at::kFloat), std::nullopt, std::nullopt, "logvar", true);
    auto zero = at::zeros({D}, opt);
    check(at::allclose(out32.to(at::kDouble), ref_logvar(mp, lp, zero, zero), 1e-5, 1e-5),
          "forward float32 vs ATen, q = N(0, I)");
    // d/dmu_p = -(mu_q - mu_p) / vq; d/dlogvar_p = (exp(lp - lq) - 1) / 2.
    auto g = at::ones({33}, opt);
    auto grads = bwd.call(g, mp, lp, mq.expand({33, D}), lq.expand({33, D}), "logvar",
                          {true, true, false, false});
    check(at::allclose(std::get<0>(grads), -(mq - mp) * (-lq).exp(), 1e-12, 1e-12), "grad mu_p");
    check(at::allclose(std::get<1>(grads), 0.5 * ((lp - lq).exp() - 1), 1e-12, 1e-12), "grad logvar_p");
    check(std::get<2>(grads).numel() == 0 && std::get<3>(grads).numel() == 0, "unneeded grads empty");
  }
  // kl_full through the dispatcher, against the ATen closed form
  // 1/2 [tr(Sq^-1 Sp) + d^T Sq^-1 d - D + logdet Sq - logdet Sp].
  auto full = c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_full", "").typed<Fwd>();
  using Mixed = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           c10::string_view, c10::string_view, bool);
  auto mixed =
      c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_mixed", "").typed<Mixed>();
  for (int64_t D : {2, 4, 7, 40}) {
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    auto A = at::randn({5, D, D}, opt), B = at::randn({5, D, D}, opt);
    auto Sp = at::matmul(A, A.transpose(-1, -2)) / D + at::eye(D, opt);
    auto Sq = at::matmul(B, B.transpose(-1, -2)) / D + at::eye(D, opt);
    auto mp = at::randn({5, D}, opt), mq = at::randn({5, D}, opt);
    auto out = full.call(mp, Sp, mq, Sq, "cov", true);
    auto out_l = full.call(mp, at::linalg_cholesky(Sp), mq, at::linalg_cholesky(Sq), "scale_tril", true);
    auto Sqi = at::linalg_inv(Sq);
    auto d = (mq - mp).unsqueeze(-1);
    auto ref = 0.5 * ((Sqi * Sp.transpose(-1, -2)).sum({-1, -2}) +
                      at::matmul(at::matmul(d.transpose(-1, -2), Sqi), d).squeeze(-1).squeeze(-1) - double(D) +
                      std::get<1>(at::linalg_slogdet(Sq)) - std::get<1>(at::linalg_slogdet(Sp)));
    check(at::allclose(out, ref, 1e-10, 1e-10), "kl_full cov vs ATen");
    check(at::allclose(out_l, ref, 1e-10, 1e-10), "kl_full scale_tril vs ATen");
    // kl_mixed: full p against a diagonal q (var) equals kl_full with the
    // densified diagonal; and the reverse pair.
    auto v = at::rand({5, D}, opt) + 0.5;
    auto mixed_fd = mixed.call(mp, at::linalg_cholesky(Sp), mq, v, "scale_tril", "var", true);
    auto dense_fd = full.call(mp, Sp, mq, at::diag_embed(v), "cov", true);
    check(at::allclose(mixed_fd, dense_fd, 1e-10, 1e-10), "kl_mixed full-diag vs kl_full");
    auto mixed_df = mixed.call(mp, v.log(), mq, Sq, "logvar", "cov", true);
    auto dense_df = full.call(mp, at::diag_embed(v), mq, Sq, "cov", true);
    check(at::allclose(mixed_df, dense_df, 1e-10, 1e-10), "kl_mixed diag-full vs kl_full");
  }
  // Invalid input with check=True raises a c10::ValueError naming the argument.
  bool raised = false;
  try {
    auto s = at::ones({2, 3}, at::kFloat);
    s.index_put_({1, 2}, -1.0);
    fwd.call(at::zeros({2, 3}), s, std::nullopt, std::nullopt, "std", true);
  } catch (const c10::ValueError& e) {
    raised = std::string(e.what()).find("s_p (param='std')") != std::string::npos;
  }
  check(raised, "check=True raises ValueError naming s_p");
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
