// math/scalar.h — elementary functions and the scalar building blocks of
// the KL: phi(x) = e^x - 1 - x without cancellation, an accurate log ratio,
// and a fixed-order sum. Host and device (see config.h).
//
// Elementary functions come from a policy `M` (M::exp, M::expm1, M::log,
// M::sqrt). StdMath below forwards to libm / CUDA's math library; the CPU
// float kernels pass FastMath (fast_math.h), branch-free polynomials the
// compiler can vectorise. The formulas are the same either way.
#pragma once

#include "config.h"

GKL_NS_BEGIN

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

// phi(x) = e^x - 1 - x >= 0, the per-dimension KL of a log-variance ratio x.
// For |x| < 1/2, expm1(x) - x loses ~log2(2/|x|) bits to cancellation (a
// relative error of 1e-3 at KL ~ 1e-8 in float32), so it is summed as its
// Taylor series x^2 (1/2 + x/6 + ...): every term is tiny and positive-led,
// truncation error below half an ulp (8 terms for float, 16 for double).
GKL_HD constexpr double kl_inv_factorial(int k) {
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
  return kl_abs(x) < T(0.5) ? phi_series(x) : (x <= kl_huge<T>() ? em1 - x : x);
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

// phi(2 log A_ii) for A_ii = lp / lq, given inv_lq = 1 / lq (the solves have
// it): the diagonal "std" term of math/diag.h without the mean terms, the same value for valid
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
GKL_INLINE A lane_sum(int64_t n, const F& f) {
  A acc[L];
  for (int k = 0; k < L; ++k) acc[k] = A(0);
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    for (int k = 0; k < L; ++k) acc[k] += f(j + k);
  }
  for (int k = 0; j + k < n; ++k) acc[k] += f(j + k);
  for (int w = L / 2; w > 0; w >>= 1) {
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  }
  return acc[0];
}

GKL_NS_END
