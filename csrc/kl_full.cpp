#include "kl_full.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "kl_math.h"

namespace gaussian_kl {
namespace {

constexpr const char* kMuNames[2] = {"mu_p", "mu_q"};
constexpr const char* kMNames[2] = {"m_p", "m_q"};

const char* full_param_name(FullParam p) {
  return p == FullParam::Cov ? "cov" : "scale_tril";
}

}  // namespace

FullParam parse_full_param(c10::string_view param) {
  if (param == "scale_tril") return FullParam::ScaleTril;
  if (param == "cov") return FullParam::Cov;
  TORCH_CHECK_VALUE(
      false, "kl_full: param must be one of 'scale_tril', 'cov', got '", std::string(param), "'");
}

FullProblem make_full_problem(
    const at::Tensor& mu_p,
    const at::Tensor& m_p,
    const std::optional<at::Tensor>& mu_q,
    const std::optional<at::Tensor>& m_q,
    c10::string_view param,
    bool factor_shared_q) {
  FullProblem prob;
  prob.param = parse_full_param(param);
  TORCH_CHECK_VALUE(
      mu_q.has_value() == m_q.has_value(),
      "kl_full: pass both mu_q and m_q, or neither (q = N(0, I))");
  const bool has_q = mu_q.has_value();
  TORCH_CHECK_VALUE(
      mu_p.dim() >= 1, "kl_full: mu_p must have shape [*batch, D], got ", shape_str(mu_p.sizes()));
  const int64_t D = mu_p.size(-1);
  std::vector<int64_t> mshape(mu_p.sizes().begin(), mu_p.sizes().end());
  mshape.push_back(D);
  prob.dtype = mu_p.scalar_type();
  (void)scalar_kind(prob.dtype);
  const at::Tensor* mus[2] = {&mu_p, has_q ? &*mu_q : nullptr};
  const at::Tensor* ms[2] = {&m_p, has_q ? &*m_q : nullptr};
  for (int k = 0; k < (has_q ? 2 : 1); ++k) {
    TORCH_CHECK_VALUE(
        mus[k]->sizes() == mu_p.sizes(), "kl_full (op level): ", kMuNames[k], " has shape ",
        shape_str(mus[k]->sizes()), " but mu_p has shape ", shape_str(mu_p.sizes()),
        "; the op expects inputs broadcast to one shape (gaussian_kl_cuda.kl_full does this)");
    TORCH_CHECK_VALUE(
        ms[k]->sizes() == c10::IntArrayRef(mshape), "kl_full (op level): ", kMNames[k],
        " has shape ", shape_str(ms[k]->sizes()), ", expected ", shape_str(mshape));
    for (const at::Tensor* t : {mus[k], ms[k]}) {
      TORCH_CHECK_TYPE(t->scalar_type() == prob.dtype, "kl_full: inputs must share one dtype, got ",
                       t->scalar_type(), " and ", prob.dtype);
      TORCH_CHECK_VALUE(t->device() == mu_p.device(), "kl_full: inputs must be on one device, got ",
                        t->device(), " and ", mu_p.device());
    }
  }
  prob.batch_shape.assign(mu_p.sizes().begin(), mu_p.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t b : prob.batch_shape) rows *= b;
  FullRows& r = prob.rows;
  r.rows = rows;
  r.dim = D;
  for (int k = 0; k < (has_q ? 2 : 1); ++k) {
    prob.mu[k] = as_rows(*mus[k], rows, {D});
    prob.m[k] = as_rows(*ms[k], rows, {D, D});
    r.mu_rs[k] = prob.mu[k].stride(0);
    r.mu_cs[k] = prob.mu[k].stride(1);
    r.m_rs[k] = prob.m[k].stride(0);
    r.m_s0[k] = prob.m[k].stride(1);
    r.m_s1[k] = prob.m[k].stride(2);
  }
  r.mu_p = prob.mu[0].data_ptr();
  r.m_p = prob.m[0].data_ptr();
  if (has_q) {
    r.mu_q = prob.mu[1].data_ptr();
    r.m_q = prob.m[1].data_ptr();
    if (factor_shared_q && prob.param == FullParam::Cov && r.m_rs[1] == 0 && rows > 1 && D > 0) {
      // One Cholesky for the whole batch, in the accumulation type.
      const auto acc = prob.dtype == at::kDouble ? at::kDouble : at::kFloat;
      at::Tensor l = prob.m[1].select(0, 0).to(at::kCPU, acc).clone(at::MemoryFormat::Contiguous);
      bool ok = true;
      if (acc == at::kDouble) {
        ok = cholesky_lower<StdMath>(l.data_ptr<double>(), static_cast<int>(D));
      } else {
        ok = cholesky_lower<StdMath>(l.data_ptr<float>(), static_cast<int>(D));
      }
      ok = ok && at::isfinite(l.tril()).all().item<bool>();
      if (!ok) l.fill_(NAN);
      prob.lq_shared = l;
      r.lq_shared = l.data_ptr();
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
  const char* pname = full_param_name(prob.param);
  for (int k = 0; k < 2; ++k) {
    if (!prob.mu[k].defined()) continue;
    const at::Tensor mu = prob.mu[k].select(0, row).to(at::kCPU, at::kDouble);
    TORCH_CHECK_VALUE(at::isfinite(mu).all().item<bool>(), "kl_full: ", kMuNames[k],
                      " has a non-finite value", where, hint);
    const at::Tensor m = prob.m[k].select(0, row).to(at::kCPU, at::kDouble).tril();
    TORCH_CHECK_VALUE(at::isfinite(m).all().item<bool>(), "kl_full: ", kMNames[k], " (param='",
                      pname, "') has a non-finite value in its lower triangle", where, hint);
    if (prob.param == FullParam::ScaleTril) {
      const at::Tensor dg = m.diagonal();
      TORCH_CHECK_VALUE((dg > 0).all().item<bool>(), "kl_full: ", kMNames[k],
                        " (param='scale_tril') must have a positive diagonal, found ",
                        dg.min().item<double>(), where, hint);
    } else {
      const at::Tensor sym = m + m.tril(-1).transpose(0, 1);
      const at::Tensor info = std::get<1>(at::linalg_cholesky_ex(sym));
      TORCH_CHECK_VALUE(info.item<int64_t>() == 0, "kl_full: ", kMNames[k],
                        " (param='cov') is not positive definite", where, hint);
    }
  }
  TORCH_CHECK_VALUE(false, "kl_full: a covariance is not positive definite in float",
                    " precision", where, hint);
}

std::vector<at::Tensor> alloc_full_grads(
    const FullProblem& prob, const at::Tensor& like, c10::ArrayRef<bool> mask, FullGradOut* out) {
  std::vector<int64_t> vshape(prob.batch_shape), mshape(prob.batch_shape);
  vshape.push_back(prob.rows.dim);
  mshape.push_back(prob.rows.dim);
  mshape.push_back(prob.rows.dim);
  const std::vector<int64_t> shapes[4] = {vshape, mshape, vshape, mshape};
  const bool has_q = prob.mu[1].defined();
  const bool present[4] = {true, true, has_q, has_q};
  return alloc_grads(shapes, present, mask, like, out->grad);
}

}  // namespace gaussian_kl
