// The diag kernels compiled for the avx512 variant (cpu/variant_begin.h).
#define GKL_VARIANT_AVX512 1
#include "variant_begin.h"
#include "diag_entry.h"
