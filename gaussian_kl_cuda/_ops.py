"""Loads the native library and registers, for every op, a fake (meta)
kernel for torch.compile / FakeTensor and autograd whose backward calls the
native backward op."""

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


def _kl_diag_setup_context(ctx, inputs, output):
    mu_p, s_p, mu_q, s_q, param, _check = inputs
    ctx.save_for_backward(mu_p, s_p, mu_q, s_q)
    ctx.param = param


def _native_backward(backward_op):
    """Autograd backward that calls the native backward op; only the
    gradients autograd asks for are computed (and allocated)."""

    def backward(ctx, grad):
        mask = [bool(m) for m in ctx.needs_input_grad[:4]]
        grads = backward_op(grad, *ctx.saved_tensors, ctx.param, mask)
        return tuple(grads[i] if mask[i] else None for i in range(4)) + (None, None)

    return backward


_kl_diag_backward = _native_backward(ops.kl_diag_backward)


torch.library.register_autograd(
    "gaussian_kl::kl_diag", _kl_diag_backward, setup_context=_kl_diag_setup_context
)


# The backward op is differentiable only in that it says so: taking a second
# derivative (create_graph=True, then differentiating the gradient) raises a
# clear error instead of autograd's fallback, which would treat the gradient
# as a constant and return a silently wrong (zero) second derivative.
def _kl_diag_backward_setup_context(ctx, inputs, output):
    pass


def _kl_diag_double_backward(ctx, *grads):
    raise RuntimeError(
        "gaussian_kl_cuda: second derivatives of kl_diag (double backward, e.g. Hessian-vector "
        "products with create_graph=True) are not implemented yet. Compute them with the "
        "torch.distributions closed form for now."
    )


torch.library.register_autograd(
    "gaussian_kl::kl_diag_backward",
    _kl_diag_double_backward,
    setup_context=_kl_diag_backward_setup_context,
)


# ---------------------------------------------------------------- kl_full
@torch.library.register_fake("gaussian_kl::kl_full")
def _kl_full_fake(mu_p, m_p, mu_q, m_q, param, check):
    return mu_p.new_empty(mu_p.shape[:-1])


@torch.library.register_fake("gaussian_kl::kl_full_backward")
def _kl_full_backward_fake(grad, mu_p, m_p, mu_q, m_q, param, output_mask):
    return _fake_grads((mu_p, m_p, mu_q, m_q), output_mask)


_kl_full_backward = _native_backward(ops.kl_full_backward)


torch.library.register_autograd(
    "gaussian_kl::kl_full", _kl_full_backward, setup_context=_kl_diag_setup_context
)


def _kl_full_double_backward(ctx, *grads):
    raise RuntimeError(
        "gaussian_kl_cuda: second derivatives of kl_full (double backward) are not implemented."
    )


torch.library.register_autograd(
    "gaussian_kl::kl_full_backward",
    _kl_full_double_backward,
    setup_context=_kl_diag_backward_setup_context,
)
