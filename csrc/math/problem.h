// math/problem.h — the plain-old-data views the torch-facing code (ops/)
// hands to the kernels: pointers, strides and sizes, no torch types. Shared
// by every translation unit (CPU variants, CUDA, tests), so these types live
// outside the per-variant namespace of config.h and carry no code.
#pragma once

#include <cstdint>

namespace gaussian_kl {

enum class ScalarKind : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

// Parametrisation of a diagonal covariance (docs/design.md, "Parametrisations").
enum class DiagParam : int { Std = 0, Var = 1, LogVar = 2, LogStd = 3 };

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
  DiagParam param = DiagParam::Std;
};

// Outputs of the diagonal backward: [N, D] contiguous, null when not needed.
struct DiagGradOut {
  void* grad[4] = {nullptr, nullptr, nullptr, nullptr};  // mu_p, s_p, mu_q, s_q
};

// How one side (p or q) of a full-covariance KL is given: a lower Cholesky
// factor, a covariance, or (the mixed pairs of kl_mixed) a diagonal [D]
// vector in the DiagParam of FullRows::diag_param.
enum class FullParam : int { ScaleTril = 0, Cov = 1, Diag = 2 };

// Inputs of a full-covariance KL: means as [N, D] and matrices as
// [N, D, D] strided views (row stride 0 for a q shared by all rows); a
// diagonal side is an [N, D] view read with m_s0. q absent (null) means
// N(0, I).
struct FullRows {
  const void* mu_p = nullptr;
  const void* m_p = nullptr;
  const void* mu_q = nullptr;
  const void* m_q = nullptr;
  int64_t mu_rs[2] = {0, 0}, mu_cs[2] = {1, 1};                  // p, q
  int64_t m_rs[2] = {0, 0}, m_s0[2] = {0, 0}, m_s1[2] = {1, 1};  // p, q
  FullParam kind[2] = {FullParam::ScaleTril, FullParam::ScaleTril};
  DiagParam diag_param = DiagParam::Std;  // of the diagonal side, if any
  int64_t rows = 0;
  int64_t dim = 0;
};

// Outputs of the full backward, null when not needed: mu_p [N, D], m_p
// [N, D, D] (or [N, D] for a diagonal side), mu_q [N, D], m_q likewise. A
// matrix gradient is row-major per matrix, or column-major where
// col_major[k] (the layout of its input, e.g. torch.linalg.cholesky's
// output: autograd would otherwise copy it into that layout).
struct FullGradOut {
  void* grad[4] = {nullptr, nullptr, nullptr, nullptr};
  bool col_major[4] = {false, false, false, false};
};

}  // namespace gaussian_kl
