#include "diag.h"

#include <ATen/ATen.h>
#include <ATen/TensorUtils.h>

#include <cmath>
#include <sstream>

namespace gaussian_kl {
namespace {

constexpr const char* kArgNames[4] = {"mu_p", "s_p", "mu_q", "s_q"};

}  // namespace

DiagParam parse_diag_param(c10::string_view param) {
  if (param == "std") return DiagParam::Std;
  if (param == "var") return DiagParam::Var;
  if (param == "logvar") return DiagParam::LogVar;
  if (param == "logstd") return DiagParam::LogStd;
  TORCH_CHECK_VALUE(
      false,
      "kl_diag: param must be one of 'std', 'var', 'logvar', 'logstd', got '",
      std::string(param),
      "'");
}

const char* diag_param_name(DiagParam param) {
  switch (param) {
    case DiagParam::Std:
      return "std";
    case DiagParam::Var:
      return "var";
    case DiagParam::LogVar:
      return "logvar";
    case DiagParam::LogStd:
      return "logstd";
  }
  return "?";
}

DiagProblem make_diag_problem(
    const at::Tensor& mu_p,
    const at::Tensor& s_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& s_q,
    c10::string_view param) {
  DiagProblem prob;
  prob.rows.param = parse_diag_param(param);
  TORCH_CHECK_VALUE(
      mu_q.has_value() == s_q.has_value(),
      "kl_diag: pass both mu_q and s_q, or neither (q = N(0, I))");
  const bool has_q = mu_q.has_value();
  const at::Tensor* args[4] = {
      &mu_p, &s_p, has_q ? &*mu_q : nullptr, has_q ? &*s_q : nullptr};

  TORCH_CHECK_VALUE(
      mu_p.dim() >= 1,
      "kl_diag: mu_p must have an event dimension (shape [*batch, D]), got shape ",
      shape_str(mu_p.sizes()));
  prob.dtype = mu_p.scalar_type();
  (void)scalar_kind(prob.dtype);
  for (int i = 1; i < 4; ++i) {
    if (!args[i]) continue;
    const at::Tensor& t = *args[i];
    TORCH_CHECK_VALUE(
        t.sizes() == mu_p.sizes(),
        "kl_diag (op level): ", kArgNames[i], " has shape ", shape_str(t.sizes()),
        " but mu_p has shape ", shape_str(mu_p.sizes()),
        "; the op expects inputs broadcast to one shape (gaussian_kl_cuda.kl_diag does this)");
    TORCH_CHECK_TYPE(
        t.scalar_type() == prob.dtype,
        "kl_diag: ", kArgNames[i], " has dtype ", t.scalar_type(), " but mu_p has ",
        prob.dtype);
    TORCH_CHECK_VALUE(
        t.device() == mu_p.device(),
        "kl_diag: ", kArgNames[i], " is on ", t.device(), " but mu_p is on ",
        mu_p.device());
  }

  const int64_t dim = mu_p.size(-1);
  prob.batch_shape.assign(mu_p.sizes().begin(), mu_p.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t b : prob.batch_shape) rows *= b;

  DiagRows& r = prob.rows;
  r.rows = rows;
  r.dim = dim;
  for (int i = 0; i < 4; ++i) {
    if (!args[i]) continue;
    prob.views[i] = as_rows(*args[i], rows, {dim});
    r.row_stride[i] = prob.views[i].stride(0);
    r.col_stride[i] = prob.views[i].stride(1);
  }
  r.mu_p = prob.views[0].data_ptr();
  r.s_p = prob.views[1].data_ptr();
  if (has_q) {
    r.mu_q = prob.views[2].data_ptr();
    r.s_q = prob.views[3].data_ptr();
  }
  return prob;
}

void raise_if_invalid_diag(const at::Tensor& out, const DiagProblem& prob) {
  const int64_t row = first_nan_row(out);
  if (row < 0) return;
  const bool positive = prob.rows.param == DiagParam::Std || prob.rows.param == DiagParam::Var;
  for (int i = 0; i < 4; ++i) {
    if (!prob.views[i].defined()) continue;
    const at::Tensor vals = prob.views[i].select(0, row).to(at::kCPU, at::kDouble).contiguous();
    const double* v = vals.const_data_ptr<double>();
    for (int64_t d = 0; d < vals.numel(); ++d) {
      const bool nonfinite = !std::isfinite(v[d]);
      const bool nonpos = (i == 1 || i == 3) && positive && !(v[d] > 0);
      if (!nonfinite && !nonpos) continue;
      std::ostringstream os;
      os << "kl_diag: " << kArgNames[i];
      if (i == 1 || i == 3) os << " (param='" << diag_param_name(prob.rows.param) << "')";
      os << " has " << (nonfinite ? "a non-finite value " : "a non-positive value ") << v[d]
         << " at batch index " << unravel(row, prob.batch_shape) << ", event index " << d
         << " (batch shape " << shape_str(prob.batch_shape) << ", event size " << prob.rows.dim
         << ")";
      if (nonpos) os << "; a " << diag_param_name(prob.rows.param) << " must be > 0";
      os << ". Pass check=False to get NaN for that row instead (no host sync).";
      TORCH_CHECK_VALUE(false, os.str());
    }
  }
  TORCH_CHECK_VALUE(
      false, "kl_diag: invalid input at batch index ", unravel(row, prob.batch_shape));
}

std::vector<at::Tensor> alloc_diag_grads(
    const DiagProblem& prob,
    const at::Tensor& like,
    c10::ArrayRef<bool> mask,
    DiagGradOut* out) {
  std::vector<int64_t> full(prob.batch_shape);
  full.push_back(prob.rows.dim);
  const std::vector<int64_t> shapes[4] = {full, full, full, full};
  const bool present[4] = {true, true, prob.views[2].defined(), prob.views[3].defined()};
  return alloc_grads(shapes, present, mask, like, out->grad);
}

}  // namespace gaussian_kl
