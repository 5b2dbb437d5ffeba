#include "full.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "diag.h"

namespace gaussian_kl {
namespace {

constexpr const char* kMuNames[2] = {"mu_p", "mu_q"};
constexpr const char* kMNames[2] = {"m_p", "m_q"};

// One side's param: scale_tril | cov, or (allow_diag) a diagonal param.
FullParam parse_side(const char* op, const char* arg, c10::string_view param, bool allow_diag,
                     DiagParam* diag, const char** name) {
  if (param == "scale_tril") {
    *name = "scale_tril";
    return FullParam::ScaleTril;
  }
  if (param == "cov") {
    *name = "cov";
    return FullParam::Cov;
  }
  if (allow_diag) {
    for (const char* d : {"std", "var", "logvar", "logstd"}) {
      if (param == d) {
        *diag = parse_diag_param(param);
        *name = d;
        return FullParam::Diag;
      }
    }
  }
  TORCH_CHECK_VALUE(false, op, ": ", arg, " must be one of 'scale_tril', 'cov'",
                    allow_diag ? ", 'std', 'var', 'logvar', 'logstd'" : "", ", got '",
                    std::string(param), "'");
}

}  // namespace

FullProblem make_full_problem(
    const char* op,
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view p_param,
    c10::string_view q_param,
    bool factor_shared_q) {
  FullProblem prob;
  prob.op = op;
  const bool mixed = std::string(op) == "kl_mixed";
  DiagParam dparam = DiagParam::Std;
  prob.kind[0] = parse_side(op, mixed ? "p_param" : "param", p_param, mixed, &dparam, &prob.param_name[0]);
  prob.kind[1] = parse_side(op, mixed ? "q_param" : "param", q_param, mixed, &dparam, &prob.param_name[1]);
  if (mixed) {
    TORCH_CHECK_VALUE(prob.kind[0] != prob.kind[1],
                      "kl_mixed: p_param and q_param must be of different kinds (got '",
                      std::string(p_param), "' and '", std::string(q_param),
                      "'); use kl_full or kl_diag for a pair of one kind");
    TORCH_CHECK_VALUE(mu_q.has_value() && m_q.has_value(), "kl_mixed: q is required");
  }
  TORCH_CHECK_VALUE(
      mu_q.has_value() == m_q.has_value(), op, ": pass both mu_q and m_q, or neither (q = N(0, I))");
  const bool has_q = mu_q.has_value();
  TORCH_CHECK_VALUE(
      mu_p.dim() >= 1, op, ": mu_p must have shape [*batch, D], got ", shape_str(mu_p.sizes()));
  const int64_t D = mu_p.size(-1);
  std::vector<int64_t> vshape(mu_p.sizes().begin(), mu_p.sizes().end());
  std::vector<int64_t> mshape = vshape;
  mshape.push_back(D);
  prob.dtype = mu_p.scalar_type();
  (void)scalar_kind(prob.dtype);
  const at::Tensor* mus[2] = {&mu_p, has_q ? &*mu_q : nullptr};
  const at::Tensor* ms[2] = {&m_p, has_q ? &*m_q : nullptr};
  const int sides = has_q ? 2 : 1;
  for (int k = 0; k < sides; ++k) {
    const bool diag = prob.kind[k] == FullParam::Diag;
    TORCH_CHECK_VALUE(
        mus[k]->sizes() == mu_p.sizes(), op, " (op level): ", kMuNames[k], " has shape ",
        shape_str(mus[k]->sizes()), " but mu_p has shape ", shape_str(mu_p.sizes()),
        "; the op expects inputs broadcast to one shape (gaussian_kl_cuda.kl does this)");
    TORCH_CHECK_VALUE(
        ms[k]->sizes() == c10::IntArrayRef(diag ? vshape : mshape), op, " (op level): ", kMNames[k],
        " (param='", prob.param_name[k], "') has shape ", shape_str(ms[k]->sizes()), ", expected ",
        shape_str(diag ? vshape : mshape));
    for (const at::Tensor* t : {mus[k], ms[k]}) {
      TORCH_CHECK_TYPE(t->scalar_type() == prob.dtype, op, ": inputs must share one dtype, got ",
                       t->scalar_type(), " and ", prob.dtype);
      TORCH_CHECK_VALUE(t->device() == mu_p.device(), op, ": inputs must be on one device, got ",
                        t->device(), " and ", mu_p.device());
    }
  }
  prob.batch_shape.assign(mu_p.sizes().begin(), mu_p.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t b : prob.batch_shape) rows *= b;
  FullRows& r = prob.rows;
  r.rows = rows;
  r.dim = D;
  r.diag_param = dparam;
  r.kind[0] = prob.kind[0];
  r.kind[1] = prob.kind[1];
  for (int k = 0; k < sides; ++k) {
    const bool diag = prob.kind[k] == FullParam::Diag;
    prob.mu[k] = as_rows(*mus[k], rows, {D});
    r.mu_rs[k] = prob.mu[k].stride(0);
    r.mu_cs[k] = prob.mu[k].stride(1);
    if (diag) {
      prob.m[k] = as_rows(*ms[k], rows, {D});
      r.m_rs[k] = prob.m[k].stride(0);
      r.m_s0[k] = prob.m[k].stride(1);
      r.m_s1[k] = 0;
    } else {
      prob.m[k] = as_rows(*ms[k], rows, {D, D});
      r.m_rs[k] = prob.m[k].stride(0);
      r.m_s0[k] = prob.m[k].stride(1);
      r.m_s1[k] = prob.m[k].stride(2);
    }
  }
  r.mu_p = prob.mu[0].data_ptr();
  r.m_p = prob.m[0].data_ptr();
  if (has_q) {
    r.mu_q = prob.mu[1].data_ptr();
    r.m_q = prob.m[1].data_ptr();
    if (factor_shared_q && prob.kind[1] == FullParam::Cov && r.m_rs[1] == 0 && rows > 1 && D > 0 &&
        (prob.dtype == at::kFloat || prob.dtype == at::kDouble)) {
      // One Cholesky for the whole batch (no host sync: a failed factor is
      // NaN-filled, so every row comes out NaN and check=True then names
      // m_q from its own values).
      const at::Tensor sym = prob.m[1].select(0, 0).tril();
      auto [l, info] = at::linalg_cholesky_ex(sym + sym.tril(-1).mT());
      l = at::where(info.eq(0), l, at::full({}, NAN, l.options()));
      prob.lq_shared = l;
      r.m_q = l.data_ptr();
      r.m_s0[1] = l.stride(0);
      r.m_s1[1] = l.stride(1);
      r.kind[1] = FullParam::ScaleTril;
    }
  }
  return prob;
}

void raise_if_invalid_full(const at::Tensor& out, const FullProblem& prob) {
  const int64_t row = first_nan_row(out);
  if (row < 0) return;
  const std::string where = " at batch index " + unravel(row, prob.batch_shape) + " (batch shape " +
      shape_str(prob.batch_shape) + ", event size " + std::to_string(prob.rows.dim) + ")";
  const std::string hint = ". Pass check=False to get NaN for that row instead (no host sync).";
  for (int k = 0; k < 2; ++k) {
    if (!prob.mu[k].defined()) continue;
    const char* pname = prob.param_name[k];
    const at::Tensor mu = prob.mu[k].select(0, row).to(at::kCPU, at::kDouble);
    TORCH_CHECK_VALUE(at::isfinite(mu).all().item<bool>(), prob.op, ": ", kMuNames[k],
                      " has a non-finite value", where, hint);
    if (prob.kind[k] == FullParam::Diag) {
      const at::Tensor s = prob.m[k].select(0, row).to(at::kCPU, at::kDouble);
      TORCH_CHECK_VALUE(at::isfinite(s).all().item<bool>(), prob.op, ": ", kMNames[k], " (param='",
                        pname, "') has a non-finite value", where, hint);
      const bool positive = prob.rows.diag_param == DiagParam::Std || prob.rows.diag_param == DiagParam::Var;
      TORCH_CHECK_VALUE(!positive || (s > 0).all().item<bool>(), prob.op, ": ", kMNames[k], " (param='",
                        pname, "') must be positive, found ", s.min().item<double>(), where, hint);
      continue;
    }
    const at::Tensor m = prob.m[k].select(0, row).to(at::kCPU, at::kDouble).tril();
    TORCH_CHECK_VALUE(at::isfinite(m).all().item<bool>(), prob.op, ": ", kMNames[k], " (param='",
                      pname, "') has a non-finite value in its lower triangle", where, hint);
    if (prob.kind[k] == FullParam::ScaleTril) {
      const at::Tensor dg = m.diagonal();
      TORCH_CHECK_VALUE((dg > 0).all().item<bool>(), prob.op, ": ", kMNames[k],
                        " (param='scale_tril') must have a positive diagonal, found ",
                        dg.min().item<double>(), where, hint);
    } else {
      const at::Tensor sym = m + m.tril(-1).transpose(0, 1);
      const at::Tensor info = std::get<1>(at::linalg_cholesky_ex(sym));
      TORCH_CHECK_VALUE(info.item<int64_t>() == 0, prob.op, ": ", kMNames[k],
                        " (param='cov') is not positive definite", where, hint);
    }
  }
  TORCH_CHECK_VALUE(false, prob.op, ": a covariance is not positive definite in float",
                    " precision, or a scale under- or overflows", where, hint);
}

std::vector<at::Tensor> alloc_full_grads(
    const FullProblem& prob, const at::Tensor& like, c10::ArrayRef<bool> mask, FullGradOut* out) {
  TORCH_CHECK_VALUE(mask.size() == 4, prob.op, "_backward: output_mask must have 4 entries");
  std::vector<int64_t> vshape(prob.batch_shape), mshape(prob.batch_shape);
  vshape.push_back(prob.rows.dim);
  mshape.push_back(prob.rows.dim);
  mshape.push_back(prob.rows.dim);
  const std::vector<int64_t> shapes[4] = {
      vshape, prob.kind[0] == FullParam::Diag ? vshape : mshape,
      vshape, prob.kind[1] == FullParam::Diag ? vshape : mshape};
  const bool has_q = prob.mu[1].defined();
  // A matrix input stored column-major per matrix (packed: strides D*D, 1, D,
  // as torch.linalg.cholesky returns) gets its gradient in that layout, so
  // that autograd does not copy it (the gradient layout contract); those are
  // allocated below, the others by alloc_grads.
  const int64_t D = prob.rows.dim;
  bool col[4] = {false, false, false, false};
  for (int k = 0; k < 2; ++k) {
    const at::Tensor& m = prob.m[k];
    col[2 * k + 1] = mask[2 * k + 1] && prob.kind[k] != FullParam::Diag && D >= 2 &&
                     m.defined() && (m.size(0) <= 1 || m.stride(0) == D * D) && m.stride(1) == 1 &&
                     m.stride(2) == D;
  }
  const bool present[4] = {true, !col[1], has_q, has_q && !col[3]};
  std::vector<at::Tensor> grads = alloc_grads(shapes, present, mask, like, out->grad);
  for (int o = 1; o < 4; o += 2) {
    if (!col[o]) continue;
    std::vector<int64_t> st(mshape.size());
    int64_t step = D * D;
    st[st.size() - 2] = 1;
    st[st.size() - 1] = D;
    for (int64_t i = static_cast<int64_t>(st.size()) - 3; i >= 0; --i) {
      st[i] = step;
      step *= mshape[i];
    }
    grads[o] = at::empty_strided(mshape, st, like.options());
    out->grad[o] = grads[o].data_ptr();
    out->col_major[o] = true;
  }
  return grads;
}

}  // namespace gaussian_kl
