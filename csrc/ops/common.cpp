#include "common.h"

#include <ATen/ATen.h>
#include <ATen/TensorUtils.h>

#include <sstream>

namespace gaussian_kl {

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

std::string unravel(int64_t row, c10::IntArrayRef batch) {
  std::vector<int64_t> idx(batch.size());
  for (int64_t i = static_cast<int64_t>(batch.size()) - 1; i >= 0; --i) {
    idx[i] = row % batch[i];
    row /= batch[i];
  }
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < idx.size(); ++i) os << (i ? ", " : "") << idx[i];
  if (idx.size() == 1) os << ",";
  os << ")";
  return os.str();
}

at::Tensor as_rows(const at::Tensor& t, int64_t rows, c10::IntArrayRef tail) {
  std::vector<int64_t> shape = {rows};
  shape.insert(shape.end(), tail.begin(), tail.end());
  if (auto st = at::detail::computeStride(t.sizes(), t.strides(), shape)) {
    return t.as_strided(shape, *st);
  }
  return t.reshape(shape);
}

at::Tensor grad_rows(const char* op, const at::Tensor& grad, const at::Tensor& like, c10::IntArrayRef batch_shape,
                     at::ScalarType dtype, int64_t rows) {
  TORCH_CHECK_VALUE(grad.sizes() == batch_shape, op, "_backward: grad must have the batch shape of the inputs ",
                    shape_str(batch_shape), ", got ", shape_str(grad.sizes()));
  TORCH_CHECK_VALUE(grad.device() == like.device(), op, "_backward: grad is on ", grad.device(),
                    " but the inputs are on ", like.device());
  return as_rows(grad.to(dtype).unsqueeze(-1), rows, {1}).select(1, 0);
}

int64_t first_nan_row(const at::Tensor& out) {
  if (out.numel() == 0) return -1;
  const at::Tensor bad = at::isnan(out.reshape({-1}));
  if (!bad.any().item<bool>()) return -1;  // the one host sync of check=True
  return bad.to(at::kInt).argmax().item<int64_t>();
}

std::vector<at::Tensor> alloc_grads(
    const std::vector<int64_t> (&shapes)[4],
    const bool (&present)[4],
    c10::ArrayRef<bool> mask,
    const at::Tensor& like,
    void* (&ptrs)[4]) {
  TORCH_CHECK_VALUE(mask.size() == 4, "gaussian_kl backward: output_mask must have 4 entries");
  std::vector<at::Tensor> grads(4);
  for (int i = 0; i < 4; ++i) {
    const bool needed = mask[i] && present[i];
    grads[i] = at::empty(needed ? c10::IntArrayRef(shapes[i]) : c10::IntArrayRef({0}), like.options());
    ptrs[i] = needed ? grads[i].data_ptr() : nullptr;
  }
  return grads;
}

ScalarKind scalar_kind(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return ScalarKind::Float;
    case at::kDouble:
      return ScalarKind::Double;
    case at::kHalf:
      return ScalarKind::Half;
    case at::kBFloat16:
      return ScalarKind::BFloat16;
    default:
      TORCH_CHECK_TYPE(
          false,
          "gaussian_kl: expected a float32, float64, float16 or bfloat16 tensor, got ",
          dtype);
  }
}

}  // namespace gaussian_kl
