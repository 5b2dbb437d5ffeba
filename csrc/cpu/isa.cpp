// cpu/isa.cpp — which CPU variant runs (docs/architecture.md, "CPU
// variants"): the best one the build has and the CPU supports, or the one
// the environment variable GKL_CPU_ISA names (avx512 | avx2 | baseline),
// read once when the library loads. An unknown name, or a variant this CPU
// cannot run, is an error at load time rather than a silent fallback.
#include "kernels.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gaussian_kl {
namespace cpu {
namespace {

bool cpu_runs(const char* isa) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("x86-64-v4");
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("x86-64-v3");
#endif
  (void)isa;
  return true;
}

struct Table {
  Kernels all[3];
  int n = 0;
  Table() {
    const DiagKernels any{&diag_forward_generic, &diag_backward_generic};
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    const Kernels variants[3] = {
        {"avx512", {&diag_forward_avx512, &diag_backward_avx512}, {&full_forward_avx512, &full_backward_avx512}, any},
        {"avx2", {&diag_forward_avx2, &diag_backward_avx2}, {&full_forward_avx2, &full_backward_avx2}, any},
        {"baseline", {&diag_forward_baseline, &diag_backward_baseline}, {&full_forward_baseline, &full_backward_baseline},
         any}};
#else
    const Kernels variants[1] = {
        {"portable", {&diag_forward_baseline, &diag_backward_baseline}, {&full_forward_baseline, &full_backward_baseline},
         any}};
#endif
    for (const Kernels& k : variants) {
      if (cpu_runs(k.isa)) all[n++] = k;
    }
  }
};

const Table& table() {
  static const Table t;
  return t;
}

const Kernels& select() {
  const Table& t = table();
  const char* want = std::getenv("GKL_CPU_ISA");
  if (!want || !*want) return t.all[0];
  std::string names;
  for (int i = 0; i < t.n; ++i) {
    // "baseline" names the portable build where there are no x86 variants.
    if (std::strcmp(t.all[i].isa, want) == 0 ||
        (std::strcmp(want, "baseline") == 0 && std::strcmp(t.all[i].isa, "portable") == 0)) {
      return t.all[i];
    }
    names += (i ? ", " : "") + std::string(t.all[i].isa);
  }
  throw std::runtime_error("gaussian_kl: GKL_CPU_ISA=" + std::string(want) +
                           " is not a CPU variant this build and this CPU can run (available: " + names + ")");
}

}  // namespace

bool diag_vectorised(ScalarKind kind, const DiagRows& r) {
  const bool has_q = r.mu_q != nullptr;
  const bool contig = r.col_stride[0] == 1 && r.col_stride[1] == 1 &&
                      (!has_q || (r.col_stride[2] == 1 && r.col_stride[3] == 1));
  return contig && kind != ScalarKind::Double;
}

const Kernels& kernels() {
  static const Kernels& k = select();
  return k;
}

int available_variants(const Kernels** out, int max) {
  const Table& t = table();
  int n = 0;
  for (; n < t.n && n < max; ++n) out[n] = &t.all[n];
  return n;
}

}  // namespace cpu
}  // namespace gaussian_kl
