// The diag kernels compiled for the avx2 variant (cpu/variant_begin.h).
#define GKL_VARIANT_AVX2 1
#include "variant_begin.h"
#include "diag_entry.h"
