// kl_math.h — the math of DESIGN §2, written once.
//
// Every function here is a C10_HOST_DEVICE inline template used unchanged by
// the CPU kernels (csrc/cpu), the CUDA kernels (csrc/cuda) and the C++ tests
// (tests/cpp). It includes only c10's macro header and <cmath>, so a .cu file
// that includes it compiles in ~2 s instead of ~50 s through torch's headers.
//
// Elementary functions come from a policy `M` (M::exp, M::expm1, M::log,
// M::sqrt). StdMath below forwards to libm / CUDA's math library; the CPU
// float kernels pass a branch-free polynomial policy (cpu/fast_math.h) that
// the compiler can vectorise. The formulas are the same either way.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GKL_INLINE C10_HOST_DEVICE __forceinline__
#else
// Forced inlining matters on the CPU: the kernels are compiled once per
// instruction set (target_clones), and only inlined math is vectorised for it.
#define GKL_INLINE C10_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace gaussian_kl {

// Parametrisation of a diagonal covariance. The integer values are part of
// the op ABI shared by the CPU and CUDA launchers.
enum class DiagParam : int { Std = 0, Var = 1, LogVar = 2, LogStd = 3 };

// Accumulation type: half types are computed and summed in float32 (their
// 10/7-bit mantissas cannot hold a sum over D terms), float in float,
// double in double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// Elementary functions from libm (host) or CUDA's math library (device).
struct StdMath {
  static GKL_INLINE float exp(float x) { return ::expf(x); }
  static GKL_INLINE float expm1(float x) { return ::expm1f(x); }
  static GKL_INLINE float log(float x) { return ::logf(x); }
  static GKL_INLINE double exp(double x) { return ::exp(x); }
  static GKL_INLINE double expm1(double x) { return ::expm1(x); }
  static GKL_INLINE double log(double x) { return ::log(x); }
  static GKL_INLINE float sqrt(float x) { return ::sqrtf(x); }
  static GKL_INLINE double sqrt(double x) { return ::sqrt(x); }
};

// Element <-> accumulator conversions. A backend specialises them for its
// half types where a plain cast is not available (cuda/half_convert.cuh).
template <typename S>
GKL_INLINE typename AccType<S>::type kl_load(const S& x) {
  return static_cast<typename AccType<S>::type>(x);
}
template <typename S, typename A>
GKL_INLINE S kl_store(A x) {
  return static_cast<S>(x);
}

template <typename T>
GKL_INLINE T kl_abs(T x) {
  return x < T(0) ? -x : x;
}

template <typename T>
GKL_INLINE T kl_min(T x, T y) {
  return x < y ? x : y;
}

// Largest finite value (a plain compare against it vectorises where
// std::isfinite may not).
template <typename T>
GKL_INLINE T kl_max();
template <>
GKL_INLINE float kl_max<float>() {
  return 3.40282347e+38f;
}
template <>
GKL_INLINE double kl_max<double>() {
  return 1.7976931348623157e+308;
}

template <typename T>
GKL_INLINE T kl_nan() {
  return static_cast<T>(NAN);
}

// phi(x) = e^x - 1 - x >= 0, the per-dimension KL of a log-variance ratio x.
// For |x| < 1/2, expm1(x) - x loses ~log2(2/|x|) bits to cancellation (a
// relative error of 1e-3 at KL ~ 1e-8 in float32), so it is summed as its
// Taylor series x^2 (1/2 + x/6 + ...): every term is tiny and positive-led,
// truncation error below half an ulp (8 terms for float, 16 for double).
constexpr double kl_inv_factorial(int k) {
  return k <= 1 ? 1.0 : kl_inv_factorial(k - 1) / k;
}

// Horner evaluation of sum_{k=K}^{N} x^(k-K) / k!, coefficients folded at
// compile time.
template <typename T, int K, int N>
struct ExpTail {
  static GKL_INLINE T eval(T x) {
    return T(kl_inv_factorial(K)) + x * ExpTail<T, K + 1, N>::eval(x);
  }
};
template <typename T, int N>
struct ExpTail<T, N, N> {
  static GKL_INLINE T eval(T) { return T(kl_inv_factorial(N)); }
};

template <typename T>
GKL_INLINE T phi_series(T x) {
  constexpr int kLast = sizeof(T) == 4 ? 9 : 17;  // highest power of x kept
  return x * x * ExpTail<T, 2, kLast>::eval(x);
}

template <typename T>
GKL_INLINE T phi(T x, T em1 /* expm1(x) */) {
  // x = +inf (a variance ratio that overflows): phi = +inf, not inf - inf.
  return kl_abs(x) < T(0.5) ? phi_series(x) : (x <= kl_max<T>() ? em1 - x : x);
}

template <typename T>
struct ExpM1Phi {
  T em1;  // expm1(x)
  T phi;  // expm1(x) - x
};

// expm1(x) and phi(x) together. A math policy may provide a fused version
// (cpu/fast_math.h shares one polynomial between them); otherwise M::expm1
// plus the series above.
template <typename M, typename T, typename = void>
struct HasFusedExpM1Phi : std::false_type {};
template <typename M, typename T>
struct HasFusedExpM1Phi<M, T, decltype((void)M::expm1_phi(T(0), (T*)nullptr))> : std::true_type {};

template <typename M, typename T>
GKL_INLINE ExpM1Phi<T> expm1_phi(T x) {
  ExpM1Phi<T> o;
  if constexpr (HasFusedExpM1Phi<M, T>::value) {
    o.em1 = M::expm1_phi(x, &o.phi);
  } else {
    o.em1 = M::expm1(x);
    o.phi = phi(x, o.em1);
  }
  return o;
}

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

// log(a / b) for a, b > 0, accurate in relative terms everywhere, with one
// log evaluation and one division. With r = a/b and d = (a - b)/b (a - b is
// exact near 1, Sterbenz, and only rounded relative to itself above 1/2):
//   r >= 1/2:  log1p(d) = log(u) + (d - (u - 1)) / u,  u = 1 + d rounded.
//              The second term restores what rounding 1 + d lost (< ulp(u)).
//              It matters only for |d| < 1/2, where u in (1/2, 3/2) and the
//              "/ u" changes it by less than half an ulp of the result, so
//              it is dropped; beyond, the whole term is below eps relative.
//   r <  1/2:  log(r), no cancellation (d would have lost r's low bits).
template <typename M, typename T>
GKL_INLINE T log_ratio_inv(T a, T b, T inv_b /* 1 / b */, T* ratio_minus_one) {
  const T r = a * inv_b;
  const T d = (a - b) * inv_b;
  *ratio_minus_one = d;
  const T u = T(1) + d;
  const T x = r < T(0.5) ? r : u;
  const T c = kl_abs(d) < T(0.5) ? d - (u - T(1)) : T(0);
  return M::log(x) + c;
}

template <typename M, typename T>
GKL_INLINE T log_ratio(T a, T b, T* ratio_minus_one) {
  return log_ratio_inv<M>(a, b, T(1) / b, ratio_minus_one);
}

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
    const T is = r.inv_sq < kl_max<T>() ? r.inv_sq : kl_max<T>();  // denormal sq
    const T z = delta * is;
    *t = z * z;
    *dv = z * is;
  } else {
    const T iv = r.inv_vq < kl_max<T>() ? r.inv_vq : kl_max<T>();
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
    if (!(kl < kl_max<A>())) {
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


// ---------------------------------------------------------------------------
// Full covariance
// ---------------------------------------------------------------------------
//
// Per batch element, with Lp, Lq lower Cholesky factors, delta = mu_q - mu_p,
// A = Lq^-1 Lp (lower triangular, A_ii = Lp_ii / Lq_ii), b = Lq^-1 delta:
//   2 KL = sum_{i>j} A_ij^2 + sum_i phi(2 log A_ii) + |b|^2,
// a sum of non-negative terms. A is obtained as I + E with
// E = Lq^-1 (Lp - Lq): Lp - Lq is exact where p ~ q, so the small
// off-diagonal A_ij come out with relative accuracy (forming Lq^-1 Lp
// directly would cancel), and phi(2 log A_ii) is the diagonal "std" term
// with sp = Lp_ii, sq = Lq_ii (log1p form). Matrices are row-major D x D
// buffers with leading dimension D; only the lower triangle is used.

// phi(2 log A_ii) for A_ii = lp / lq, given inv_lq = 1 / lq (the solves have
// it): diag_term2<Std> without the mean terms, the same value for valid
// inputs. NaN for a non-positive lp or lq; a non-finite input comes out
// non-finite (inf or NaN), which the caller turns into NaN.
// A math policy may provide phi_2log(r, d) = phi(2 log r) from r and
// d = r - 1 (cpu/fast_math.h: one range reduction, three selects), for T
// exactly (FastMath's float version must not take doubles by conversion).
template <typename M, typename T, typename = void>
struct HasPhi2Log : std::false_type {};
template <typename M, typename T>
struct HasPhi2Log<M, T, std::enable_if_t<std::is_same<decltype(M::phi_2log(T(1), T(0))), T>::value>>
    : std::true_type {};

template <typename M, typename T>
GKL_INLINE T full_diag_term2(T lp, T lq, T inv_lq) {
  T v;
  if constexpr (HasPhi2Log<M, T>::value) {
    v = M::phi_2log(lp * inv_lq, (lp - lq) * inv_lq);
  } else {
    T d;
    const T ell = T(2) * log_ratio_inv<M>(lp, lq, inv_lq, &d);
    v = phi(ell, d * (T(2) + d));
  }
  return kl_min(lp, lq) > T(0) ? v : kl_nan<T>();
}

// sum_{j < n} f(j) in L independent lanes summed in a fixed tree: the loop
// vectorises (a single float accumulator would serialise on the add
// latency), and the order depends only on n.
template <int L, typename A, typename F>
GKL_INLINE A lane_sum(int n, const F& f) {
  A acc[L];
  for (int k = 0; k < L; ++k) acc[k] = A(0);
  int j = 0;
  for (; j + L <= n; j += L) {
    for (int k = 0; k < L; ++k) acc[k] += f(j + k);
  }
  for (int k = 0; j + k < n; ++k) acc[k] += f(j + k);
  for (int w = L / 2; w > 0; w >>= 1) {
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  }
  return acc[0];
}

// Lanes for the dot products of the row routines below: 16 on the host for
// scalar T (a serial sum waits on the add latency at every term), 1 (a plain
// serial sum) on the device and for the batch kernels' vector element type.
template <typename T>
GKL_INLINE constexpr int dot_lanes() {
#ifdef __CUDA_ARCH__
  return 1;
#else
  return std::is_arithmetic<T>::value ? 16 : 1;
#endif
}

// In-place Cholesky of the lower triangle of a (upper triangle untouched).
// Returns false if a pivot is not positive or not finite (not PD / NaN).
template <typename M, typename T>
GKL_INLINE bool cholesky_lower(T* a, int D) {
  bool ok = true;
  for (int j = 0; j < D; ++j) {
    const T* aj = a + j * D;
    const T s = aj[j] - lane_sum<dot_lanes<T>(), T>(j, [&](int k) { return aj[k] * aj[k]; });
    ok = ok & (s > T(0)) & (s <= kl_max<T>());
    const T ljj = M::sqrt(s > T(0) ? s : T(0));
    a[j * D + j] = ljj;
    const T inv = T(1) / ljj;
    for (int i = j + 1; i < D; ++i) {
      const T* ai = a + i * D;
      a[i * D + j] = (ai[j] - lane_sum<dot_lanes<T>(), T>(j, [&](int k) { return ai[k] * aj[k]; })) * inv;
    }
  }
  return ok;
}

// x <- L^-1 x (forward substitution), x of length D.
template <typename T>
GKL_INLINE void trsv_lower(const T* L, T* x, int D) {
  for (int i = 0; i < D; ++i) {
    const T* li = L + i * D;
    x[i] = (x[i] - lane_sum<dot_lanes<T>(), T>(i, [&](int k) { return li[k] * x[k]; })) / li[i];
  }
}

// x <- L^-T x (back substitution), x of length D. Column sweep over the
// rows of L: once x_i is final, x_k -= L_ik x_i for k < i (a unit-stride
// axpy; the dot-product form walks a column of L, a cache line per term).
template <typename T>
GKL_INLINE void trsv_lower_t(const T* L, T* x, int D) {
  for (int i = D - 1; i >= 0; --i) {
    const T* li = L + i * D;
    const T xi = x[i] / li[i];
    x[i] = xi;
    for (int k = 0; k < i; ++k) x[k] -= li[k] * xi;
  }
}

// E <- Lq^-1 (Lp - Lq), lower triangular. Row-oriented forward substitution:
// row i of E is (Delta_i - sum_{k<i} Lq_ik E_k) / Lq_ii, and every update is
// a unit-stride axpy over j <= k (vectorises; no column walks).
template <typename T>
GKL_INLINE void solve_e(const T* Lp, const T* Lq, T* E, int D) {
  for (int i = 0; i < D; ++i) {
    T* e = E + i * D;
    for (int j = 0; j <= i; ++j) e[j] = Lp[i * D + j] - Lq[i * D + j];
    for (int k = 0; k < i; ++k) {
      const T l = Lq[i * D + k];
      const T* ek = E + k * D;
      for (int j = 0; j <= k; ++j) e[j] -= l * ek[j];
    }
    const T inv = T(1) / Lq[i * D + i];
    for (int j = 0; j <= i; ++j) e[j] *= inv;
  }
}

// X <- tril(Lq^-T R) for a lower-triangular or symmetric R (only its lower
// triangle is read). Row-oriented back substitution: row i of X (j <= i)
// is (R_i - sum_{k>i} Lq_ki X_k) / Lq_ii, unit-stride axpys over j <= i;
// rows k > i are final when row i is computed. X may alias R. Upper
// triangle of X set to 0.
template <typename T>
GKL_INLINE void tril_solve_lt(const T* Lq, const T* R, T* X, int D) {
  for (int i = D - 1; i >= 0; --i) {
    T* x = X + i * D;
    for (int j = 0; j <= i; ++j) x[j] = R[i * D + j];
    for (int k = i + 1; k < D; ++k) {
      const T l = Lq[k * D + i];
      const T* xk = X + k * D;
      for (int j = 0; j <= i; ++j) x[j] -= l * xk[j];
    }
    const T inv = T(1) / Lq[i * D + i];
    for (int j = 0; j <= i; ++j) x[j] *= inv;
    for (int j = i + 1; j < D; ++j) x[j] = T(0);
  }
}

// 2 KL from E (lower triangular, E = Lq^-1 (Lp - Lq)), b = Lq^-1 delta and
// the factor diagonals. HasQ = false: Lq = I, E = Lp - I, b = -mu_p.
template <typename M, typename T>
GKL_INLINE T full_kl2(const T* Lp, const T* Lq, const T* E, const T* b, int D, bool has_q) {
  T off = T(0), diag = T(0), bb = T(0);
  for (int i = 0; i < D; ++i) {
    const T* ei = E + i * D;
    off += lane_sum<dot_lanes<T>(), T>(i, [&](int j) { return ei[j] * ei[j]; });
    diag += has_q ? diag_term2<DiagParam::Std, true, M>(T(0), Lp[i * D + i], T(0), Lq[i * D + i])
                  : diag_term2<DiagParam::Std, false, M>(T(0), Lp[i * D + i], T(0), T(0));
    bb += b[i] * b[i];
  }
  return off + diag + bb;
}

// In-place inverse of a lower-triangular L (the result is lower triangular).
template <typename T>
GKL_INLINE void tri_inverse_lower(T* L, int D) {
  for (int j = 0; j < D; ++j) {
    L[j * D + j] = T(1) / L[j * D + j];
    for (int i = j + 1; i < D; ++i) {
      T s = T(0);
      for (int k = j; k < i; ++k) s -= L[i * D + k] * L[k * D + j];
      L[i * D + j] = s / L[i * D + i];
    }
  }
}

// out <- Li^T X Li for symmetric X (full D*D) and lower-triangular Li,
// symmetric result written in full. work: D*D. Loops ordered for unit-stride
// axpys.
template <typename T>
GKL_INLINE void congruence_lt(const T* Li, const T* X, T* work, T* out, int D) {
  // work = X Li: row i of work = sum_k X_ik Li_k (Li_k nonzero for j <= k).
  for (int i = 0; i < D; ++i) {
    T* w = work + i * D;
    for (int j = 0; j < D; ++j) w[j] = T(0);
    for (int k = 0; k < D; ++k) {
      const T x = X[i * D + k];
      const T* lk = Li + k * D;
      for (int j = 0; j <= k; ++j) w[j] += x * lk[j];
    }
  }
  // out = Li^T work: row i of out = sum_{k >= i} Li_ki work_k.
  for (int i = 0; i < D; ++i) {
    T* o = out + i * D;
    for (int j = 0; j < D; ++j) o[j] = T(0);
    for (int k = i; k < D; ++k) {
      const T l = Li[k * D + i];
      const T* wk = work + k * D;
      for (int j = 0; j < D; ++j) o[j] += l * wk[j];
    }
  }
}

}  // namespace gaussian_kl
