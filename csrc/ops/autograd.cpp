// Autograd of the three forward ops (kl_diag, kl_full, kl_mixed), in C++:
// the backward node calls the native backward op with the mask of the
// gradients autograd asks for. This is the ordinary route (no torch.func
// transform active); under a transform the Python wrappers take the
// autograd.Function of gaussian_kl_cuda/_autograd.py instead, which functorch
// can transform (docs/design.md, "Derivatives and transforms"). A
// torch.library Python autograd wrapper here would cost ~40 us per forward and
// ~150 us per backward call, more than the kernels at small batches.
// Second derivatives: under create_graph=True (grad mode on in the backward)
// the backward ops are called through the dispatcher, so their autograd
// formula (_autograd.py, from the KL in torch ops) applies; otherwise they are
// called below autograd, straight to the kernels. Fake kernels: _ops.py.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <tuple>

namespace gaussian_kl {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

OptTensor opt(const at::Tensor& t) {
  return t.defined() ? OptTensor(t) : OptTensor();
}

// Saves the inputs, calls the backward op with the asked-for mask and
// returns one gradient per forward argument (nargs: 4 tensors + strings + check).
variable_list native_backward(AutogradContext* ctx, int nargs,
                              const std::function<Grads(const variable_list&, std::array<bool, 4>)>& call) {
  const variable_list saved = ctx->get_saved_variables();
  const bool has_q = saved[2].defined();
  // needs_input_grad counts the edges of the tensors given (an absent q has none).
  std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                              has_q && ctx->needs_input_grad(2), has_q && ctx->needs_input_grad(3)};
  variable_list out(nargs);
  if (!(mask[0] || mask[1] || mask[2] || mask[3])) return out;
  Grads g;
  if (at::GradMode::is_enabled()) {  // create_graph=True: record the backward op
    g = call(saved, mask);
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    g = call(saved, mask);
  }
  if (mask[0]) out[0] = std::get<0>(g);
  if (mask[1]) out[1] = std::get<1>(g);
  if (mask[2]) out[2] = std::get<2>(g);
  if (mask[3]) out[3] = std::get<3>(g);
  return out;
}

// kl_diag and kl_full: (mu_p, m_p, mu_q?, m_q?, param, check).
template <typename Names>
struct OneParamKL : public torch::autograd::Function<OneParamKL<Names>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu_p, const at::Tensor& m_p,
                            const OptTensor& mu_q, const OptTensor& m_q, c10::string_view param, bool check) {
    using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
                           c10::string_view, bool);
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(Names::forward, "").template typed<Sig>();
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = op.call(mu_p, m_p, mu_q, m_q, param, check);
    }
    ctx->save_for_backward({mu_p, m_p, mu_q.value_or(at::Tensor()), m_q.value_or(at::Tensor())});
    ctx->saved_data["param"] = std::string(param);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Sig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                      const OptTensor&, c10::string_view, std::array<bool, 4>);
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(Names::backward, "").template typed<Sig>();
    const std::string param = ctx->saved_data["param"].toStringRef();
    return native_backward(ctx, 6, [&](const variable_list& s, std::array<bool, 4> mask) {
      return op.call(grads[0], s[0], s[1], opt(s[2]), opt(s[3]), param, mask);
    });
  }
};

struct DiagNames {
  static constexpr const char* forward = "gaussian_kl::kl_diag";
  static constexpr const char* backward = "gaussian_kl::kl_diag_backward";
};
struct FullNames {
  static constexpr const char* forward = "gaussian_kl::kl_full";
  static constexpr const char* backward = "gaussian_kl::kl_full_backward";
};

// kl_mixed: (mu_p, m_p, mu_q, m_q, p_param, q_param, check).
struct MixedKL : public torch::autograd::Function<MixedKL> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu_p, const at::Tensor& m_p,
                            const at::Tensor& mu_q, const at::Tensor& m_q, c10::string_view p_param,
                            c10::string_view q_param, bool check) {
    using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           c10::string_view, c10::string_view, bool);
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_mixed", "").typed<Sig>();
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = op.call(mu_p, m_p, mu_q, m_q, p_param, q_param, check);
    }
    ctx->save_for_backward({mu_p, m_p, mu_q, m_q});
    ctx->saved_data["p_param"] = std::string(p_param);
    ctx->saved_data["q_param"] = std::string(q_param);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Sig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, c10::string_view, c10::string_view, std::array<bool, 4>);
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("gaussian_kl::kl_mixed_backward", "").typed<Sig>();
    const std::string p_param = ctx->saved_data["p_param"].toStringRef();
    const std::string q_param = ctx->saved_data["q_param"].toStringRef();
    return native_backward(ctx, 7, [&](const variable_list& s, std::array<bool, 4> mask) {
      return op.call(grads[0], s[0], s[1], s[2], s[3], p_param, q_param, mask);
    });
  }
};

template <typename Names>
at::Tensor one_param_autograd(const at::Tensor& mu_p, const at::Tensor& m_p, const OptTensor& mu_q,
                              const OptTensor& m_q, c10::string_view param, bool check) {
  return OneParamKL<Names>::apply(mu_p, m_p, mu_q, m_q, param, check);
}

at::Tensor mixed_autograd(const at::Tensor& mu_p, const at::Tensor& m_p, const at::Tensor& mu_q,
                          const at::Tensor& m_q, c10::string_view p_param, c10::string_view q_param,
                          bool check) {
  return MixedKL::apply(mu_p, m_p, mu_q, m_q, p_param, q_param, check);
}

}  // namespace

TORCH_LIBRARY_IMPL(gaussian_kl, Autograd, m) {
  m.impl("kl_diag", &one_param_autograd<DiagNames>);
  m.impl("kl_full", &one_param_autograd<FullNames>);
  m.impl("kl_mixed", &mixed_autograd);
}

}  // namespace gaussian_kl
