// The diagonal kernels of the problems no variant vectorises (double or
// strided inputs), compiled once for the baseline and used by every
// variant (cpu/kernels.h).
#define GKL_VARIANT_BASELINE 1
#define GKL_DIAG_GENERIC 1
#include "variant_begin.h"
#include "diag_entry.h"
