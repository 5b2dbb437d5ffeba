// cuda/plan.h — the launch geometry of every CUDA kernel, computed in one
// place that the launchers (cuda/kernels.cu) and the host emulation
// (tests/cpp/test_emulation.cpp) share: grid, block, groups, dynamic
// shared memory, the global-workspace fallback. Plain C++ (no CUDA
// headers).
#pragma once

#include <cstdint>

#include "../math/problem.h"

namespace gaussian_kl {
namespace cuda {

// Blocks the grid-stride kernels start at most: 16 per SM of a 132-SM
// H100/H200 (rows beyond are strided over).
constexpr int64_t kMaxBlocks = 132 * 16;

// ---------------------------------------------------------------- diagonal
// A group of `group` lanes (a power of two <= 32, the smallest covering
// D / vec) owns a row; each lane reads `vec` consecutive elements per load
// (16-byte loads where the rows allow, else 1). The row sum is a fixed
// xor-shuffle tree inside the group.
struct DiagPlan {
  int threads = 256;
  int group = 1;
  int vec = 1;
  int64_t blocks = 0;
};

inline DiagPlan diag_plan(int64_t rows, int64_t dim, int vec) {
  DiagPlan p;
  p.vec = vec;
  const int64_t work = (dim + vec - 1) / vec;
  while (p.group < 32 && p.group < work) p.group <<= 1;
  const int64_t per_block = p.threads / p.group;
  const int64_t blocks = (rows + per_block - 1) / per_block;
  p.blocks = blocks < kMaxBlocks ? blocks : kMaxBlocks;
  return p;
}

// ---------------------------------------------------------------- full
// A group of `group` threads owns one problem (a batch row) at a time and
// works on it in a scratch of `group_elems` accumulators (math/full.h's
// FullWork and `group` more for the sums): 8, 16 or 32 threads (several
// groups per block) up to D = 32, a block of up to 256 threads above. The
// scratch is dynamic shared memory when a block's fits the device's
// opt-in limit, else a slice of a global workspace per block (at most
// kMaxWorkspaceBytes; blocks stride over the rows).
struct FullPlan {
  int group = 8;          // threads per problem
  int groups = 1;         // problems per block at a time
  int threads = 8;        // group * groups
  int64_t blocks = 0;
  int64_t group_elems = 0;  // scratch accumulators of one group
  int64_t smem_bytes = 0;   // dynamic shared memory of a block (0 with a global workspace)
  int64_t ws_bytes = 0;     // the global workspace (0 in shared memory)
};

constexpr int64_t kMaxWorkspaceBytes = int64_t(256) << 20;

// Accumulators of one problem's scratch: FullWork<A>::size(D, D, backward)
// (7 or 4 D x D matrices and 7 vectors) and `group` for the sums.
inline int64_t full_scratch_elems(int64_t D, bool backward, int group) {
  return (backward ? 7 : 4) * D * D + 7 * D + group;
}

// acc_bytes: 4 (float, half inputs) or 8 (double). smem_optin: the
// device's cudaDevAttrMaxSharedMemoryPerBlockOptin.
inline FullPlan full_plan(int64_t rows, int64_t D, bool backward, int acc_bytes, int64_t smem_optin) {
  FullPlan p;
  if (D <= 32) {
    p.group = D <= 8 ? 8 : (D <= 16 ? 16 : 32);
    p.groups = 128 / p.group;  // four warps
  } else {
    const int64_t t = (D + 31) / 32 * 32;
    p.group = static_cast<int>(t < 256 ? t : 256);
    p.groups = 1;
  }
  p.group_elems = full_scratch_elems(D, backward, p.group);
  const int64_t group_bytes = p.group_elems * acc_bytes;
  while (p.groups > 1 && p.groups * group_bytes > smem_optin) p.groups >>= 1;
  p.threads = p.group * p.groups;
  const int64_t blocks = (rows + p.groups - 1) / p.groups;
  p.blocks = blocks < kMaxBlocks ? blocks : kMaxBlocks;
  if (p.groups * group_bytes <= smem_optin) {
    p.smem_bytes = p.groups * group_bytes;
  } else {  // one group per block, in a global workspace slice
    int64_t b = kMaxWorkspaceBytes / group_bytes;
    if (b < 1) b = 1;
    if (p.blocks > b) p.blocks = b;
    p.ws_bytes = p.blocks * group_bytes;
  }
  if (rows == 0) p.blocks = 0;
  return p;
}

}  // namespace cuda
}  // namespace gaussian_kl
