"""Loads the native library and registers, for every op, a fake (meta)
kernel for torch.compile / FakeTensor, and the autograd of the backward ops
(second derivatives). The forward ops' autograd is native
(csrc/kl_autograd.cpp)."""

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


# Autograd of kl_diag, kl_full and kl_mixed is registered in C++
# (csrc/kl_autograd.cpp): the backward node calls the native backward op
# with the mask of the gradients autograd asks for.


# Double backward of the diagonal KL (Hessian-vector products, TRPO /
# natural-gradient code with create_graph=True): the backward op is
# differentiable. Its derivative is the vector-Jacobian product of the
# closed-form gradient below, written in torch ops and differentiated by
# autograd, so every higher order is right too. (The first derivative stays
# native; only second and higher orders go through these torch ops.)
def _variance(s, param):
    if param == "std":
        return s * s
    if param == "var":
        return s
    if param == "logvar":
        return torch.exp(s)
    return torch.exp(2 * s)


def _dv_ds(s, v, param):
    if param == "std":
        return 2 * s
    if param == "var":
        return torch.ones_like(s)
    if param == "logvar":
        return v
    return 2 * v


def diag_grads_closed_form(grad, mu_p, s_p, mu_q, s_q, param):
    """grad[..., None] * d KL / d(mu_p, s_p, mu_q, s_q), in torch ops
    (docs/design.md, "Diagonal"); mu_q = s_q = None means N(0, I). Used for second
    derivatives only (the native backward is the accurate first derivative)."""
    g = grad.unsqueeze(-1)
    vp = _variance(s_p, param)
    if mu_q is None:
        delta, vq = -mu_p, torch.ones_like(vp)
    else:
        delta, vq = mu_q - mu_p, _variance(s_q, param)
    d_mu_q = g * delta / vq
    d_vp = 0.5 * (1 / vq - 1 / vp)
    grads = [-d_mu_q, g * d_vp * _dv_ds(s_p, vp, param), None, None]
    if mu_q is not None:
        d_vq = 0.5 * (vq - vp - delta * delta) / (vq * vq)
        grads[2:] = [d_mu_q, g * d_vq * _dv_ds(s_q, vq, param)]
    return grads


def _kl_diag_backward_setup_context(ctx, inputs, output):
    grad, mu_p, s_p, mu_q, s_q, param, output_mask = inputs
    ctx.save_for_backward(grad, mu_p, s_p, mu_q, s_q)
    ctx.param = param
    ctx.output_mask = list(output_mask)


def _kl_diag_double_backward(ctx, *ggs):
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:5]
    create_graph = torch.is_grad_enabled()
    wrt = [t for t, n in zip(saved, needs) if n]
    result = [None] * 7
    if not wrt:
        return tuple(result)
    with torch.enable_grad():
        firsts = diag_grads_closed_form(*saved, ctx.param)
        pairs = [
            (f, gg)
            for f, gg, m in zip(firsts, ggs, ctx.output_mask)
            if m and f is not None and gg is not None and gg.numel() == f.numel()
        ]
        if not pairs:
            return tuple(result)
        outs = torch.autograd.grad(
            [f for f, _ in pairs], wrt, [gg for _, gg in pairs],
            create_graph=create_graph, allow_unused=True,
        )
    it = iter(outs)
    for i, n in enumerate(needs):
        if n:
            result[i] = next(it)
    return tuple(result)


torch.library.register_autograd(
    "gaussian_kl::kl_diag_backward",
    _kl_diag_double_backward,
    setup_context=_kl_diag_backward_setup_context,
)


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




# The full-covariance backward ops are differentiable only in that they say
# so: a second derivative raises a clear error instead of autograd's
# fallback, which would treat the gradient as a constant and return a
# silently wrong (zero) second derivative.
def _no_setup_context(ctx, inputs, output):
    pass


def _no_double_backward(op):
    def double_backward(ctx, *grads):
        raise RuntimeError(
            f"gaussian_kl_cuda: second derivatives of {op} (double backward, create_graph=True "
            "then differentiating the gradient) are not implemented for full covariances; they "
            "are for the diagonal KL (kl_diag, gkl.kl of two DiagGaussians)."
        )

    return double_backward


torch.library.register_autograd(
    "gaussian_kl::kl_full_backward", _no_double_backward("kl_full"), setup_context=_no_setup_context
)


# ---------------------------------------------------------------- kl_mixed
@torch.library.register_fake("gaussian_kl::kl_mixed")
def _kl_mixed_fake(mu_p, m_p, mu_q, m_q, p_param, q_param, check):
    return mu_p.new_empty(mu_p.shape[:-1])


@torch.library.register_fake("gaussian_kl::kl_mixed_backward")
def _kl_mixed_backward_fake(grad, mu_p, m_p, mu_q, m_q, p_param, q_param, output_mask):
    matrix = tuple(p in ("scale_tril", "cov") for p in (p_param, q_param))
    return _fake_full_grads((mu_p, m_p, mu_q, m_q), output_mask, matrix)


torch.library.register_autograd(
    "gaussian_kl::kl_mixed_backward", _no_double_backward("kl_mixed"), setup_context=_no_setup_context
)
