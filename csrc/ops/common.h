// ops/common.h — helpers shared by the torch-facing code of every op
// (argument views, gradient allocation, the check=True error).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "../math/problem.h"

namespace gaussian_kl {

std::string shape_str(c10::IntArrayRef s);

// "(i, j)" multi-index of flat row `row` in `batch` ("(i,)" for one dim).
std::string unravel(int64_t row, c10::IntArrayRef batch);

// View of t ([*batch, *tail]) as [rows, *tail] without a copy when the batch
// dims merge into one stride (always for contiguous and for expanded
// tensors); otherwise a contiguous copy.
at::Tensor as_rows(const at::Tensor& t, int64_t rows, c10::IntArrayRef tail);

// The incoming gradient of op's backward as an [N] view in `dtype` (often
// an expanded scalar, read in place). ValueError unless it has the batch
// shape and the device of the inputs (`like`).
at::Tensor grad_rows(const char* op, const at::Tensor& grad, const at::Tensor& like, c10::IntArrayRef batch_shape,
                     at::ScalarType dtype, int64_t rows);

ScalarKind scalar_kind(at::ScalarType dtype);

// The four outputs of a backward op: grads[i] with shapes[i] (contiguous)
// where mask[i] and present[i], else an empty tensor (the schemas return
// Tensor, not Tensor?); ptrs[i] = its data, or null when not computed.
std::vector<at::Tensor> alloc_grads(
    const std::vector<int64_t> (&shapes)[4],
    const bool (&present)[4],
    c10::ArrayRef<bool> mask,
    const at::Tensor& like,
    void* (&ptrs)[4]);

// Index of the first NaN in `out` (the per-row KL), or -1. Invalid rows are
// NaN by construction, so this is the whole check=True test: one reduction
// and one host sync on CUDA; the index is computed only when there is one.
int64_t first_nan_row(const at::Tensor& out);

}  // namespace gaussian_kl
