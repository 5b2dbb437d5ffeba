// math/diag.h — the KL of diagonal Gaussians per dimension and its
// gradients (docs/design.md, "Diagonal"), used by the CPU row loops
// (cpu/diag_kernels.h) and the CUDA kernel (cuda/diag_device.h).
#pragma once

#include "problem.h"
#include "scalar.h"


GKL_NS_BEGIN

// ---------------------------------------------------------------------------
// Diagonal Gaussians
// ---------------------------------------------------------------------------
//
// Per dimension, with v = variance and delta = mu_q - mu_p,
//   2 KL_d = vp/vq - 1 - log(vp/vq) + delta^2/vq = phi(ell) + delta^2 / vq,
// ell = log vp - log vq. All parametrisations reduce to three numbers:
//   ell     log variance ratio (never formed as log(vp) - log(vq) near 1),
//   em1     vp/vq - 1 = expm1(ell), accurate near 0 (it is the gradient),
//   inv_vq  1 / vq.
// Without q (q = N(0, I)): vq = 1, ell = log vp.
template <typename T>
struct DiagRatio {
  T ell;
  T em1;
  T inv_vq;
  T inv_sq;  // 1 / sq for a std (1 without q); unused otherwise
  T phi;  // phi(ell); only filled by diag_ratio<..., /*WithPhi=*/true>
};

template <DiagParam P, bool HasQ, bool WithPhi, typename M, typename T>
GKL_INLINE DiagRatio<T> diag_ratio(T sp, T sq) {
  DiagRatio<T> o;
  if (P == DiagParam::LogVar || P == DiagParam::LogStd) {
    const T k = P == DiagParam::LogVar ? T(1) : T(2);
    o.ell = HasQ ? k * (sp - sq) : k * sp;
    if (WithPhi) {
      const ExpM1Phi<T> e = expm1_phi<M>(o.ell);
      o.em1 = e.em1;
      o.phi = e.phi;
    } else {
      o.em1 = M::expm1(o.ell);
    }
    o.inv_vq = HasQ ? M::exp(-k * sq) : T(1);
    return o;
  } else if (P == DiagParam::Var) {
    if (HasQ) {
      o.ell = log_ratio<M>(sp, sq, &o.em1);  // em1 = (vp - vq) / vq
      o.inv_vq = T(1) / sq;
    } else {
      o.ell = M::log(sp);  // log is accurate near 1: it reduces to log1p(sp-1)
      o.em1 = sp - T(1);
      o.inv_vq = T(1);
    }
  } else {  // Std: v = s^2, ell = 2 log(sp/sq), em1 = (sp/sq)^2 - 1 = d(2 + d)
    if (HasQ) {
      T d;
      o.ell = T(2) * log_ratio<M>(sp, sq, &d);
      o.em1 = d * (T(2) + d);
      o.inv_sq = T(1) / sq;
      o.inv_vq = o.inv_sq * o.inv_sq;
    } else {
      o.ell = T(2) * M::log(sp);
      o.em1 = (sp - T(1)) * (sp + T(1));
      o.inv_vq = T(1);
      o.inv_sq = T(1);
    }
  }
  if (WithPhi) o.phi = phi(o.ell, o.em1);
  return o;
}

// delta^2 / vq and delta / vq, with no inf * 0 for tiny but valid scales:
// for a std 1/sq is applied twice (1/sq^2 overflows below sq ~ 1e-19 in
// float, delta/sq does not); 1/sq and 1/vq are clamped to the largest finite
// value (only a denormal scale overflows them), so delta = 0 gives 0, not
// NaN.
template <DiagParam P, typename T>
GKL_INLINE void delta_terms(T delta, const DiagRatio<T>& r, T* t, T* dv) {
  if (P == DiagParam::Std) {
    const T is = r.inv_sq < kl_huge<T>() ? r.inv_sq : kl_huge<T>();  // denormal sq
    const T z = delta * is;
    *t = z * z;
    *dv = z * is;
  } else {
    const T iv = r.inv_vq < kl_huge<T>() ? r.inv_vq : kl_huge<T>();
    *t = delta * delta * iv;
    *dv = delta * iv;
  }
}

// NaN if one dimension's inputs are invalid, else +0: non-finite inputs
// (x - x is NaN for +-inf and NaN, exactly 0 otherwise: four subtractions,
// cheaper than abs/compare/select) and, for a std or a variance, a
// non-positive scale. Added to the term, it leaves valid values untouched.
template <DiagParam P, bool HasQ, typename T>
GKL_INLINE T diag_invalid_nan(T mp, T sp, T mq, T sq) {
  T z = (mp - mp) + (sp - sp);
  if (HasQ) z += (mq - mq) + (sq - sq);
  if (P == DiagParam::Std || P == DiagParam::Var) {
    const bool pos = HasQ ? (sp > T(0)) & (sq > T(0)) : (sp > T(0));
    z = pos ? z : kl_nan<T>();
  }
  return z;
}

// 2 * KL of one dimension: phi(ell) + delta^2 / vq, a sum of two
// non-negative terms (no cancellation, never negative). Invalid inputs give
// NaN, so a row with any invalid dimension sums to NaN and nothing else.
// The caller halves the row sum once.
template <DiagParam P, bool HasQ, typename M, typename T>
GKL_INLINE T diag_term2(T mp, T sp, T mq, T sq) {
  const DiagRatio<T> r = diag_ratio<P, HasQ, /*WithPhi=*/true, M>(sp, sq);
  const T delta = HasQ ? mq - mp : -mp;
  T t, dv;
  delta_terms<P>(delta, r, &t, &dv);
  return (r.phi + t) + diag_invalid_nan<P, HasQ>(mp, sp, mq, sq);
}

// 2 * KL of one dimension in double from float-or-narrower inputs: the slow
// path for a row whose float sum came out inf or NaN. Float has a narrow
// exponent range, so a valid row can overflow an intermediate (vp / vq
// below the smallest float, 1 / sq of a denormal std) although its KL is
// representable; in double every float input is a normal number and the
// straightforward log-space form cannot over- or underflow. Invalid inputs
// stay NaN; a KL beyond float's range stays inf when rounded back.
template <DiagParam P, bool HasQ>
GKL_INLINE double diag_term2_wide(double mp, double sp, double mq, double sq) {
  auto log_var = [](double s) {
    if (P == DiagParam::Std) return 2.0 * StdMath::log(s);
    if (P == DiagParam::Var) return StdMath::log(s);
    if (P == DiagParam::LogVar) return s;
    return 2.0 * s;  // LogStd
  };
  const double lvq = HasQ ? log_var(sq) : 0.0;
  const double ell = log_var(sp) - lvq;
  const double delta = HasQ ? mq - mp : -mp;
  return phi(ell, StdMath::expm1(ell)) + delta * delta * StdMath::exp(-lvq) +
      diag_invalid_nan<P, HasQ>(mp, sp, mq, sq);
}

// One dimension's inputs, widened to double.
struct DiagWide {
  double mp, sp, mq, sq;
};

// The float KL of a row, or, when it is not finite and the accumulator is
// float, the row recomputed by diag_term2_wide (load(d) -> the d-th inputs
// as a DiagWide). Costs one compare per row on the fast path.
template <DiagParam P, bool HasQ, typename A, typename Load>
GKL_INLINE A diag_row_finish(A kl, int64_t D, const Load& load) {
  if constexpr (sizeof(A) == 4) {
    if (!(kl < kl_huge<A>())) {
      double sum = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        const DiagWide x = load(d);
        sum += diag_term2_wide<P, HasQ>(x.mp, x.sp, x.mq, x.sq);
      }
      kl = static_cast<A>(0.5 * sum);
    }
  }
  return kl;
}

// d(KL)/d(v) -> d(KL)/d(param): multiply by dv/ds and by the 1/2 of KL.
//   Std: v = s^2 (dv/ds = 2s)    LogVar: v = e^s (dv/ds = v)
//   Var: v = s                   LogStd: v = e^{2s} (dv/ds = 2v)
// With dKL/dvp = (em1) / (2 vp) and dKL/dvq = -(em1 + t) / (2 vq) both reduce
// to   x * c(s)   with x = em1 or -(em1 + t), where c is below.
template <DiagParam P, typename T>
GKL_INLINE T diag_chain(T x, T s) {
  if (P == DiagParam::Std) return x / s;
  if (P == DiagParam::Var) return T(0.5) * x / s;
  if (P == DiagParam::LogVar) return T(0.5) * x;
  return x;  // LogStd
}

template <typename T>
struct DiagGrad {
  T mu_p, s_p, mu_q, s_q;
};

// Gradients of g * KL for one dimension (g: the row's incoming gradient).
//   dKL/dmu_p = -delta / vq,  dKL/dmu_q = delta / vq,
//   dKL/ds_p = chain(em1),    dKL/ds_q = chain(-(em1 + delta^2/vq)).
// Written with em1 = expm1(ell), so they are exactly 0 at p == q and
// accurate near it (no 1/vq - 1/vp cancellation).
template <DiagParam P, bool HasQ, typename M, typename T>
GKL_INLINE DiagGrad<T> diag_grad(T g, T mp, T sp, T mq, T sq) {
  const DiagRatio<T> r = diag_ratio<P, HasQ, /*WithPhi=*/false, M>(sp, sq);
  const T delta = HasQ ? mq - mp : -mp;
  T t, dv;
  delta_terms<P>(delta, r, &t, &dv);
  const T gdv = g * dv;
  DiagGrad<T> o;
  o.mu_p = -gdv;
  o.mu_q = gdv;
  o.s_p = diag_chain<P>(g * r.em1, sp);
  o.s_q = diag_chain<P>(-g * (r.em1 + t), sq);
  return o;
}



// The inputs of row `row` (without q, q's pointers alias p's and are
// never read).
template <typename T, bool HasQ>
struct DiagRowIn {
  const T *mp, *sp, *mq, *sq;
  GKL_INLINE DiagRowIn(const DiagRows& r, int64_t row) {
    mp = static_cast<const T*>(r.mu_p) + row * r.row_stride[0];
    sp = static_cast<const T*>(r.s_p) + row * r.row_stride[1];
    mq = HasQ ? static_cast<const T*>(r.mu_q) + row * r.row_stride[2] : mp;
    sq = HasQ ? static_cast<const T*>(r.s_q) + row * r.row_stride[3] : sp;
  }
};

// A diagonal side of a mixed pair (kl_mixed) enters the full-covariance
// code as its standard deviations on the diagonal of its factor.
template <typename M, typename A>
GKL_INLINE A diag_param_std(A s, DiagParam P) {
  switch (P) {
    case DiagParam::Std: return s;
    case DiagParam::Var: return M::sqrt(s);  // NaN for s < 0; s == 0 is caught as sd <= 0
    case DiagParam::LogVar: return M::exp(A(0.5) * s);
    default: return M::exp(s);  // LogStd
  }
}

// g * d(sd)/d(param): a gradient w.r.t. the standard deviation sd taken to
// the diagonal parameter it was computed from.
template <typename A>
GKL_INLINE A diag_std_chain(A g, A sd, DiagParam P) {
  switch (P) {
    case DiagParam::Std: return g;
    case DiagParam::Var: return A(0.5) * g / sd;
    case DiagParam::LogVar: return A(0.5) * g * sd;
    default: return g * sd;  // LogStd
  }
}

GKL_NS_END
