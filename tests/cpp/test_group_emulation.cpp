// The CUDA lane-group kernels' code (csrc/kl_full_group.h) run on the CPU:
// each lane of a group is a fiber (ucontext) of one host thread, a barrier
// passes control to the next lane round-robin, and a shuffle is a store to a
// shared slot, a barrier and a load (the warp's lock-step, made explicit,
// and deterministic: no OS scheduling in the loop), so the
// exact code the GPU runs (indexing, padding to G, the right-looking solves,
// the shuffle and shared-memory traffic) is checked without a GPU. Forward
// and every gradient are compared with the row code of the CPU kernels
// (kl_full_row.h, itself tested against float64 references and
// torch.distributions in tests/test_full.py), in float64 and in float32, for
// every group width, padded and full D, row- and column-major inputs and
// gradients, a shared q, no q (N(0, I)), near p == q, and a non-finite row;
// cov pairs (the in-group Cholesky, inverses) likewise, with an indefinite row.
// Built and run by CMake/ctest; no torch library needed.
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "kl_full_block.h"
#include "kl_full_group.h"
#include "kl_full_row.h"

using namespace gaussian_kl;

namespace {

int g_pass = 0;
int g_fail = 0;

// One group of G lanes as fibers of the calling thread. A barrier switches
// to the next lane; the last lane to arrive switches to lane 0, which then
// finds every lane arrived (all lanes make the same calls, as on the GPU).
struct Group {
  explicit Group(int G)
      : G(G), ctx(G), stacks(G), slot{std::vector<double>(G), std::vector<double>(G)}, smem(G * (G + 1)) {
    for (auto& st : stacks) st.reset(new char[kStack]);  // uninitialised
  }
  static constexpr size_t kStack = 256 << 10;
  int G;
  int current = 0;
  std::vector<ucontext_t> ctx;
  ucontext_t main_ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<double> slot[2];  // alternate slots: one barrier per shuffle
  std::vector<double> smem;     // G * (G + 1) accumulators (double holds either A)
  std::function<void(int)> body;

  void barrier() {
    const int me = current;
    current = (me + 1) % G;
    swapcontext(&ctx[me], &ctx[current]);
  }
  static void entry(unsigned hi, unsigned lo) {  // makecontext passes ints
    Group* g = reinterpret_cast<Group*>((static_cast<uintptr_t>(hi) << 32) | lo);
    g->body(g->current);
  }  // returns to main_ctx (uc_link)
  // Runs body(lane) on every lane to completion.
  void run(std::function<void(int)> f) {
    body = std::move(f);
    const uintptr_t self = reinterpret_cast<uintptr_t>(this);
    for (int l = 0; l < G; ++l) {
      getcontext(&ctx[l]);
      ctx[l].uc_stack.ss_sp = stacks[l].get();
      ctx[l].uc_stack.ss_size = kStack;
      ctx[l].uc_link = &main_ctx;
      makecontext(&ctx[l], reinterpret_cast<void (*)()>(&Group::entry), 2, static_cast<unsigned>(self >> 32),
                  static_cast<unsigned>(self & 0xffffffffu));
    }
    // A lane that returns comes back here; the others wait at their last
    // barrier and are resumed in turn.
    for (int l = 0; l < G; ++l) {
      current = l;
      swapcontext(&main_ctx, &ctx[l]);
    }
  }
};

// The lane policy of kl_full_group.h over the fibers. Every lane makes the
// same sequence of calls (as on the GPU), so the slot parities agree.
template <typename A>
struct HostLanes {
  int lane_;
  Group* grp;
  mutable int parity = 0;
  int lane() const { return lane_; }
  template <typename T>
  T shfl(T v, int src) const {
    std::vector<double>& s = grp->slot[parity];
    parity ^= 1;
    s[lane_] = static_cast<double>(v);
    grp->barrier();
    return static_cast<T>(s[src]);  // a slot is rewritten two shuffles later, after another barrier
  }
  template <typename T>
  T shfl_xor(T v, int mask) const { return shfl(v, lane_ ^ mask); }
  void sync() const { grp->barrier(); }
  A* smem() const { return reinterpret_cast<A*>(grp->smem.data()); }
};

// The thread policy of kl_full_block.h over the fibers (every thread makes
// the same sequence of calls, as the CUDA block does).
template <typename A>
struct HostBlock {
  int thread_;
  Group* grp;
  mutable int parity = 0;
  int thread() const { return thread_; }
  int count() const { return grp->G; }
  void sync() const { grp->barrier(); }
  A sum(A v) const {  // in thread order: the same value on every thread
    std::vector<double>& s = grp->slot[parity];
    parity ^= 1;
    s[thread_] = static_cast<double>(v);
    grp->barrier();
    A t = A(0);
    for (int k = 0; k < grp->G; ++k) t += static_cast<A>(s[k]);
    return t;
  }
};

struct Case {
  int D;
  bool has_q;
  bool q_shared;   // q's row stride 0
  bool col_major;  // inputs and matrix gradients column-major
  bool near;       // q = p perturbed by 1e-4 relative
  FullParam param = FullParam::ScaleTril;  // cov: L L^T of the random factors
  bool host_q = false;  // cov, shared q: factored once on the host (FullRows::lq_shared)
};

// The covariances L L^T of `rows` factors stored in m (lower triangles, in
// the case's layout), written in full (symmetric: either layout).
void to_cov(const Case& c, std::vector<double>& m, int rows) {
  const int D = c.D;
  std::vector<double> out(m.size());
  auto at = [&](int i, int k) { return c.col_major ? static_cast<size_t>(k) * D + i : static_cast<size_t>(i) * D + k; };
  for (int n = 0; n < rows; ++n) {
    const double* l = m.data() + static_cast<size_t>(n) * D * D;
    for (int i = 0; i < D; ++i) {
      for (int j = 0; j < D; ++j) {
        double s = 0;
        for (int k = 0; k <= std::min(i, j); ++k) s += l[at(i, k)] * l[at(j, k)];
        out[static_cast<size_t>(n) * D * D + static_cast<size_t>(i) * D + j] = s;
      }
    }
  }
  m = out;
}

// N rows of inputs in double (cast to S for the run); the upper triangles
// hold large garbage (never read).
struct Inputs {
  std::vector<double> mu_p, m_p, mu_q, m_q;
};

Inputs make_inputs(const Case& c, int N, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int D = c.D;
  Inputs in;
  auto tril = [&](std::vector<double>& m, int rows) {
    m.resize(static_cast<size_t>(rows) * D * D);
    for (int n = 0; n < rows; ++n) {
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j < D; ++j) {
          double v = j < i ? 0.4 * nd(rng) / std::sqrt(D) : (j == i ? std::exp(0.3 * nd(rng)) : 1e6 * nd(rng));
          const int64_t at = c.col_major ? static_cast<int64_t>(j) * D + i : static_cast<int64_t>(i) * D + j;
          m[static_cast<size_t>(n) * D * D + at] = v;
        }
      }
    }
  };
  in.mu_p.resize(static_cast<size_t>(N) * D);
  for (double& v : in.mu_p) v = nd(rng);
  tril(in.m_p, N);
  if (c.has_q) {
    const int nq = c.q_shared ? 1 : N;
    in.mu_q.resize(static_cast<size_t>(N) * D);
    for (double& v : in.mu_q) v = nd(rng);
    tril(in.m_q, nq);
    if (c.near) {  // q = p (1 + 1e-4 noise) on the lower triangle (q not shared)
      for (size_t k = 0; k < in.m_q.size(); ++k) in.m_q[k] = in.m_p[k] * (1 + 1e-4 * nd(rng));
      for (size_t k = 0; k < in.mu_q.size(); ++k) in.mu_q[k] = in.mu_p[k] + 1e-4 * nd(rng);
    }
  }
  if (c.param == FullParam::Cov) {
    to_cov(c, in.m_p, N);
    if (c.has_q) to_cov(c, in.m_q, c.q_shared ? 1 : N);
  }
  return in;
}

template <typename S>
struct Run {
  using A = typename AccType<S>::type;
  std::vector<S> mu_p, m_p, mu_q, m_q;
  std::vector<A> lq;  // host_q: the factor of the shared q
  FullRows r;
  Run(const Case& c, const Inputs& in, int N) {
    auto cast = [](const std::vector<double>& v) { return std::vector<S>(v.begin(), v.end()); };
    mu_p = cast(in.mu_p);
    m_p = cast(in.m_p);
    mu_q = cast(in.mu_q);
    m_q = cast(in.m_q);
    const int D = c.D;
    r.mu_p = mu_p.data();
    r.m_p = m_p.data();
    r.mu_rs[0] = D;
    r.m_rs[0] = static_cast<int64_t>(D) * D;
    for (int k = 0; k < 2; ++k) {
      r.m_s0[k] = c.col_major ? 1 : D;
      r.m_s1[k] = c.col_major ? D : 1;
    }
    if (c.has_q) {
      r.mu_q = mu_q.data();
      r.m_q = m_q.data();
      r.mu_rs[1] = D;
      r.m_rs[1] = c.q_shared ? 0 : static_cast<int64_t>(D) * D;
    }
    if (c.host_q) {  // as the launcher does: factor the (symmetric, row-major) covariance in A
      lq.assign(m_q.begin(), m_q.begin() + static_cast<size_t>(D) * D);
      if (!cholesky_lower<StdMath>(lq.data(), D)) std::fill(lq.begin(), lq.end(), kl_nan<A>());
      r.lq_shared = lq.data();
    }
    r.rows = N;
    r.dim = D;
  }
};

struct Result {
  std::vector<double> kl, grad[4];
};

// Gradient buffers (S) in o, sized for N rows; gq only with q.
template <typename S>
struct Grads {
  std::vector<S> g[4];
  FullGradOut o;
  Grads(const Case& c, int N) {
    const size_t D = c.D;
    const size_t sizes[4] = {N * D, N * D * D, N * D, N * D * D};
    for (int k = 0; k < 4; ++k) {
      if (k >= 2 && !c.has_q) continue;
      g[k].assign(sizes[k], S(-7));  // every element must be written
      o.grad[k] = g[k].data();
      o.col_major[k] = c.col_major && (k == 1 || k == 3);
    }
  }
  void into(Result* res) const {
    for (int k = 0; k < 4; ++k) res->grad[k].assign(g[k].begin(), g[k].end());
  }
};

// body(lanes) on the G lanes of a group.
template <int G, typename A, typename F>
void on_lanes(const F& body) {
  Group grp(G);
  grp.run([&](int lane) { body(HostLanes<A>{lane, &grp}); });
}

// The lane-group code on G lanes.
template <FullParam P, int G, typename S>
Result run_group(const Case& c, const Inputs& in, int N, const std::vector<double>& gin) {
  using A = typename AccType<S>::type;
  Run<S> run(c, in, N);
  Grads<S> grads(c, N);
  std::vector<S> gs(gin.begin(), gin.end());
  Result res;
  res.kl.assign(N, 0.0);
  on_lanes<G, A>([&](const HostLanes<A>& lanes) {
    const int lane = lanes.lane();
    for (int64_t row = 0; row < N; ++row) {
      const A kl = c.has_q ? group::forward<G, P, true, StdMath, S>(run.r, row, lanes)
                           : group::forward<G, P, false, StdMath, S>(run.r, row, lanes);
      if (lane == 0) res.kl[row] = kl;
      const A g = kl_load(gs[row]);
      if (c.has_q) {
        group::backward<G, P, true, StdMath, S>(run.r, row, g, grads.o, true, lanes);
      } else {
        group::backward<G, P, false, StdMath, S>(run.r, row, g, grads.o, true, lanes);
      }
    }
  });
  grads.into(&res);
  return res;
}

// The block code on nt threads.
template <FullParam P, typename S>
Result run_block(const Case& c, const Inputs& in, int N, const std::vector<double>& gin, int nt) {
  using A = typename AccType<S>::type;
  Run<S> run(c, in, N);
  Grads<S> grads(c, N);
  std::vector<S> gs(gin.begin(), gin.end());
  const int na = std::max(block::arrays(P, false), block::arrays(P, true));
  std::vector<A> scratch(block::scratch_size(c.D, na), A(-3));  // stale values: must be overwritten
  const block::Scratch<A> w(scratch.data(), c.D, na);
  Result res;
  res.kl.assign(N, 0.0);
  // Forward and backward as separate launches (the scratch holds stale
  // values at each start, and each row's the previous row's).
  Group grp(nt);
  grp.run([&](int t) {
    const HostBlock<A> bl{t, &grp};
    for (int64_t row = 0; row < N; ++row) {
      const A kl = c.has_q ? block::forward<P, true, StdMath, S>(run.r, row, bl, w)
                           : block::forward<P, false, StdMath, S>(run.r, row, bl, w);
      if (t == 0) res.kl[row] = kl;
    }
  });
  std::fill(scratch.begin(), scratch.end(), A(-3));
  grp.run([&](int t) {
    const HostBlock<A> bl{t, &grp};
    for (int64_t row = 0; row < N; ++row) {
      const A g = kl_load(gs[row]);
      if (c.has_q) {
        block::backward<P, true, StdMath, S>(run.r, row, g, grads.o, bl, w);
      } else {
        block::backward<P, false, StdMath, S>(run.r, row, g, grads.o, bl, w);
      }
    }
  });
  grads.into(&res);
  return res;
}

// The CPU row code (the reference), in S.
template <FullParam P, typename S>
Result run_rows(const Case& c, const Inputs& in, int N, const std::vector<double>& gin) {
  using A = typename AccType<S>::type;
  Run<S> run(c, in, N);
  Grads<S> grads(c, N);
  std::vector<A> ws(FullWork<A>::size(c.D));
  const FullWork<A> w(ws.data(), c.D);
  Result res;
  for (int64_t row = 0; row < N; ++row) {
    if (c.has_q) {
      res.kl.push_back(full_row_forward<P, P, true, StdMath, S>(run.r, row, w));
      full_row_backward<P, P, true, StdMath, S>(run.r, row, A(gin[row]), w, grads.o);
    } else {
      res.kl.push_back(full_row_forward<P, P, false, StdMath, S>(run.r, row, w));
      full_row_backward<P, P, false, StdMath, S>(run.r, row, A(gin[row]), w, grads.o);
    }
  }
  grads.into(&res);
  return res;
}

void compare(const char* what, const std::vector<double>& got, const std::vector<double>& want, double rtol,
             double atol_scale) {
  // atol relative to the largest |want| (gradients: entries that cancel to ~0).
  double big = 0;
  for (double v : want) big = std::fmax(big, std::fabs(v));
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
    std::printf("FAIL %s: %d of %zu differ; first [%zu] got %.10g want %.10g\n", what, bad, want.size(), first,
                got.empty() ? 0.0 : got[first], want.empty() ? 0.0 : want[first]);
  } else {
    ++g_pass;
  }
}

// The code under test: a lane group of G (kl_full_group.h) or a block of
// nt threads (kl_full_block.h).
template <int G>
struct OnGroup {
  void name(char* buf, size_t n) const { std::snprintf(buf, n, "G=%d", G); }
  template <FullParam P, typename S>
  Result run(const Case& c, const Inputs& in, int N, const std::vector<double>& gin) const {
    return run_group<P, G, S>(c, in, N, gin);
  }
};
struct OnBlock {
  int nt;
  void name(char* buf, size_t n) const { std::snprintf(buf, n, "block of %d", nt); }
  template <FullParam P, typename S>
  Result run(const Case& c, const Inputs& in, int N, const std::vector<double>& gin) const {
    return run_block<P, S>(c, in, N, gin, nt);
  }
};

template <typename On>
void run_case(const On& on, const Case& c, std::mt19937_64& rng) {
  const int N = 3;
  Inputs in = make_inputs(c, N, rng);
  std::vector<double> gin(N);
  std::uniform_real_distribution<double> ud(0.5, 2.0);
  for (double& v : gin) v = ud(rng);
  const bool cov = c.param == FullParam::Cov;
  char who[40], tag[200];
  on.name(who, sizeof who);
  std::snprintf(tag, sizeof tag, "%s %s D=%d q=%d shared=%d col=%d near=%d host_q=%d", cov ? "cov" : "scale_tril",
                who, c.D, c.has_q, c.q_shared, c.col_major, c.near, c.host_q);
  char what[260];
  auto check_all = [&](const char* prec, const Result& got, const Result& want, double rtol, double atol) {
    std::snprintf(what, sizeof what, "%s %s kl", tag, prec);
    compare(what, got.kl, want.kl, rtol, 0.0);
    const char* names[4] = {"dmu_p", "dL_p", "dmu_q", "dL_q"};
    for (int k = 0; k < 4; ++k) {
      std::snprintf(what, sizeof what, "%s %s %s", tag, prec, names[k]);
      compare(what, got.grad[k], want.grad[k], rtol, atol);
    }
  };
  auto both = [&](auto P) {
    constexpr FullParam kP = decltype(P)::value;
    const Result want = run_rows<kP, double>(c, in, N, gin);
    // float64: the same math, rounding order aside.
    check_all("f64", on.template run<kP, double>(c, in, N, gin), want, 1e-9, 1e-12);
    // float32 against the float64 row code (near p == q: KL ~ 1e-8, relative 1e-2).
    check_all("f32", on.template run<kP, float>(c, in, N, gin), want, c.near ? 1e-2 : 2e-4, c.near ? 1e-2 : 1e-5);
  };
  if (cov) {
    both(FullParamC<FullParam::Cov>{});
  } else {
    both(FullParamC<FullParam::ScaleTril>{});
  }
}

// One bad row, float32: that row's KL is NaN (as the row code's), the
// others are right. scale_tril: +inf in p of row 1 (it would only make the
// sum +inf: the NaN comes from the x - x check of the inputs); cov: row 2 of
// p indefinite (found at the last pivot of the Cholesky factorisation).
template <FullParam P, typename On>
void run_bad_row_case(const On& on, int D, std::mt19937_64& rng) {
  const Case c{D, true, false, false, false, P};
  const int N = 3;
  const bool cov = P == FullParam::Cov;
  const int bad = cov ? 2 : 1;
  Inputs in = make_inputs(c, N, rng);
  if (cov) {
    in.m_p[static_cast<size_t>(bad) * D * D + static_cast<size_t>(D - 1) * D + (D - 1)] = -1.0;
  } else {
    in.m_p[static_cast<size_t>(bad) * D * D + static_cast<size_t>(D - 1) * D] = INFINITY;
  }
  const std::vector<double> gin(N, 1.0);
  const Result got = on.template run<P, float>(c, in, N, gin);
  const Result want = run_rows<P, double>(c, in, N, gin);
  bool ok = std::isnan(got.kl[bad]) && std::isnan(want.kl[bad]);
  for (int row = 0; row < N; ++row) {
    if (row != bad) ok = ok && std::fabs(got.kl[row] - want.kl[row]) <= 2e-4 * want.kl[row];
  }
  char who[40];
  on.name(who, sizeof who);
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %s %s D=%d bad row %d: got %g %g %g, want %g %g %g\n", cov ? "cov" : "scale_tril", who, D,
                bad, got.kl[0], got.kl[1], got.kl[2], want.kl[0], want.kl[1], want.kl[2]);
  }
}

// The cases of each D on `on`.
template <typename On>
void run_dims(const On& on, std::initializer_list<int> dims, std::mt19937_64& rng) {
  for (int D : dims) {
    run_case(on, {D, true, false, false, false}, rng);
    run_case(on, {D, false, false, false, false}, rng);
    run_case(on, {D, true, true, true, false}, rng);
    run_case(on, {D, true, false, true, true}, rng);
    run_bad_row_case<FullParam::ScaleTril>(on, D, rng);
    constexpr FullParam kCov = FullParam::Cov;
    run_case(on, {D, true, false, false, false, kCov}, rng);
    run_case(on, {D, false, false, false, false, kCov}, rng);
    run_case(on, {D, true, true, true, false, kCov}, rng);
    run_case(on, {D, true, false, false, true, kCov}, rng);
    run_bad_row_case<FullParam::Cov>(on, D, rng);
  }
}

template <int G>
void run_width(std::initializer_list<int> dims, std::mt19937_64& rng) {
  for (int D : dims) {
    if (group::width(D) != G) {
      ++g_fail;
      std::printf("FAIL D=%d is not run with G=%d\n", D, G);
    }
  }
  run_dims(OnGroup<G>{}, dims, rng);
}

// Block cases: the D the lane groups leave (33 .. 128 and beyond), a few
// small D, more columns than threads (threads stride), and a shared cov q
// factored on the host (lq_shared), which only the block code takes.
void run_blocks(std::mt19937_64& rng) {
  run_dims(OnBlock{64}, {1, 5, 33, 64}, rng);
  run_dims(OnBlock{96}, {100}, rng);
  run_dims(OnBlock{32}, {70}, rng);
  for (int D : {5, 40}) {
    Case c{D, true, true, false, false, FullParam::Cov};
    c.host_q = true;
    run_case(OnBlock{64}, c, rng);
    c.col_major = true;
    run_case(OnBlock{64}, c, rng);
  }
}

}  // namespace

int main() {
  std::mt19937_64 rng(20261129);
  run_width<8>({1, 2, 5, 8}, rng);
  run_width<16>({9, 16}, rng);
  run_width<32>({17, 32}, rng);
  run_blocks(rng);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
