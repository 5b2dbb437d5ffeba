// cuda/half.cuh — kl_load / kl_store (math/config.h) for CUDA's half
// types: torch builds with __CUDA_NO_HALF_CONVERSIONS__, so they convert
// through the intrinsics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../math/config.h"

GKL_NS_BEGIN

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

GKL_NS_END
