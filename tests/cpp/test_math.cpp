// Pure C++ checks of csrc/math/diag.h, scalar.h and fast_math.h: values and
// gradients against numbers computed independently (40-digit mpmath, see
// the comment at kCases), the near-zero accuracy, invalid-input NaNs, and
// the fast float elementary functions against double-precision libm.
// Built and run by CMake/ctest; no torch headers or library.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include <type_traits>

#include "math/diag.h"
#include "math/fast_math.h"

using namespace gaussian_kl;

namespace {

int g_pass = 0;
int g_fail = 0;

void check(bool ok, const char* what, double got, double want) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %s: got %.17g want %.17g\n", what, got, want);
  }
}

void check_close(const char* what, double got, double want, double rtol, double atol = 0) {
  check(std::fabs(got - want) <= atol + rtol * std::fabs(want), what, got, want);
}

struct Case {
  DiagParam param;
  bool has_q;
  double mp, sp, mq, sq;
  double term2;    // 2 KL of one dimension
  double grad[4];  // dKL / d(mu_p, s_p, mu_q, s_q)
};

// Generated with mpmath at 40 digits from the textbook formula
// vp/vq + d^2/vq - 1 + log vq - log vp (the inputs are the doubles shown),
// gradients by central differences with h = 1e-15 at that precision.
const Case kCases[] = {
    {DiagParam::Std, true, 0.3, 0.7, -0.5, 1.3, 0.90671747006688483394,
     {0.47337278106508871849, -1.0143702451394760539, -0.47337278106508871849, 0.25489303595812477834}},
    {DiagParam::Var, true, 0.3, 0.7, -0.5, 1.3, 0.64980843917545421474,
     {0.61538461538461535505, -0.32967032967032972878, -0.61538461538461535505, -0.011834319526627186593}},
    {DiagParam::LogVar, true, 0.3, 0.2, -0.5, -0.4, 1.1768866068809220004,
     {1.1934597581130162642, 0.41105940019525451778, -1.1934597581130162642, -0.88844330344046101684}},
    {DiagParam::LogStd, true, 0.3, 0.2, -0.5, -0.4, 2.5444631169717269347,
     {1.780432742793974138, 2.3201169227365477107, -1.780432742793974138, -3.7444631169717270013}},
    {DiagParam::Std, false, 1.25, 0.8, 0, 0, 1.6487871026284194716, {1.25, -0.4499999999999998862, 0, 0}},
    {DiagParam::Var, false, 1.25, 0.8, 0, 0, 1.5856435513142097447, {1.25, -0.12499999999999996531, 0, 0}},
    {DiagParam::LogVar, false, 1.25, -0.3, 0, 0, 1.6033182206817178632,
     {1.25, -0.12959088965914106285, 0, 0}},
    {DiagParam::LogStd, false, 1.25, -0.3, 0, 0, 1.7113116360940264226,
     {1.25, -0.45118836390597355519, 0, 0}},
};

// (param, has q) -> compile-time constants.
template <typename F>
void with_variant(DiagParam param, bool has_q, const F& f) {
  auto q = [&](auto p) {
    if (has_q) f(p, std::true_type{});
    else f(p, std::false_type{});
  };
  using DP = DiagParam;
  switch (param) {
    case DP::Std: q(std::integral_constant<DP, DP::Std>{}); break;
    case DP::Var: q(std::integral_constant<DP, DP::Var>{}); break;
    case DP::LogVar: q(std::integral_constant<DP, DP::LogVar>{}); break;
    case DP::LogStd: q(std::integral_constant<DP, DP::LogStd>{}); break;
  }
}

template <typename M, typename T>
void run_case(const Case& c, double rtol, const char* tag) {
  T term = 0;
  DiagGrad<T> g{};
  with_variant(c.param, c.has_q, [&](auto P, auto HQ) {
    constexpr DiagParam kP = decltype(P)::value;
    constexpr bool kHQ = decltype(HQ)::value;
    term = diag_term2<kP, kHQ, M>(T(c.mp), T(c.sp), T(c.mq), T(c.sq));
    g = diag_grad<kP, kHQ, M>(T(1), T(c.mp), T(c.sp), T(c.mq), T(c.sq));
  });
  char what[128];
  std::snprintf(what, sizeof what, "%s param=%d q=%d term", tag, int(c.param), int(c.has_q));
  check_close(what, term, c.term2, rtol);
  const T got[4] = {g.mu_p, g.s_p, g.mu_q, g.s_q};
  for (int i = 0; i < (c.has_q ? 4 : 2); ++i) {
    std::snprintf(what, sizeof what, "%s param=%d q=%d grad[%d]", tag, int(c.param), int(c.has_q), i);
    check_close(what, got[i], c.grad[i], rtol, 1e-15);
  }
}

// KL ~ 1e-9 per dimension: the non-negative form keeps float32 accurate,
// for every parametrisation.
template <DiagParam P, typename M>
void near_zero(const char* tag) {
  std::mt19937 rng(7);
  std::normal_distribution<double> n(0.0, 1.0);
  double worst = 0;
  bool negative = false;
  const bool logp = P == DiagParam::LogVar || P == DiagParam::LogStd;
  for (int i = 0; i < 20000; ++i) {
    const float mp = float(n(rng));
    const float sp = logp ? float(0.5 * n(rng)) : float(std::exp(0.5 * n(rng)));
    const float mq = float(mp + 3e-5 * n(rng));
    const float sq = logp ? float(sp + 3e-5 * n(rng)) : float(sp * (1 + 3e-5 * n(rng)));
    const float got = diag_term2<P, true, M>(mp, sp, mq, sq);
    // log variance ratio and 1/vq in double from the same float inputs.
    double l, ivq;
    if (P == DiagParam::LogVar) l = double(sp) - double(sq), ivq = std::exp(-double(sq));
    else if (P == DiagParam::LogStd) l = 2 * (double(sp) - double(sq)), ivq = std::exp(-2 * double(sq));
    else if (P == DiagParam::Var) l = std::log(double(sp) / double(sq)), ivq = 1 / double(sq);
    else l = 2 * std::log(double(sp) / double(sq)), ivq = 1 / (double(sq) * double(sq));
    const double d = double(mq) - double(mp);
    const double want = std::expm1(l) - l + d * d * ivq;
    if (got < 0) negative = true;
    if (want > 0) worst = std::fmax(worst, std::fabs(got - want) / want);
  }
  char what[96];
  std::snprintf(what, sizeof what, "%s param=%d near-zero float32 max rel err", tag, int(P));
  check(worst < 1e-4, what, worst, 1e-4);
  std::snprintf(what, sizeof what, "%s param=%d near-zero never negative", tag, int(P));
  check(!negative, what, negative, 0);
}

template <typename M>
void near_zero_all(const char* tag) {
  near_zero<DiagParam::Std, M>(tag);
  near_zero<DiagParam::Var, M>(tag);
  near_zero<DiagParam::LogVar, M>(tag);
  near_zero<DiagParam::LogStd, M>(tag);
}

// A variance ratio beyond float range gives +inf (the true KL overflows
// too), never NaN; extreme but representable cases stay finite.
template <typename M>
void extremes(const char* tag) {
  char what[96];
  std::snprintf(what, sizeof what, "%s var ratio 1e60 -> inf", tag);
  const float a = diag_term2<DiagParam::Var, true, M>(0.0f, 1e30f, 0.0f, 1e-30f);
  check(std::isinf(a) && a > 0, what, a, INFINITY);
  std::snprintf(what, sizeof what, "%s std ratio 1e30 -> inf", tag);
  const float b = diag_term2<DiagParam::Std, true, M>(0.0f, 1e15f, 0.0f, 1e-15f);
  check(std::isinf(b) && b > 0, what, b, INFINITY);
  std::snprintf(what, sizeof what, "%s tiny std q, equal means: finite", tag);
  const float e = diag_term2<DiagParam::Std, true, M>(0.5f, 1e-25f, 0.5f, 1e-25f);
  check(e == 0.0f, what, e, 0.0);
  const DiagGrad<float> ge = diag_grad<DiagParam::Std, true, M>(1.0f, 0.5f, 1e-25f, 0.5f, 1e-25f);
  check(ge.mu_p == 0 && ge.mu_q == 0 && std::isfinite(ge.s_q), what, ge.s_q, 0.0);
  std::snprintf(what, sizeof what, "%s tiny std q: (delta/sq)^2 exact", tag);
  const float f = diag_term2<DiagParam::Std, true, M>(0.0f, 1e-25f, 1e-30f, 1e-25f);
  check(std::fabs(f - 1e-10) < 1e-15, what, f, 1e-10);
  std::snprintf(what, sizeof what, "%s logvar q = -80 (vq = 1.8e-35), equal means: 0", tag);
  const float h = diag_term2<DiagParam::LogVar, true, M>(0.5f, -80.0f, 0.5f, -80.0f);
  check(h == 0.0f, what, h, 0.0);
  std::snprintf(what, sizeof what, "%s logvar +-80 finite", tag);
  const float c = diag_term2<DiagParam::LogVar, true, M>(0.0f, -80.0f, 0.0f, 80.0f);
  check(std::fabs(c - 159.0) < 1e-4 * 159.0, what, c, 159.0);  // e^-160 - 1 + 160
}

template <typename M>
void invalid_inputs(const char* tag) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  char what[96];
  std::snprintf(what, sizeof what, "%s invalid -> NaN", tag);
  check(std::isnan(diag_term2<DiagParam::Std, true, M>(0.0, -1.0, 0.0, 1.0)), what, 0, nan);
  check(std::isnan(diag_term2<DiagParam::Var, true, M>(0.0, 1.0, 0.0, 0.0)), what, 0, nan);
  check(std::isnan(diag_term2<DiagParam::LogVar, true, M>(inf, 0.0, 0.0, 0.0)), what, 0, nan);
  check(std::isnan(diag_term2<DiagParam::LogStd, false, M>(0.0, -inf, 0.0, 0.0)), what, 0, nan);
  check(std::isnan(diag_term2<DiagParam::LogVar, true, M>(0.0, 0.0, nan, 0.0)), what, 0, nan);
  check(std::isnan(diag_term2<DiagParam::Std, true, M>(0.0f, 1.0f, 0.0f, -0.0f)), what, 0, nan);
  // p == q: exactly zero value and gradients.
  std::snprintf(what, sizeof what, "%s p == q", tag);
  const DiagGrad<float> g = diag_grad<DiagParam::Std, true, M>(1.0f, 0.3f, 0.7f, 0.3f, 0.7f);
  check(diag_term2<DiagParam::Std, true, M>(0.3f, 0.7f, 0.3f, 0.7f) == 0.0f, what, 0, 0);
  check(g.mu_p == 0 && g.s_p == 0 && g.mu_q == 0 && g.s_q == 0, what, 0, 0);
}

double ulps(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : 1e30;
  if (std::isinf(want) || std::fabs(want) > 3.4028234663852886e38) {
    return std::isinf(got) && (got > 0) == (want > 0) ? 0 : 1e30;
  }
  const float w = float(want);
  if (double(got) == want) return 0;
  double u = std::fabs(double(std::nextafter(w, std::numeric_limits<float>::infinity())) - double(w));
  u = std::fmax(u, 1.4e-45);
  return std::fabs(double(got) - want) / u;
}

void fast_math_sweep() {
  std::mt19937 rng(3);
  double worst[3] = {0, 0, 0};
  for (int i = 0; i < 4000000; ++i) {
    uint32_t b = rng();
    float x;
    std::memcpy(&x, &b, 4);
    if (std::isnan(x)) continue;
    const float xe = std::fmod(x, 110.0f);
    worst[0] = std::fmax(worst[0], ulps(fast_exp(xe), std::exp(double(xe))));
    worst[1] = std::fmax(worst[1], ulps(fast_expm1(xe), std::expm1(double(xe))));
    const float xl = std::fabs(x);
    worst[2] = std::fmax(worst[2], ulps(fast_log(xl), std::log(double(xl))));
  }
  const char* names[3] = {"fast_exp ulps", "fast_expm1 ulps", "fast_log ulps"};
  for (int k = 0; k < 3; ++k) check(worst[k] <= 2.5, names[k], worst[k], 2.5);
  // phi = expm1(x) - x, relative accuracy down to tiny x.
  double wphi = 0;
  for (int e = -30; e <= 20; ++e) {
    for (double s : {-1.0, 1.0}) {
      const float x = float(s * std::pow(2.0, e / 4.0));
      float phi;
      fast_expm1_phi(x, &phi);
      const double xd = x;
      const double want = std::fabs(xd) < 1e-4 ? xd * xd / 2 + xd * xd * xd / 6 : std::expm1(xd) - xd;
      wphi = std::fmax(wphi, std::fabs(phi - want) / want);
    }
  }
  check(wphi < 1e-6, "fast phi max rel err", wphi, 1e-6);
  // Specials behave like libm.
  const float inf = std::numeric_limits<float>::infinity();
  check(fast_exp(-inf) == 0 && fast_exp(inf) == inf && fast_exp(0) == 1, "exp specials", 0, 0);
  check(fast_expm1(-inf) == -1 && fast_expm1(1e-40f) == 1e-40f, "expm1 specials", 0, 0);
  check(fast_log(0) == -inf && std::isnan(fast_log(-1)) && fast_log(inf) == inf &&
            fast_log(1) == 0,
        "log specials", 0, 0);
  check(std::isnan(fast_exp(NAN)) && std::isnan(fast_expm1(NAN)) && std::isnan(fast_log(NAN)),
        "NaN propagates", 0, 0);
}


// The full-covariance diagonal term phi(2 log(lp / lq)) in float, fused
// (FastMath::phi_2log) and generic (StdMath), against double: ratios from
// 1 +- 1e-7 to 1e+-30 (both branches of the fused form and the switch at
// sqrt(1/2), sqrt(2)), denormal lp, and the specials.
double full_diag_want(float lp, float lq) {
  const double d = (double(lp) - double(lq)) / double(lq), r = double(lp) / double(lq);
  if (std::fabs(d) < 1e-2) {  // d - log1p(d) by its series
    double g = 0, t = d;
    for (int k = 2; k < 12; ++k) {
      t *= -d;
      g += -t / k;
    }
    return d * d + 2 * g;
  }
  return (r * r - 1) - 2 * std::log(r);
}

void full_diag_sweep() {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  double worst[2] = {0, 0};
  for (int i = 0; i < 400000; ++i) {
    const float lq = float(std::pow(10.0, -3 + 6 * u(rng)));
    float lp;
    if (i % 3 == 0) {
      lp = float(std::pow(10.0, -30 + 60 * u(rng)));
    } else {
      const double t = std::pow(10.0, -7 + 8 * u(rng)) * (u(rng) < 0.5 ? -0.999 : 1.0);
      lp = float(lq * (1 + t));
    }
    if (!(lp > 0)) continue;
    const double want = full_diag_want(lp, lq);
    if (!(want > 1e-30) || want > 3e38) continue;  // (beyond float: inf, checked below)
    const float inv = 1.0f / lq;
    worst[0] = std::fmax(worst[0], std::fabs(full_diag_term2<FastMath>(lp, lq, inv) - want) / want);
    worst[1] = std::fmax(worst[1], std::fabs(full_diag_term2<StdMath>(lp, lq, inv) - want) / want);
  }
  std::printf("full diag term max rel err: fused %.3g, generic %.3g\n", worst[0], worst[1]);
  check(worst[0] < 4e-6, "full diag term (fused) max rel err", worst[0], 4e-6);
  check(worst[1] < 4e-6, "full diag term (generic) max rel err", worst[1], 4e-6);
  // Double: the generic form under either policy (FastMath's fused float
  // version must not be chosen), to double rounding.
  for (double lp : {0.3, 0.999999, 1.0000001, 2.5, 1e-30}) {
    const double want = full_diag_term2<StdMath>(lp, 0.7, 1 / 0.7);
    check_close("full diag term double", full_diag_term2<FastMath>(lp, 0.7, 1 / 0.7), want, 1e-14);
  }
  // Denormal lp (the log's rescaling), exact p == q, specials.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (float lp : {1e-40f, 3e-45f, 1.17e-38f}) {
    const double want = full_diag_want(lp, 2.0f);
    check_close("full diag term denormal lp", full_diag_term2<FastMath>(lp, 2.0f, 0.5f), want, 4e-6);
  }
  check(full_diag_term2<FastMath>(0.7f, 0.7f, 1.0f / 0.7f) == 0.0f, "full diag term p == q", 0, 0);
  for (auto pq : {std::pair<float, float>{inf, 1.0f}, {1.0f, 1e-40f}, {1e30f, 1e-3f}}) {
    const float v = full_diag_term2<FastMath>(pq.first, pq.second, 1.0f / pq.second);
    check(std::isinf(v) && v > 0, "full diag term +inf", v, inf);
  }
  for (auto pq : {std::pair<float, float>{1.0f, inf}, {nan, 1.0f}, {1.0f, nan}, {0.0f, 1.0f}, {-1.0f, 1.0f},
                  {1.0f, 0.0f}, {-1.0f, -2.0f}}) {
    const float v = full_diag_term2<FastMath>(pq.first, pq.second, 1.0f / pq.second);
    check(std::isnan(v), "full diag term NaN", v, nan);
  }
}
}  // namespace

int main() {
  for (const Case& c : kCases) {
    run_case<StdMath, double>(c, 1e-14, "double/libm");
    run_case<FastMath, double>(c, 1e-14, "double/fast");
    run_case<StdMath, float>(c, 2e-6, "float/libm");
    run_case<FastMath, float>(c, 2e-6, "float/fast");
  }
  near_zero_all<StdMath>("libm");
  near_zero_all<FastMath>("fast");
  extremes<StdMath>("libm");
  extremes<FastMath>("fast");
  invalid_inputs<StdMath>("libm");
  invalid_inputs<FastMath>("fast");
  fast_math_sweep();
  full_diag_sweep();
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
