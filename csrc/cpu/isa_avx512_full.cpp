// The full kernels compiled for the avx512 variant (cpu/variant_begin.h).
#define GKL_VARIANT_AVX512 1
#include "variant_begin.h"
#include "full_entry.h"
