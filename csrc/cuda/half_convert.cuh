// kl_load / kl_store (kl_math.h) for CUDA's half types: torch builds with
// __CUDA_NO_HALF_CONVERSIONS__, so they convert through the intrinsics. And
// the dtype dispatch of the full kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../kl_args.h"
#include "../kl_math.h"

namespace gaussian_kl {

template <>
GKL_INLINE float kl_load<__half>(const __half& x) {
  return __half2float(x);
}
template <>
GKL_INLINE float kl_load<__nv_bfloat16>(const __nv_bfloat16& x) {
  return __bfloat162float(x);
}
template <>
GKL_INLINE __half kl_store<__half, float>(float x) {
  return __float2half_rn(x);
}
template <>
GKL_INLINE __nv_bfloat16 kl_store<__nv_bfloat16, float>(float x) {
  return __float2bfloat16_rn(x);
}

// dtype -> f(element tag).
template <typename F>
void dispatch_kind(ScalarKind kind, const F& f) {
  switch (kind) {
    case ScalarKind::Float: f(float{}); break;
    case ScalarKind::Double: f(double{}); break;
    case ScalarKind::Half: f(__half{}); break;
    case ScalarKind::BFloat16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace gaussian_kl
