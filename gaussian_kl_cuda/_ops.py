"""Loads the native library and registers, for every op, a fake (meta)
kernel for torch.compile / FakeTensor. The forward ops' autograd is native
(csrc/ops/autograd.cpp); transforms and higher derivatives: _autograd.py."""

import torch

from . import _C  # noqa: F401  (loading the library registers the ops)

ops = torch.ops.gaussian_kl


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


#: True when the library was built with its CUDA kernels.
CUDA_KERNELS = _has_kernel("gaussian_kl::kl_diag", "CUDA")


# ---------------------------------------------------------------- kl_diag
@torch.library.register_fake("gaussian_kl::kl_diag")
def _kl_diag_fake(mu_p, s_p, mu_q, s_q, param, check):
    return mu_p.new_empty(mu_p.shape[:-1])


def _fake_grads(inputs, output_mask):
    """Backward outputs: contiguous, the shape of the input where asked for
    (and present), an empty tensor otherwise (the schemas return Tensor)."""
    like = inputs[0]
    return tuple(
        like.new_empty(inputs[i].shape) if (output_mask[i] and inputs[i] is not None) else like.new_empty((0,))
        for i in range(4)
    )


@torch.library.register_fake("gaussian_kl::kl_diag_backward")
def _kl_diag_backward_fake(grad, mu_p, s_p, mu_q, s_q, param, output_mask):
    return _fake_grads((mu_p, s_p, mu_q, s_q), output_mask)


# ---------------------------------------------------------------- kl_full
@torch.library.register_fake("gaussian_kl::kl_full")
def _kl_full_fake(mu_p, m_p, mu_q, m_q, param, check):
    return mu_p.new_empty(mu_p.shape[:-1])


def _col_major(m) -> bool:
    """The native rule (kl_full.cpp, alloc_full_grads): a [*batch, D, D]
    input stored column-major per matrix, batch packed, gets its gradient in
    that layout."""
    D = m.shape[-1]
    if m.dim() < 2 or D < 2 or m.shape[-2] != D or m.stride(-2) != 1 or m.stride(-1) != D:
        return False
    step = D * D
    for i in range(m.dim() - 3, -1, -1):
        if m.shape[i] > 1 and m.stride(i) != step:
            return False
        step *= m.shape[i]
    return True


def _fake_full_grads(inputs, output_mask, matrix=(True, True)):
    grads = list(_fake_grads(inputs, output_mask))
    for k, is_matrix in zip((1, 3), matrix):
        m = inputs[k]
        if is_matrix and output_mask[k] and m is not None and _col_major(m):
            grads[k] = torch.empty_strided(m.shape, _col_major_strides(m.shape), dtype=inputs[0].dtype,
                                           device=inputs[0].device)
    return tuple(grads)


def _col_major_strides(shape):
    D = shape[-1]
    st = [0] * len(shape)
    st[-2], st[-1] = 1, D
    step = D * D
    for i in range(len(shape) - 3, -1, -1):
        st[i] = step
        step *= shape[i]
    return tuple(st)


@torch.library.register_fake("gaussian_kl::kl_full_backward")
def _kl_full_backward_fake(grad, mu_p, m_p, mu_q, m_q, param, output_mask):
    return _fake_full_grads((mu_p, m_p, mu_q, m_q), output_mask)




# ---------------------------------------------------------------- kl_mixed
@torch.library.register_fake("gaussian_kl::kl_mixed")
def _kl_mixed_fake(mu_p, m_p, mu_q, m_q, p_param, q_param, check):
    return mu_p.new_empty(mu_p.shape[:-1])


@torch.library.register_fake("gaussian_kl::kl_mixed_backward")
def _kl_mixed_backward_fake(grad, mu_p, m_p, mu_q, m_q, p_param, q_param, output_mask):
    matrix = tuple(p in ("scale_tril", "cov") for p in (p_param, q_param))
    return _fake_full_grads((mu_p, m_p, mu_q, m_q), output_mask, matrix)
