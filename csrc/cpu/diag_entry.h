// cpu/diag_entry.h — the diagonal half of a variant's kernel table
// (included by cpu/isa_*_diag.cpp after cpu/variant_begin.h).
#pragma once

#if defined(GKL_VARIANT_BUILT)
#include "diag_kernels.h"

GKL_NS_BEGIN
namespace {

// Runtime (param, has q, unit column stride) -> compile-time constants.
// The no-q variants are the dedicated N(0, I) kernels: q is never read.
template <typename F>
void dispatch_diag(const DiagRows& r, const F& f) {
  const bool has_q = r.mu_q != nullptr;
  const bool contig = r.col_stride[0] == 1 && r.col_stride[1] == 1 &&
                      (!has_q || (r.col_stride[2] == 1 && r.col_stride[3] == 1));
  auto with_flags = [&](auto p) {
    if (has_q) {
      if (contig) f(p, std::true_type{}, std::true_type{});
      else f(p, std::true_type{}, std::false_type{});
    } else {
      if (contig) f(p, std::false_type{}, std::true_type{});
      else f(p, std::false_type{}, std::false_type{});
    }
  };
  using P = DiagParam;
  switch (r.param) {
    case P::Std: with_flags(std::integral_constant<P, P::Std>{}); break;
    case P::Var: with_flags(std::integral_constant<P, P::Var>{}); break;
    case P::LogVar: with_flags(std::integral_constant<P, P::LogVar>{}); break;
    case P::LogStd: with_flags(std::integral_constant<P, P::LogStd>{}); break;
  }
}

// The problems this translation unit compiles (cpu/kernels.h): the
// vectorised ones (a variant's), or the others (GKL_DIAG_GENERIC: once,
// for every variant).
#if defined(GKL_DIAG_GENERIC)
constexpr bool kGeneric = true;
#else
constexpr bool kGeneric = false;
#endif

}  // namespace
GKL_NS_END

#if defined(GKL_DIAG_GENERIC)
#define GKL_DIAG_NAME(f) GKL_CAT(f, generic)
#else
#define GKL_DIAG_NAME(f) GKL_CAT(f, GKL_ISA)
#endif

void gaussian_kl::cpu::GKL_DIAG_NAME(diag_forward_)(ScalarKind kind, const DiagRows& r, void* out, int64_t begin,
                                                    int64_t end) {
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    gaussian_kl::GKL_ISA::dispatch_diag(r, [&](auto P, auto HQ, auto C) {
      if constexpr (gaussian_kl::GKL_ISA::kGeneric != (decltype(C)::value && !std::is_same<S, double>::value)) {
        gaussian_kl::GKL_ISA::forward_rows_body<S, decltype(P)::value, decltype(HQ)::value, decltype(C)::value>(
            r, static_cast<S*>(out), begin, end);
      }
    });
  });
}

void gaussian_kl::cpu::GKL_DIAG_NAME(diag_backward_)(ScalarKind kind, const DiagRows& r, const void* grad,
                                                     int64_t gs, const DiagGradOut& o, int64_t begin, int64_t end) {
  with_dtype(kind, [&](auto tag) {
    using S = decltype(tag);
    gaussian_kl::GKL_ISA::dispatch_diag(r, [&](auto P, auto HQ, auto C) {
      if constexpr (gaussian_kl::GKL_ISA::kGeneric != (decltype(C)::value && !std::is_same<S, double>::value)) {
        gaussian_kl::GKL_ISA::backward_rows_body<S, decltype(P)::value, decltype(HQ)::value, decltype(C)::value>(
            r, static_cast<const S*>(grad), gs, o, begin, end);
      }
    });
  });
}
#endif
