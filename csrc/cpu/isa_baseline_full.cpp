// The full kernels compiled for the baseline variant (cpu/variant_begin.h).
#define GKL_VARIANT_BASELINE 1
#include "variant_begin.h"
#include "full_entry.h"
