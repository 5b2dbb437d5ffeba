"""Derivatives beyond the ordinary backward: torch.func transforms,
forward-mode AD, and second and higher derivatives (docs/design.md,
"Derivatives and transforms").

An ordinary call (no transform active, ``.backward()``) goes straight to the
op, whose C++ autograd node (csrc/ops/autograd.cpp) calls the native backward
kernel: no Python between forward and backward. functorch cannot transform a
C++ autograd node, so while a torch.func transform or a forward-AD dual level
is active, ``call`` routes through ``KL``, a Python ``torch.autograd.Function``
around the same native ops, with a ``jvp`` and a ``vmap`` rule.

Which derivative comes from where:
  * first derivatives (backward, vjp, grad, jacrev): the native backward op;
  * forward mode (jvp, jacfwd, dual tensors): the native gradient, dotted with
    the tangents (one backward kernel call with grad = 1 per row);
  * derivatives of the first derivative (double backward, hessian, jacfwd of
    jacrev, ...): ``closed_form`` below, the KL in torch ops, differentiated
    twice (by autograd on the ordinary route, by torch.func under a transform).
    Values exact to the dtype's precision; it costs what torch.distributions'
    own second derivative costs, plus the native first derivative
    (bench/README.md, "torch.func transforms and second derivatives").
"""

import torch
import torch.autograd.forward_ad as _forward_ad

from . import _params
from ._ops import ops

# ------------------------------------------------------------ torch-op closed form
def _side(m, param):
    """(lower factor L or None, variance or None, log|diag L| summed): one side
    as the native kernels read it (scale_tril: the lower triangle; cov: the
    symmetric part, so its derivatives are symmetric like the native ones)."""
    if param == "scale_tril":
        L = m.tril()
        return L, None, torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    if param == "cov":
        L = torch.linalg.cholesky(0.5 * (m + m.mT))
        return L, None, torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return None, _params.convert(m, param, "var"), 0.5 * _params.to_logvar(m, param).sum(-1)


def closed_form(mu_p, m_p, mu_q, m_q, p_param, q_param):
    """KL(p || q) per row in torch ops (q = None: N(0, I)). Used only to
    differentiate the native first derivative; the values come from the kernels."""
    D = mu_p.shape[-1]
    Lp, vp, half_logdet_p = _side(m_p, p_param)
    delta = -mu_p if mu_q is None else mu_q - mu_p
    if mu_q is None:
        vq, Lq, half_logdet_q = torch.ones_like(mu_p), None, 0
    else:
        Lq, vq, half_logdet_q = _side(m_q, q_param)
    if Lp is None and Lq is None:  # both diagonal
        return 0.5 * ((vp + delta * delta) / vq).sum(-1) - 0.5 * D + half_logdet_q - half_logdet_p
    if Lp is None:
        Lp = torch.diag_embed(torch.sqrt(vp))
    if Lq is None:  # diagonal (or identity) q: A = diag(vq)^-1/2 Lp
        inv_sd = torch.rsqrt(vq)
        A, b = Lp * inv_sd.unsqueeze(-1), delta * inv_sd
    else:
        A = torch.linalg.solve_triangular(Lq, Lp, upper=False)
        b = torch.linalg.solve_triangular(Lq, delta.unsqueeze(-1), upper=False).squeeze(-1)
    return 0.5 * ((A * A).sum((-2, -1)) + (b * b).sum(-1) - D) + half_logdet_q - half_logdet_p


def _sides(strs):
    """(p_param, q_param) from an op's string arguments: (param,) or (p_param, q_param)."""
    return tuple(strs) if len(strs) == 2 else tuple(strs) * 2


def _first_derivative(grad, mu_p, m_p, mu_q, m_q, strs, mask):
    """grad * d KL / d(inputs flagged in mask), in torch ops: the function the
    native backward op computes, in a form torch.func differentiates."""
    prims = (mu_p, m_p) if mu_q is None else (mu_p, m_p, mu_q, m_q)
    _, vjp_fn = torch.func.vjp(lambda *x: closed_form(*(x + (None, None))[:4], *_sides(strs)), *prims)
    grads = vjp_fn(grad)
    return tuple(g for g, k in zip(grads, mask) if k)


# ------------------------------------------------------------ the ops, by name
_FORWARD = {"kl_diag": ops.kl_diag.default, "kl_full": ops.kl_full.default, "kl_mixed": ops.kl_mixed.default}
_BACKWARD = {"kl_diag": ops.kl_diag_backward.default, "kl_full": ops.kl_full_backward.default,
             "kl_mixed": ops.kl_mixed_backward.default}


def _front(x, dim, n):
    """x with its vmapped dim first (or a stride-0 expansion to n rows)."""
    if x is None or dim == 0:
        return x
    return x.expand(n, *x.shape) if dim is None else x.movedim(dim, 0)


def _native_backward(op, grad, inputs, strs, mask):
    outs = _BACKWARD[op](grad, *inputs, *strs, list(mask))
    return tuple(o for o, k in zip(outs, mask) if k)


def _second_derivative(primals, strs, mask, cotangents, needs, by_func=True):
    """The vjp of _first_derivative at primals = (grad, mu_p, m_p, mu_q, m_q)
    with the given cotangents (one per flagged gradient; None = zero), w.r.t.
    the primals flagged in needs; by torch.func (which composes with the
    transforms) or, on the ordinary route, by plain autograd."""
    needed = [i for i, t in enumerate(primals) if t is not None and needs[i]]
    if not needed:
        return [None] * len(primals)
    if not by_func:
        return _second_derivative_autograd(primals, strs, mask, cotangents, needed)
    # Under a transform every primal is a vjp input (a saved tensor closed
    # over instead can belong to another functorch level).
    given = [i for i, t in enumerate(primals) if t is not None]
    firsts_at = lambda *x: _first_derivative(*x, strs, mask)  # noqa: E731
    outs, vjp_fn = torch.func.vjp(lambda *x: firsts_at(*_fill(primals, given, x)), *(primals[i] for i in given))
    cts = tuple(torch.zeros_like(o) if c is None else c for o, c in zip(outs, cotangents))
    return _fill([None] * len(primals), given, vjp_fn(cts))


def _second_derivative_autograd(primals, strs, mask, cotangents, given):
    """_second_derivative by plain autograd (the ordinary route: ~1.35x
    faster than through torch.func's wrappers). The graph stays connected to the
    primals, so create_graph=True gives third derivatives too."""
    create_graph = torch.is_grad_enabled()
    # Differentiated: the inputs of the inner gradient (mask) and the outer one (given).
    tracked = set(given) | {1 + i for i, k in enumerate(mask) if k}
    with torch.enable_grad():
        x = [t if t is None or t.requires_grad or i not in tracked else t.detach().requires_grad_()
             for i, t in enumerate(primals)]
        kl = closed_form(*x[1:], *_sides(strs))
        wrt = [t for t, k in zip(x[1:], mask) if k]
        firsts = torch.autograd.grad(kl, wrt, x[0], create_graph=True)
        cts = [torch.zeros_like(f) if c is None else c for f, c in zip(firsts, cotangents)]
        outs = torch.autograd.grad(firsts, [x[i] for i in given], cts, create_graph=create_graph, allow_unused=True)
    return _fill([None] * len(primals), given, outs)


def _fill(base, where, values):
    out = list(base)
    for i, v in zip(where, values):
        out[i] = v
    return out


class KLBackward(torch.autograd.Function):
    """The native backward op as a differentiable function of (grad, inputs):
    its derivatives (double backward, jvp) come from the torch-op closed form."""

    @staticmethod
    def forward(op, grad, mu_p, m_p, mu_q, m_q, strs, mask):
        with torch._C._AutoDispatchBelowAutograd():
            return _native_backward(op, grad, (mu_p, m_p, mu_q, m_q), strs, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        op, grad, mu_p, m_p, mu_q, m_q, strs, mask = inputs
        ctx.save_for_backward(grad, mu_p, m_p, mu_q, m_q)
        ctx.save_for_forward(grad, mu_p, m_p, mu_q, m_q)
        ctx.strs, ctx.mask = strs, mask

    @staticmethod
    def backward(ctx, *cotangents):
        grads = _second_derivative(ctx.saved_tensors, ctx.strs, ctx.mask, cotangents, ctx.needs_input_grad[1:6])
        return (None, *grads, None, None)

    @staticmethod
    def jvp(ctx, _op, *tangents):
        primals = ctx.saved_tensors
        tangents = tangents[:5]
        given = [i for i, t in enumerate(primals) if t is not None]
        # Dual tensors need their own memory (the vmap rule passes stride-0 views).
        prims = tuple(primals[i].contiguous() for i in given)
        tans = tuple(torch.zeros_like(p) if tangents[i] is None else tangents[i].contiguous()
                     for i, p in zip(given, prims))
        f = lambda *x: _first_derivative(*_fill(primals, given, x), ctx.strs, ctx.mask)  # noqa: E731
        return torch.func.jvp(f, prims, tans)[1]

    @staticmethod
    def vmap(info, in_dims, op, grad, mu_p, m_p, mu_q, m_q, strs, mask):
        args = [_front(x, d, info.batch_size) for x, d in zip((grad, mu_p, m_p, mu_q, m_q), in_dims[1:6])]
        outs = KLBackward.apply(op, *args, strs, mask)
        return outs, (0,) * len(outs)


class KL(torch.autograd.Function):
    """One of the forward ops, in the form torch.func transforms: native
    forward, native first derivative (KLBackward), jvp from the native
    gradient, and a vmap rule that folds the vmapped dim into the batch."""

    @staticmethod
    def forward(op, mu_p, m_p, mu_q, m_q, strs, check):
        # Straight to the kernel (the op's own autograd node is not wanted
        # here). torch.compile graph-breaks on this guard: a transformed
        # region runs eagerly (dynamo would pass functorch-wrapped tensors).
        with torch._C._AutoDispatchBelowAutograd():
            return _FORWARD[op](mu_p, m_p, mu_q, m_q, *strs, check)

    @staticmethod
    def setup_context(ctx, inputs, output):
        op, mu_p, m_p, mu_q, m_q, strs, _ = inputs
        ctx.save_for_backward(mu_p, m_p, mu_q, m_q)
        ctx.save_for_forward(mu_p, m_p, mu_q, m_q)
        ctx.op, ctx.strs = op, strs

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        mask = [bool(n) and x is not None for n, x in zip(ctx.needs_input_grad[1:5], inputs)]
        out = [None] * 7
        if any(mask):
            out[1:5] = _fill([None] * 4, [i for i in range(4) if mask[i]],
                             KLBackward.apply(ctx.op, grad, *inputs, ctx.strs, tuple(mask)))
        return tuple(out)

    @staticmethod
    def jvp(ctx, _op, t_mu_p, t_m_p, t_mu_q, t_m_q, _strs, _check):
        inputs = ctx.saved_tensors
        tangents = (t_mu_p, t_m_p, t_mu_q, t_m_q)
        mask = tuple(t is not None and x is not None for t, x in zip(tangents, inputs))
        rows = inputs[0].shape[:-1]
        if not any(mask):
            return inputs[0].new_zeros(rows)
        ones = inputs[0].new_ones(rows)
        grads = KLBackward.apply(ctx.op, ones, *inputs, ctx.strs, mask)
        used = [t for t, k in zip(tangents, mask) if k]
        return sum((g * t).flatten(len(rows)).sum(-1) for g, t in zip(grads, used))

    @staticmethod
    def vmap(info, in_dims, op, mu_p, m_p, mu_q, m_q, strs, check):
        args = [_front(x, d, info.batch_size) for x, d in zip((mu_p, m_p, mu_q, m_q), in_dims[1:5])]
        return KL.apply(op, *args, strs, check), 0


def call(op, mu_p, m_p, mu_q, m_q, strs, check):
    """The public wrappers' one entry to the ops (see the module docstring)."""
    if torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0:
        return KL.apply(op, mu_p, m_p, mu_q, m_q, strs, check)
    return _FORWARD[op](mu_p, m_p, mu_q, m_q, *strs, check)


# ------------------------------------------------------------ double backward of the ordinary path
# The C++ node records the backward op when create_graph=True; its
# derivative is the same torch-op second derivative as KLBackward's.
def _backward_op_setup_context(ctx, inputs, output):
    grad, mu_p, m_p, mu_q, m_q, *strs, mask = inputs
    ctx.save_for_backward(grad, mu_p, m_p, mu_q, m_q)
    ctx.strs, ctx.mask = tuple(strs), tuple(bool(k) for k in mask)


def _backward_op_backward(ctx, *cotangents):
    flagged = [c for c, k in zip(cotangents, ctx.mask) if k]
    flagged = [None if (c is None or c.numel() == 0) else c for c in flagged]
    grads = _second_derivative(ctx.saved_tensors, ctx.strs, ctx.mask, flagged, ctx.needs_input_grad[:5],
                               by_func=False)
    return (*grads, *([None] * (len(ctx.strs) + 1)))


for _op in _BACKWARD:
    torch.library.register_autograd(
        f"gaussian_kl::{_op}_backward", _backward_op_backward, setup_context=_backward_op_setup_context
    )
