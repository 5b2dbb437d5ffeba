// CUDA kernels of kl_full for D <= 32 (scale_tril or cov; q per row, shared
// or N(0, I)), forward and backward: a group of G = 8, 16 or 32 lanes
// per batch element, rows in registers, warp shuffles (kl_full_group.h; the
// same code runs under a host emulation of the lanes in
// tests/cpp/test_group_emulation.cpp). A file of its own: the unrolled
// G = 32 code is most of the CUDA compile time, which ninja then overlaps
// with the other files.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "../kl_full_group.h"
#include "half_convert.cuh"
#include "kl_full_kernels.h"

namespace gaussian_kl {

namespace {

// Lane primitives of kl_full_group.h on a CUDA warp split into groups of G.
template <int G, typename A>
struct WarpLanes {
  int lane_;  // within the group
  A* smem_;   // G * (G + 1) of this group (backward), or null
  __device__ int lane() const { return lane_; }
  template <typename T>
  __device__ T shfl(T v, int src) const { return __shfl_sync(0xffffffffu, v, src, G); }
  template <typename T>
  __device__ T shfl_xor(T v, int mask) const { return __shfl_xor_sync(0xffffffffu, v, mask, G); }
  __device__ void sync() const { __syncwarp(); }
  __device__ A* smem() const { return smem_; }
};

constexpr int kGroupWarps = 4;  // warps per block of the group kernels

// Warps stride over tiles of 32 / G rows; every lane of a warp runs every
// iteration (the shuffles need the whole warp), a group past the last row
// recomputes the last row and stores nothing.
template <typename S, FullParam P, bool HasQ, int G>
__global__ void __launch_bounds__(kGroupWarps * 32) kl_full_group_forward_kernel(const FullRows r, S* __restrict__ out) {
  using A = typename AccType<S>::type;
  constexpr int kPerWarp = 32 / G;
  const int lane32 = static_cast<int>(threadIdx.x & 31);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const WarpLanes<G, A> lanes{lane32 % G, nullptr};
  for (int64_t base = warp * kPerWarp; base < r.rows; base += nwarps * kPerWarp) {
    const int64_t row = base + lane32 / G;
    const bool active = row < r.rows;
    const A kl = group::forward<G, P, HasQ, StdMath, S>(r, active ? row : r.rows - 1, lanes);
    if (active && lanes.lane() == 0) out[row] = kl_store<S>(kl);
  }
}

template <typename S, FullParam P, bool HasQ, int G>
__global__ void __launch_bounds__(kGroupWarps * 32) kl_full_group_backward_kernel(
    const FullRows r, const S* __restrict__ g, int64_t g_stride, const FullGradOut o) {
  using A = typename AccType<S>::type;
  constexpr int kPerWarp = 32 / G;
  __shared__ A sm[kGroupWarps * 32 * (G + 1)];
  const int lane32 = static_cast<int>(threadIdx.x & 31);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const WarpLanes<G, A> lanes{lane32 % G, sm + (threadIdx.x >> 5) * 32 * (G + 1) + (lane32 / G) * G * (G + 1)};
  for (int64_t base = warp * kPerWarp; base < r.rows; base += nwarps * kPerWarp) {
    const int64_t row = base + lane32 / G;
    const bool active = row < r.rows;
    const int64_t at = active ? row : r.rows - 1;
    group::backward<G, P, HasQ, StdMath, S>(r, at, kl_load(g[at * g_stride]), o, active, lanes);
  }
}

// Blocks for `rows` rows in groups of G (at most 16 per SM of a 132-SM
// H100/H200; the warps stride over the rest).
inline unsigned group_blocks(int64_t rows, int G) {
  const int64_t per_block = kGroupWarps * (32 / G);
  const int64_t b = (rows + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 132 * 16 ? b : 132 * 16);
}

// G for event size D -> f(std::integral_constant<int, G>).
template <typename F>
void dispatch_group(int64_t D, const F& f) {
  switch (group::width(D)) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: return f(std::integral_constant<int, 32>{});
  }
}

}  // namespace

cudaError_t kl_full_group_forward_launch(ScalarKind kind, FullParam param, const FullRows& r, void* out,
                                         cudaStream_t stream) {
  dispatch_kind(kind, [&](auto tag) {
    using S = decltype(tag);
    dispatch_full_variant(param, r.has_q(), [&](auto P, auto HQ) {
      dispatch_group(r.dim, [&](auto G) {
        constexpr int kG = decltype(G)::value;
        kl_full_group_forward_kernel<S, decltype(P)::value, decltype(HQ)::value, kG>
            <<<group_blocks(r.rows, kG), kGroupWarps * 32, 0, stream>>>(r, static_cast<S*>(out));
      });
    });
  });
  return cudaGetLastError();
}

cudaError_t kl_full_group_backward_launch(ScalarKind kind, FullParam param, const FullRows& r, const void* grad,
                                          int64_t grad_stride, const FullGradOut& o, cudaStream_t stream) {
  dispatch_kind(kind, [&](auto tag) {
    using S = decltype(tag);
    dispatch_full_variant(param, r.has_q(), [&](auto P, auto HQ) {
      dispatch_group(r.dim, [&](auto G) {
        constexpr int kG = decltype(G)::value;
        kl_full_group_backward_kernel<S, decltype(P)::value, decltype(HQ)::value, kG>
            <<<group_blocks(r.rows, kG), kGroupWarps * 32, 0, stream>>>(
                r, static_cast<const S*>(grad), grad_stride, o);
      });
    });
  });
  return cudaGetLastError();
}

}  // namespace gaussian_kl
