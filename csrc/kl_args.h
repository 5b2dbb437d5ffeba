// kl_args.h — plain-old-data views that the torch-facing launchers hand to
// the kernels. No torch headers: the light .cu files include this.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kl_math.h"

namespace gaussian_kl {

// The four inputs of a diagonal KL as [N, D] strided views (strides in
// elements). A q shared by all rows has row stride 0; a q that is absent
// (the N(0, I) prior) has null pointers and is never read.
struct DiagRows {
  const void* mu_p = nullptr;
  const void* s_p = nullptr;
  const void* mu_q = nullptr;
  const void* s_q = nullptr;
  int64_t row_stride[4] = {0, 0, 0, 0};  // mu_p, s_p, mu_q, s_q
  int64_t col_stride[4] = {1, 1, 1, 1};
  int64_t rows = 0;  // N: product of the batch dims
  int64_t dim = 0;   // D: the event size
  bool has_q() const { return mu_q != nullptr; }
  // All four inputs read with unit column stride.
  bool contiguous_cols() const {
    return col_stride[0] == 1 && col_stride[1] == 1 &&
        (!has_q() || (col_stride[2] == 1 && col_stride[3] == 1));
  }
};

// Outputs of the diagonal backward: [N, D] contiguous, null when not needed.
struct DiagGradOut {
  void* grad[4] = {nullptr, nullptr, nullptr, nullptr};  // mu_p, s_p, mu_q, s_q
};

// Parametrisation of one side (p or q) of a full-covariance KL: a lower
// Cholesky factor, a covariance, or (mixed pairs, kl_mixed) a diagonal given
// as a [D] vector in the DiagParam of FullRows::diag_param.
enum class FullParam : int { ScaleTril = 0, Cov = 1, Diag = 2 };

// Inputs of a full-covariance KL: means as [N, D] and scale_tril/cov as
// [N, D, D] strided views (row stride 0 for a q shared by all rows); a
// diagonal side (FullParam::Diag) is an [N, D] view read with m_s0. q
// absent (null) = N(0, I). lq_shared: a shared q covariance factored once by
// the host (acc_t, D x D row-major, lower triangle), or null.
struct FullRows {
  const void* mu_p = nullptr;
  const void* m_p = nullptr;
  const void* mu_q = nullptr;
  const void* m_q = nullptr;
  int64_t mu_rs[2] = {0, 0}, mu_cs[2] = {1, 1};             // p, q
  int64_t m_rs[2] = {0, 0}, m_s0[2] = {0, 0}, m_s1[2] = {1, 1};  // p, q
  const void* lq_shared = nullptr;
  DiagParam diag_param = DiagParam::Std;  // of the diagonal side, if any
  int64_t rows = 0;
  int64_t dim = 0;
  bool has_q() const { return mu_q != nullptr; }
};

// Outputs of the full backward, null when not needed: mu_p [N, D], m_p
// [N, D, D], mu_q [N, D], m_q [N, D, D] (or [N, D] for a diagonal side).
// A matrix gradient is row-major per matrix, or column-major where
// col_major[k] (the layout of its input, e.g. torch.linalg.cholesky's
// output: autograd would otherwise copy it into that layout).
struct FullGradOut {
  void* grad[4] = {nullptr, nullptr, nullptr, nullptr};
  bool col_major[4] = {false, false, false, false};
  // Offset of element (i, j) of output k's D x D matrix.
  GKL_INLINE int64_t at(int k, int i, int j, int D) const {
    return col_major[k] ? static_cast<int64_t>(j) * D + i : static_cast<int64_t>(i) * D + j;
  }
};

enum class ScalarKind : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

template <DiagParam P>
using DiagParamC = std::integral_constant<DiagParam, P>;

// Runtime (param, has q, unit column stride) -> compile-time constants:
// f(DiagParamC<P>{}, std::bool_constant<HasQ>{}, std::bool_constant<Contig>{}).
// The no-q variants are the dedicated N(0, I) kernels: q is never read.
template <typename F>
void dispatch_diag_variant(DiagParam param, bool has_q, bool contig, const F& f) {
  auto with_flags = [&](auto p) {
    if (has_q) {
      if (contig) f(p, std::true_type{}, std::true_type{});
      else f(p, std::true_type{}, std::false_type{});
    } else {
      if (contig) f(p, std::false_type{}, std::true_type{});
      else f(p, std::false_type{}, std::false_type{});
    }
  };
  switch (param) {
    case DiagParam::Std:
      with_flags(DiagParamC<DiagParam::Std>{});
      break;
    case DiagParam::Var:
      with_flags(DiagParamC<DiagParam::Var>{});
      break;
    case DiagParam::LogVar:
      with_flags(DiagParamC<DiagParam::LogVar>{});
      break;
    case DiagParam::LogStd:
      with_flags(DiagParamC<DiagParam::LogStd>{});
      break;
  }
}

// Runtime (param, has q) -> compile-time constants for the full kernels:
// f(std::integral_constant<FullParam, P>{}, std::bool_constant<HasQ>{}).
template <typename F>
void dispatch_full_variant(FullParam param, bool has_q, const F& f) {
  auto with_q = [&](auto p) {
    if (has_q) f(p, std::true_type{});
    else f(p, std::false_type{});
  };
  if (param == FullParam::Cov) with_q(std::integral_constant<FullParam, FullParam::Cov>{});
  else with_q(std::integral_constant<FullParam, FullParam::ScaleTril>{});
}

template <FullParam P>
using FullParamC = std::integral_constant<FullParam, P>;

// The pairs of kl_mixed (sides of different kinds; q always present):
// f(FullParamC<PP>{}, FullParamC<PQ>{}). Same-kind pairs are kl_full's.
template <typename F>
void dispatch_mixed_variant(FullParam pp, FullParam pq, const F& f) {
  using FP = FullParam;
  if (pp == FP::Diag && pq == FP::ScaleTril) f(FullParamC<FP::Diag>{}, FullParamC<FP::ScaleTril>{});
  else if (pp == FP::Diag && pq == FP::Cov) f(FullParamC<FP::Diag>{}, FullParamC<FP::Cov>{});
  else if (pp == FP::ScaleTril && pq == FP::Diag) f(FullParamC<FP::ScaleTril>{}, FullParamC<FP::Diag>{});
  else if (pp == FP::Cov && pq == FP::Diag) f(FullParamC<FP::Cov>{}, FullParamC<FP::Diag>{});
  else if (pp == FP::ScaleTril && pq == FP::Cov) f(FullParamC<FP::ScaleTril>{}, FullParamC<FP::Cov>{});
  else f(FullParamC<FP::Cov>{}, FullParamC<FP::ScaleTril>{});
}

}  // namespace gaussian_kl
