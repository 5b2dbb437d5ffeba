// The CUDA kernels' bodies (csrc/cuda/diag_device.h, full_device.h) run on
// the CPU under a host emulation of a CUDA grid, with the launch geometry
// their launchers compute (csrc/cuda/plan.h: blocks, threads, groups of
// 8/16/32, dynamic shared memory of exactly the planned size, or the
// global-workspace fallback), against the CPU kernels of every variant this
// machine runs (cpu/kernels.h). Each block's threads are fibers (ucontext)
// of one host thread; a barrier (__syncthreads) switches to the next
// thread round-robin, a shuffle is a store to a shared slot, a barrier and
// a load: the warp's lock-step made explicit and deterministic. So the
// indexing, the groups' shared-memory slices, the barriers of the
// Cholesky factorisation and the solves, the stores and the every-row
// guards are checked without a GPU (and under ASan/UBSan in CI). Built and
// run by CMake/ctest; c10's Half stands in for CUDA's half types.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "cuda/diag_device.h"
#include "cuda/full_device.h"
#include "cuda/plan.h"

using namespace gaussian_kl;

namespace {

int g_pass = 0;
int g_fail = 0;

// ---------------------------------------------------------------- the grid

// One block's threads as fibers of the calling thread.
struct Fibers {
  explicit Fibers(int n) : n(n), ctx(n), stacks(n), slot{std::vector<double>(n), std::vector<double>(n)} {
    for (auto& st : stacks) st.reset(new char[kStack]);
  }
  static constexpr size_t kStack = 256 << 10;
  int n;
  int current = 0;
  std::vector<ucontext_t> ctx;
  ucontext_t main_ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<double> slot[2];  // shuffles: alternate slots, one barrier each
  std::function<void(int)> body;

  void barrier() {
    const int me = current;
    current = (me + 1) % n;
    swapcontext(&ctx[me], &ctx[current]);
  }
  static void entry(unsigned hi, unsigned lo) {
    Fibers* f = reinterpret_cast<Fibers*>((static_cast<uintptr_t>(hi) << 32) | lo);
    f->body(f->current);
  }
  void run(std::function<void(int)> f) {
    body = std::move(f);
    const uintptr_t self = reinterpret_cast<uintptr_t>(this);
    for (int t = 0; t < n; ++t) {
      getcontext(&ctx[t]);
      ctx[t].uc_stack.ss_sp = stacks[t].get();
      ctx[t].uc_stack.ss_size = kStack;
      ctx[t].uc_link = &main_ctx;
      makecontext(&ctx[t], reinterpret_cast<void (*)()>(&Fibers::entry), 2, static_cast<unsigned>(self >> 32),
                  static_cast<unsigned>(self & 0xffffffffu));
    }
    for (int t = 0; t < n; ++t) {
      current = t;
      swapcontext(&main_ctx, &ctx[t]);
    }
  }
};

// The execution context of cuda/*_device.h on a fiber.
struct HostCtx {
  int t, nt;
  int64_t b, nb;
  Fibers* f;
  unsigned char* smem_;
  mutable int parity = 0;
  int thread() const { return t; }
  int threads() const { return nt; }
  int64_t block() const { return b; }
  int64_t blocks() const { return nb; }
  void sync() const { f->barrier(); }
  template <typename A>
  A* smem() const {
    return reinterpret_cast<A*>(smem_);
  }
  template <typename A>
  A shfl_xor(A v, int mask, int width) const {
    std::vector<double>& s = f->slot[parity];
    parity ^= 1;
    s[t] = static_cast<double>(v);
    f->barrier();
    const int src = (t & ~(width - 1)) | ((t & (width - 1)) ^ mask);
    return static_cast<A>(s[src]);  // rewritten two shuffles later, after another barrier
  }
};

// body(ctx) on every thread of every block of a launch, blocks in order.
// The dynamic shared memory is exactly smem_bytes (ASan sees an overrun).
void launch(int64_t blocks, int threads, int64_t smem_bytes, const std::function<void(const HostCtx&)>& body) {
  for (int64_t b = 0; b < blocks; ++b) {
    std::vector<unsigned char> smem(static_cast<size_t>(smem_bytes));
    std::fill(smem.begin(), smem.end(), 0xA5);  // stale: must be written before it is read
    Fibers f(threads);
    f.run([&](int t) { body(HostCtx{t, threads, b, blocks, &f, smem.empty() ? nullptr : smem.data()}); });
  }
}

// ---------------------------------------------------------------- checks

void compare(const std::string& what, const std::vector<double>& got, const std::vector<double>& want, double rtol,
             double atol_scale) {
  double big = 0;
  for (double v : want) big = std::fmax(big, std::isfinite(v) ? std::fabs(v) : 0.0);
  int bad = 0;
  size_t first = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const bool nan_ok = std::isnan(want[k]) && std::isnan(got[k]);
    if (!nan_ok && !(std::fabs(got[k] - want[k]) <= rtol * std::fabs(want[k]) + atol_scale * big)) {
      if (bad++ == 0) first = k;
    }
  }
  if (got.size() != want.size() || bad) {
    ++g_fail;
    std::printf("FAIL %s: %d of %zu differ; first [%zu] got %.10g want %.10g\n", what.c_str(), bad, want.size(),
                first, got.size() > first ? got[first] : 0.0, want.size() > first ? want[first] : 0.0);
  } else {
    ++g_pass;
  }
}

template <typename S>
std::vector<double> widen(const std::vector<S>& v) {
  std::vector<double> out(v.size());
  for (size_t k = 0; k < v.size(); ++k) out[k] = static_cast<double>(static_cast<float>(v[k]));
  return out;
}
template <>
std::vector<double> widen(const std::vector<double>& v) {
  return v;
}

template <typename S>
constexpr ScalarKind kind_of() {
  return std::is_same<S, float>::value ? ScalarKind::Float
         : std::is_same<S, double>::value ? ScalarKind::Double
         : std::is_same<S, c10::Half>::value ? ScalarKind::Half
                                             : ScalarKind::BFloat16;
}

// ---------------------------------------------------------------- full

const char* kind_name(FullParam k, DiagParam d) {
  if (k == FullParam::ScaleTril) return "scale_tril";
  if (k == FullParam::Cov) return "cov";
  static const char* names[4] = {"std", "var", "logvar", "logstd"};
  return names[static_cast<int>(d)];
}

struct FullCase {
  int D;
  FullParam p, q;  // q ignored without q
  bool has_q;
  bool q_shared = false;
  bool col_major = false;  // matrix inputs and gradients
  bool near = false;       // q = p (1 + 1e-4 noise)
  DiagParam dparam = DiagParam::LogVar;
  int bad_row = -1;  // that row's p gets a NaN / indefinite entry
};

// Rows of inputs in double: factors (lower, garbage above), covariances,
// or a diagonal side's parameter.
struct FullInputs {
  int N = 0;
  std::vector<double> mu[2], m[2];
};

FullInputs make_full(const FullCase& c, int N, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int D = c.D;
  FullInputs in;
  in.N = N;
  auto side = [&](int k, int rows) {
    const FullParam kind = k ? c.q : c.p;
    in.mu[k].resize(size_t(N) * D);
    for (double& v : in.mu[k]) v = nd(rng);
    if (kind == FullParam::Diag) {
      in.m[k].resize(size_t(rows) * D);
      for (double& v : in.m[k]) {
        const double sd = std::exp(0.3 * nd(rng));
        v = c.dparam == DiagParam::Std ? sd
            : c.dparam == DiagParam::Var ? sd * sd
            : c.dparam == DiagParam::LogVar ? 2 * std::log(sd)
                                            : std::log(sd);
      }
      return;
    }
    std::vector<double> L(size_t(rows) * D * D);
    for (int n = 0; n < rows; ++n) {
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j < D; ++j) {
          L[size_t(n) * D * D + size_t(i) * D + j] =
              j < i ? 0.4 * nd(rng) / std::sqrt(D) : (j == i ? std::exp(0.3 * nd(rng)) : 1e6 * nd(rng));
        }
      }
    }
    std::vector<double>& out = in.m[k];
    out.resize(L.size());
    for (int n = 0; n < rows; ++n) {
      const double* l = L.data() + size_t(n) * D * D;
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j < D; ++j) {
          double v = l[size_t(i) * D + j];
          if (kind == FullParam::Cov) {
            v = 0;
            for (int t = 0; t <= std::min(i, j); ++t) v += l[size_t(i) * D + t] * l[size_t(j) * D + t];
          }
          out[size_t(n) * D * D + (c.col_major ? size_t(j) * D + i : size_t(i) * D + j)] = v;
        }
      }
    }
  };
  side(0, N);
  if (c.has_q) {
    side(1, c.q_shared ? 1 : N);
    if (c.near && c.q == c.p && !c.q_shared) {
      for (size_t k = 0; k < in.m[1].size(); ++k) in.m[1][k] = in.m[0][k] * (1 + 1e-4 * nd(rng));
      for (size_t k = 0; k < in.mu[1].size(); ++k) in.mu[1][k] = in.mu[0][k] + 1e-4 * nd(rng);
    }
  }
  if (c.bad_row >= 0 && c.p != FullParam::Diag) {
    // A NaN in the last row of a factor; a covariance made indefinite.
    const size_t row = size_t(c.bad_row) * D * D;
    if (c.p == FullParam::Cov) {
      in.m[0][row + size_t(D - 1) * D + (D - 1)] = -1.0;
    } else {
      in.m[0][row + (c.col_major ? size_t(D - 1) : size_t(D - 1) * D)] = NAN;
    }
  }
  return in;
}

// The inputs in S and their FullRows.
template <typename S>
struct FullRun {
  std::vector<S> mu[2], m[2];
  FullRows r;
  FullRun(const FullCase& c, const FullInputs& in) {
    const int D = c.D;
    for (int k = 0; k < 2; ++k) {
      mu[k].assign(in.mu[k].begin(), in.mu[k].end());
      m[k].assign(in.m[k].begin(), in.m[k].end());
    }
    r.rows = in.N;
    r.dim = D;
    r.kind[0] = c.p;
    r.kind[1] = c.q;
    r.diag_param = c.dparam;
    for (int k = 0; k < (c.has_q ? 2 : 1); ++k) {
      const bool diag = (k ? c.q : c.p) == FullParam::Diag;
      const bool shared = k == 1 && c.q_shared;
      (k ? r.mu_q : r.mu_p) = mu[k].data();
      (k ? r.m_q : r.m_p) = m[k].data();
      r.mu_rs[k] = D;
      r.mu_cs[k] = 1;
      r.m_rs[k] = shared ? 0 : (diag ? D : int64_t(D) * D);
      r.m_s0[k] = diag ? 1 : (c.col_major ? 1 : D);
      r.m_s1[k] = diag ? 0 : (c.col_major ? D : 1);
    }
  }
};

struct FullResult {
  std::vector<double> kl, grad[4];
};

// Gradient buffers of S, filled with a sentinel (every element must be
// written).
template <typename S>
struct FullGrads {
  std::vector<S> g[4];
  FullGradOut o;
  FullGrads(const FullCase& c, int N) {
    const size_t D = c.D;
    for (int k = 0; k < 4; ++k) {
      if (k >= 2 && !c.has_q) continue;
      const bool diag = k == 1 ? c.p == FullParam::Diag : (k == 3 ? c.q == FullParam::Diag : true);
      g[k].assign(N * D * (k % 2 && !diag ? D : 1), S(-7.0f));
      o.grad[k] = g[k].data();
      o.col_major[k] = c.col_major && k % 2 && !diag;
    }
  }
  void into(FullResult* res) const {
    for (int k = 0; k < 4; ++k) res->grad[k] = widen(g[k]);
  }
};

template <typename S>
FullResult full_on_cpu(const cpu::Kernels& k, const FullCase& c, const FullInputs& in, const std::vector<double>& gin) {
  FullRun<S> run(c, in);
  FullGrads<S> grads(c, in.N);
  std::vector<S> out(in.N, S(-7.0f)), g(gin.begin(), gin.end());
  k.full.forward(kind_of<S>(), run.r, out.data(), 0, in.N);
  if (c.D > 0) k.full.backward(kind_of<S>(), run.r, g.data(), 1, grads.o, 0, in.N);
  FullResult res;
  res.kl = widen(out);
  grads.into(&res);
  return res;
}

template <typename S>
FullResult full_on_gpu(const FullCase& c, const FullInputs& in, const std::vector<double>& gin, int64_t smem_optin) {
  using A = typename AccType<S>::type;
  FullRun<S> run(c, in);
  FullGrads<S> grads(c, in.N);
  std::vector<S> out(in.N, S(-7.0f)), g(gin.begin(), gin.end());
  for (int backward = 0; backward < 2; ++backward) {
    if (backward && c.D == 0) break;
    const cuda::FullPlan p = cuda::full_plan(in.N, c.D, backward, sizeof(A), smem_optin);
    if (p.threads != p.group * p.groups || (p.smem_bytes == 0) == (p.ws_bytes == 0) || p.blocks < 1) {
      ++g_fail;
      std::printf("FAIL plan D=%d: threads %d group %d groups %d smem %lld ws %lld\n", c.D, p.threads, p.group,
                  p.groups, (long long)p.smem_bytes, (long long)p.ws_bytes);
      return {};
    }
    std::vector<A> ws(p.ws_bytes / sizeof(A), A(-3));  // stale values: must be overwritten
    launch(p.blocks, p.threads, p.smem_bytes, [&](const HostCtx& ctx) {
      A* w = ws.empty() ? nullptr : ws.data();
      if (backward) {
        dev::full_backward<S>(ctx, run.r, g.data(), 1, grads.o, p, w);
      } else {
        dev::full_forward<S>(ctx, run.r, out.data(), p, w);
      }
    });
  }
  FullResult res;
  res.kl = widen(out);
  grads.into(&res);
  return res;
}

std::string full_tag(const FullCase& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "full p=%s q=%s D=%d shared=%d col=%d near=%d bad=%d", kind_name(c.p, c.dparam),
                c.has_q ? kind_name(c.q, c.dparam) : "N(0,I)", c.D, c.q_shared, c.col_major, c.near, c.bad_row);
  return buf;
}

// An invalid row's gradients are unspecified: with a bad row, the KL only
// (NaN there, right elsewhere).
void check_full(const std::string& tag, const FullResult& got, const FullResult& want, double rtol, double atol,
                bool kl_only = false) {
  compare(tag + " kl", got.kl, want.kl, rtol, 0.0);
  if (kl_only) return;
  const char* names[4] = {"dmu_p", "dm_p", "dmu_q", "dm_q"};
  for (int k = 0; k < 4; ++k) compare(tag + " " + names[k], got.grad[k], want.grad[k], rtol, atol);
}

void run_full(const FullCase& c, std::mt19937_64& rng, const std::vector<const cpu::Kernels*>& variants) {
  const int N = 5;
  const FullInputs in = make_full(c, N, rng);
  std::vector<double> gin(N);
  std::uniform_real_distribution<double> ud(0.5, 2.0);
  for (double& v : gin) v = ud(rng);
  const std::string tag = full_tag(c);
  const bool bad = c.bad_row >= 0;
  const FullResult want = full_on_cpu<double>(*variants[0], c, in, gin);
  // The shared-memory plan (an H100's opt-in limit), and the
  // global-workspace fallback (a limit too small for one group).
  for (int64_t optin : {int64_t(227) << 10, int64_t(64)}) {
    const std::string t = tag + (optin > 64 ? " smem" : " global-ws");
    check_full(t + " f64", full_on_gpu<double>(c, in, gin, optin), want, 1e-9, 1e-12, bad);
    const double rtol = c.near ? 1e-2 : 2e-4, atol = c.near ? 1e-2 : 1e-5;
    check_full(t + " f32", full_on_gpu<float>(c, in, gin, optin), want, rtol, atol, bad);
  }
  // Half inputs round the perturbation of a near p == q case away: against
  // the CPU's half run (the same rounded inputs).
  check_full(tag + " f16", full_on_gpu<c10::Half>(c, in, gin, int64_t(227) << 10),
             c.near ? full_on_cpu<c10::Half>(*variants[0], c, in, gin) : want, 2e-2, 2e-2, bad);
  // Every CPU variant against the first (the same strategies, other vectors).
  for (size_t v = 1; v < variants.size(); ++v) {
    check_full(tag + " cpu " + variants[v]->isa + " f64", full_on_cpu<double>(*variants[v], c, in, gin), want, 1e-9,
               1e-12, bad);
    check_full(tag + " cpu " + variants[v]->isa + " f32", full_on_cpu<float>(*variants[v], c, in, gin), want,
               c.near ? 1e-2 : 2e-4, c.near ? 1e-2 : 1e-5, bad);
  }
}

// ---------------------------------------------------------------- diagonal

template <typename S>
std::vector<double> diag_run(const DiagRows& r0, const std::vector<double> (&in)[4], bool gpu, bool backward,
                             const cpu::Kernels& k, std::vector<double>* grads) {
  std::vector<S> v[4];
  DiagRows r = r0;
  const void** ptrs[4] = {&r.mu_p, &r.s_p, &r.mu_q, &r.s_q};
  for (int j = 0; j < (r0.mu_q ? 4 : 2); ++j) {
    v[j].assign(in[j].begin(), in[j].end());
    *ptrs[j] = v[j].data();
  }
  const int64_t N = r.rows, D = r.dim;
  std::vector<S> out(N, S(-7.0f)), g(N, S(1.5f)), gr[4];
  DiagGradOut o;
  for (int j = 0; j < (r0.mu_q ? 4 : 2); ++j) {
    gr[j].assign(N * D, S(-7.0f));
    o.grad[j] = gr[j].data();
  }
  if (!gpu) {
    const cpu::DiagKernels& dk = k.diag_for(kind_of<S>(), r);
    if (backward) dk.backward(kind_of<S>(), r, g.data(), 1, o, 0, N);
    else dk.forward(kind_of<S>(), r, out.data(), 0, N);
  } else {
    // Packs of 16 bytes where the rows allow it, as the launcher decides.
    const int V = 16 / sizeof(S);
    bool packs = D % V == 0;
    for (int j = 0; j < (r.mu_q ? 4 : 2); ++j) packs = packs && r.col_stride[j] == 1 && r.row_stride[j] % V == 0;
    const cuda::DiagPlan p = cuda::diag_plan(N, D, packs ? V : 1);
    auto body = [&](auto HQ, auto VC) {
      constexpr int kV = decltype(VC)::value ? 16 / int(sizeof(S)) : 1;
      constexpr bool kHQ = decltype(HQ)::value;
      launch(p.blocks, p.threads, 0, [&](const HostCtx& ctx) {
        if (backward) {
          dev::diag_backward<S, DiagParam::LogVar, kHQ, kV>(ctx, r, g.data(), 1, o, p);
        } else {
          dev::diag_forward<S, DiagParam::LogVar, kHQ, kV>(ctx, r, out.data(), p);
        }
      });
    };
    if (r.mu_q) {
      packs ? body(std::true_type{}, std::true_type{}) : body(std::true_type{}, std::false_type{});
    } else {
      packs ? body(std::false_type{}, std::true_type{}) : body(std::false_type{}, std::false_type{});
    }
  }
  if (grads) {
    for (int j = 0; j < 4; ++j) grads[j] = widen(gr[j]);
  }
  return widen(out);
}

void run_diag(int N, int D, bool has_q, bool strided, std::mt19937_64& rng, const cpu::Kernels& k) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int cs = strided ? 3 : 1;
  std::vector<double> in[4];
  for (int j = 0; j < (has_q ? 4 : 2); ++j) {
    in[j].resize(size_t(N) * D * cs);
    for (double& v : in[j]) v = j % 2 ? 0.5 * nd(rng) : nd(rng);  // logvar / mean
  }
  if (N > 2) in[1][size_t(2) * D * cs] = NAN;  // one invalid row
  DiagRows r;
  r.rows = N;
  r.dim = D;
  r.param = DiagParam::LogVar;
  for (int j = 0; j < 4; ++j) {
    r.row_stride[j] = int64_t(D) * cs;
    r.col_stride[j] = cs;
  }
  r.mu_p = r.s_p = in[0].data();  // replaced by diag_run
  if (has_q) r.mu_q = r.s_q = in[2].data();
  char tag[128];
  std::snprintf(tag, sizeof tag, "diag N=%d D=%d q=%d strided=%d", N, D, has_q, strided);
  auto both = [&](auto tag_s, const char* name, double rtol) {
    using S = decltype(tag_s);
    std::vector<double> gw[4], gg[4];
    compare(std::string(tag) + " " + name + " kl", diag_run<S>(r, in, true, false, k, nullptr),
            diag_run<S>(r, in, false, false, k, nullptr), rtol, 0.0);
    diag_run<S>(r, in, true, true, k, gg);
    diag_run<S>(r, in, false, true, k, gw);
    for (int j = 0; j < (has_q ? 4 : 2); ++j) {
      compare(std::string(tag) + " " + name + " grad" + std::to_string(j), gg[j], gw[j], rtol, rtol);
    }
  };
  both(double{}, "f64", 1e-12);
  both(float{}, "f32", 1e-5);
  both(c10::Half{}, "f16", 2e-3);
}

}  // namespace

int main() {
  std::mt19937_64 rng(20261207);
  const cpu::Kernels* all[8];
  const int nv = cpu::available_variants(all, 8);
  const std::vector<const cpu::Kernels*> variants(all, all + nv);
  std::printf("CPU variants:");
  for (const cpu::Kernels* v : variants) std::printf(" %s", v->isa);
  std::printf("\n");

  // Diagonal: groups of 1..32 lanes, 16-byte packs or not, every row guard.
  for (int D : {1, 3, 8, 40, 100}) {
    for (bool q : {true, false}) {
      run_diag(11, D, q, false, rng, *variants[0]);
      run_diag(7, D, q, true, rng, *variants[0]);
    }
  }

  using FP = FullParam;
  // Groups of 8, 16 and 32 threads (several per block), blocks of 64 to 128
  // threads (D > 32), padded D, every pair, both layouts, shared q, N(0, I).
  for (int D : {1, 2, 5, 8, 9, 16, 17, 32, 33, 70}) {
    for (bool col : {false, true}) {
      run_full({D, FP::ScaleTril, FP::ScaleTril, true, false, col}, rng, variants);
      run_full({D, FP::Cov, FP::Cov, true, false, col}, rng, variants);
    }
    run_full({D, FP::ScaleTril, FP::ScaleTril, false}, rng, variants);
    run_full({D, FP::Cov, FP::Cov, false}, rng, variants);
    run_full({D, FP::ScaleTril, FP::ScaleTril, true, true}, rng, variants);
    run_full({D, FP::Cov, FP::Cov, true, true, true}, rng, variants);
    run_full({D, FP::ScaleTril, FP::Diag, true, false, true}, rng, variants);
    // scale_tril against a diagonal q row-major and shared, near p == q,
    // and against N(0, I) column-major.
    run_full({D, FP::ScaleTril, FP::Diag, true, true, false, false, DiagParam::Std}, rng, variants);
    run_full({D, FP::ScaleTril, FP::Diag, true, false, false, true, DiagParam::Var}, rng, variants);
    run_full({D, FP::ScaleTril, FP::ScaleTril, false, false, true}, rng, variants);
    run_full({D, FP::Diag, FP::Cov, true}, rng, variants);
    run_full({D, FP::Cov, FP::Diag, true, false, false, false, DiagParam::Var}, rng, variants);
    run_full({D, FP::Diag, FP::ScaleTril, true, false, true, false, DiagParam::Std}, rng, variants);
    run_full({D, FP::ScaleTril, FP::Cov, true, false, true}, rng, variants);
    run_full({D, FP::Cov, FP::ScaleTril, true}, rng, variants);
    run_full({D, FP::ScaleTril, FP::ScaleTril, true, false, true, true}, rng, variants);
    FullCase bad{D, FP::ScaleTril, FP::ScaleTril, true};
    bad.bad_row = 2;
    run_full(bad, rng, variants);
    bad.p = bad.q = FP::Cov;
    run_full(bad, rng, variants);
  }
  run_full({0, FP::ScaleTril, FP::ScaleTril, true}, rng, variants);

  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
