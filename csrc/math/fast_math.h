// math/fast_math.h — branch-free float32 exp / expm1 / log for the CPU
// kernels (host only).
//
// Why not libm: a call to expf/logf in a loop stops gcc from vectorising it
// (glibc's vector variants are only declared under -ffast-math, which would
// also break the NaN/inf handling the kernels rely on). These are plain
// arithmetic, integer bit tricks and selects, so the per-row loops of
// cpu/diag_kernels.h vectorise for every instruction-set variant. Accuracy: <= 2 ulp over the
// whole float range, specials (0, inf, NaN, denormals) handled like libm;
// tests/cpp/test_math.cpp sweeps them against double libm.
//
// Double precision uses StdMath (libm): the kernels are accurate to double
// rounding there, and double speed is not a target.
#pragma once

#include <cstdint>
#include <cstring>

#include "scalar.h"

GKL_NS_BEGIN

#define GKL_FM_INLINE inline __attribute__((always_inline))

GKL_FM_INLINE int32_t f2i(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  return i;
}
GKL_FM_INLINE float i2f(int32_t i) {
  float x;
  std::memcpy(&x, &i, sizeof(x));
  return x;
}

// 2^k for integer k in [-126, 127].
GKL_FM_INLINE float pow2i(int32_t k) {
  return i2f((k + 127) << 23);
}

// Shared core of exp and expm1: x = n ln2 + r, |r| <= ln2/2, and
// expm1(r) = r + q with q = r^2 (1/2 + r/6 + ... + r^6/8!) by Taylor
// (truncation < 3e-9 relative to q). Keeping q apart gives phi(x) = q with
// no cancellation when n = 0. x must already be clamped to [-104, 89].
struct ExpSplit {
  int32_t ni;  // n
  float r;
  float q;
  float p;  // r + q = expm1(r)
};
GKL_FM_INLINE ExpSplit exp_split(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // Cody-Waite split of ln2: kLn2Hi has 16 significant bits, so n * kLn2Hi
  // is exact for |n| < 2^8.
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: round-to-nearest
  const float t = x * kLog2e + kShift;
  const float n = t - kShift;
  ExpSplit s;
  s.ni = f2i(t) - f2i(kShift);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  s.r = r;
  s.q = r * r *
      (1.0f / 2 +
       r * (1.0f / 6 +
            r * (1.0f / 24 +
                 r * (1.0f / 120 +
                      r * (1.0f / 720 + r * (1.0f / 5040 + r * (1.0f / 40320)))))));
  s.p = r + s.q;
  return s;
}

// Clamping to [-104, 89] also handles the range ends without extra selects:
// exp(-104) rounds to 0 and exp(89) overflows to inf in the scaling below,
// exactly as libm's results do. A NaN passes the clamp, makes r and p NaN,
// and so the result NaN, whatever the (garbage) exponent.
GKL_FM_INLINE float clamp_exp_arg(float x) {
  return x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
}

GKL_FM_INLINE float fast_exp(float x) {
  const ExpSplit s = exp_split(clamp_exp_arg(x));
  // 2^n as two factors, so n in [-150, 128] never leaves the normal range of
  // a single factor; the product underflows gradually like libm.
  const int32_t n1 = s.ni >> 1;
  return (1.0f + s.p) * pow2i(n1) * pow2i(s.ni - n1);
}

GKL_FM_INLINE float expm1_from_split(const ExpSplit& s) {
  // expm1 = 2^n p + 2^n - 1 = 2 (h p + (h - 1/2)) with h = 2^(n-1): one
  // rounding. For n = 0 it is p itself (no cancellation, denormals kept).
  // h stays normal for n in [-125, 128]; below, the result is -1 anyway.
  const int32_t nc = s.ni < -125 ? -125 : s.ni;
  const float h = pow2i(nc - 1);
  return s.ni == 0 ? s.p : 2.0f * (h * s.p + (h - 0.5f));
}

GKL_FM_INLINE float fast_expm1(float x) {
  return expm1_from_split(exp_split(clamp_exp_arg(x)));
}

// expm1(x), and phi(x) = expm1(x) - x >= 0 in *phi_out. For |x| <= ln2/2
// (n = 0) phi is the polynomial tail q itself: accurate to float rounding
// however small x is; beyond, expm1(x) - x loses at most 3 bits.
GKL_FM_INLINE float fast_expm1_phi(float x, float* phi_out) {
  const ExpSplit s = exp_split(clamp_exp_arg(x));
  const float em1 = expm1_from_split(s);
  const float phi = s.ni == 0 ? s.q : em1 - x;
  *phi_out = x == __builtin_inff() ? x : phi;
  return em1;
}

// log(x) for x > 0: x = m 2^k with m in [sqrt(1/2), sqrt(2)), f = m - 1
// (exact), log m = 2 atanh(s), s = f / (2 + f), |s| <= 0.1716: odd series to
// s^11 (truncation < 1e-10). Near x = 1 (k = 0) this is log1p(f) with f
// exact, so it is accurate in relative terms there. The three steps are
// shared with fast_phi_2log below.
struct LogSplit {
  int32_t e;  // k before the denormal correction (0: x in [sqrt(1/2), sqrt(2)))
  float kf;   // k
  float f;    // m - 1
};
GKL_FM_INLINE LogSplit log_split(float x) {
  const bool denorm = x < 1.17549435e-38f;
  const float xs = denorm ? x * 8388608.0f : x;  // * 2^23 (then e != 0: xs < 2^-103)
  const int32_t bits = f2i(xs);
  // Subtracting the bits of sqrt(1/2) puts the mantissa split at sqrt(2).
  LogSplit o;
  o.e = (bits - 0x3f3504f3) >> 23;
  o.kf = static_cast<float>(o.e - (denorm ? 23 : 0));
  o.f = i2f(bits - (o.e << 23)) - 1.0f;
  return o;
}

struct LogSeries {
  float s;     // f / (2 + f)
  float sp;    // s P, P = s^2/3 + s^4/5 + ... + s^10/11
  float logm;  // log(1 + f) = 2 s + 2 s P
};
GKL_FM_INLINE LogSeries log_series(float f) {
  LogSeries o;
  o.s = f / (2.0f + f);
  const float z = o.s * o.s;
  o.sp = o.s * (z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9 + z * (1.0f / 11))))));
  // 2s = f - s*f keeps the leading f exact.
  o.logm = (f - o.s * f) + 2.0f * o.sp;
  return o;
}

GKL_FM_INLINE float log_join(float kf, float logm) {  // k ln2 + log m (Cody-Waite ln2)
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  return kf * kLn2Hi + (logm + kf * kLn2Lo);
}

GKL_FM_INLINE float fast_log(float x) {
  const LogSplit l = log_split(x);
  float res = log_join(l.kf, log_series(l.f).logm);
  res = x == 0.0f ? -__builtin_inff() : res;
  res = x < 0.0f ? __builtin_nanf("") : res;
  res = x == __builtin_inff() ? x : res;
  return x != x ? x : res;
}

// Math policy (scalar.h): fast float functions, libm for double.
// phi(2 log r) = r^2 - 1 - 2 log r >= 0 for a ratio r = a / b > 0 given
// with d = (a - b) / b (relatively accurate near r = 1, where r - 1 is
// not): the diagonal term of the full-covariance KL, with one logarithm's
// range reduction and series shared by both branches and three selects
// (on AMD Zen 4 a compare into a mask and a blend cost ~1.7 cycles; the
// generic phi(ell) of scalar.h takes ~10 and a series of its own).
//   r in [sqrt(1/2), sqrt(2)) (k = 0): f = d, s = d / (2 + d),
//     log1p(d) = 2 atanh(s) = d - s d + 2 s P, P = s^2/3 + s^4/5 + ...
//     (fast_log's series), so phi = d^2 + 2 (s d - 2 s P): every term
//     of the same sign, |2 s P| <= |s d| / 15 (no cancellation).
//   otherwise: (r^2 - 1) - 2 log r, r^2 - 1 = d (2 + d) (NaN for b = +inf,
//     where r = 0 alone would give a finite value), log r = k ln2 + log m;
//     |r^2 - 1| and 2 |log r| are then at most ~9x the result (r near
//     sqrt(1/2)): <= 3 bits lost, as phi(ell) = expm1(ell) - ell does.
// r = +inf gives +inf, NaN gives NaN; r must be > 0. fast_log's steps.
GKL_FM_INLINE float fast_phi_2log(float r, float d) {
  const LogSplit l = log_split(r);
  const bool near = l.e == 0;
  const LogSeries g = log_series(near ? d : l.f);
  return near ? d * d + 2.0f * (g.s * d - 2.0f * g.sp) : d * (2.0f + d) - 2.0f * log_join(l.kf, g.logm);
}

struct FastMath {
  static GKL_FM_INLINE float exp(float x) { return fast_exp(x); }
  static GKL_FM_INLINE float expm1(float x) { return fast_expm1(x); }
  static GKL_FM_INLINE float expm1_phi(float x, float* phi) { return fast_expm1_phi(x, phi); }
  static GKL_FM_INLINE float log(float x) { return fast_log(x); }
  static GKL_FM_INLINE float phi_2log(float r, float d) { return fast_phi_2log(r, d); }
  static GKL_FM_INLINE double exp(double x) { return StdMath::exp(x); }
  static GKL_FM_INLINE double expm1(double x) { return StdMath::expm1(x); }
  static GKL_FM_INLINE double log(double x) { return StdMath::log(x); }
  static GKL_FM_INLINE float sqrt(float x) { return StdMath::sqrt(x); }
  static GKL_FM_INLINE double sqrt(double x) { return StdMath::sqrt(x); }
};

#undef GKL_FM_INLINE

GKL_NS_END
