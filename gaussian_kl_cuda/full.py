"""KL divergence between full-covariance Gaussians."""

from typing import Optional

import torch

from . import _checks
from ._autograd import call

FULL_PARAMS = ("scale_tril", "cov")


def kl_full(
    mu_p: torch.Tensor,
    m_p: torch.Tensor,
    mu_q: Optional[torch.Tensor] = None,
    m_q: Optional[torch.Tensor] = None,
    *,
    param: str,
    reduction: str = "none",
    check: bool = True,
) -> torch.Tensor:
    """KL(p || q) between full-covariance Gaussians, one value per batch element.

    Args:
        mu_p: ``[*batch, D]`` mean of p.
        m_p: ``[*batch, D, D]``: with ``param="scale_tril"`` a lower Cholesky
            factor L (Sigma = L L^T; only the lower triangle is read, as in
            torch), with ``param="cov"`` the covariance itself (its lower
            triangle is read as a symmetric matrix and factored in-kernel, in
            float32 for half inputs, which torch's Cholesky refuses).
        mu_q, m_q: the same for q, broadcastable against p (a ``[D]`` /
            ``[D, D]`` q is one shared prior: a shared ``cov`` is factored once
            per call, not per row); both ``None`` means q = N(0, I) (no factor
            of q, no solve).
        param: ``"scale_tril"`` or ``"cov"``, keyword-only and required.
        reduction: ``"none"`` → ``[*batch]``; ``"sum"``; ``"mean"``.
        check: if True, a covariance that is not positive definite, a
            scale_tril with a non-positive diagonal, or a non-finite input
            raises ``ValueError`` naming the argument and the first bad batch
            index (one host sync on CUDA). If False: no sync; the bad row is
            NaN and every other row is right.

    Returns:
        KL per batch element. Computed as a sum of non-negative terms
        (1/2 [sum_{i>j} A_ij^2 + sum_i phi(2 log A_ii) + |b|^2], A = Lq^-1 Lp,
        b = Lq^-1 (mu_q - mu_p)), so float32 stays accurate near p == q and is
        never negative. Gradients (native backward) reach every input.

    Example::

        >>> kl = gkl.kl_full(mu, L, param="scale_tril", reduction="mean")        # vs N(0, I)
        >>> kl = gkl.kl_full(mu_p, cov_p, mu_q, cov_q, param="cov")
    """
    fn = "kl_full"
    _checks.check_choice(fn, "param", param, FULL_PARAMS)
    _checks.check_choice(fn, "reduction", reduction, _checks.REDUCTIONS)
    if (mu_q is None) != (m_q is None):
        raise ValueError(f"{fn}: pass both mu_q and m_q, or neither (q = N(0, I))")
    given = [mu_p, m_p] if mu_q is None else [mu_p, m_p, mu_q, m_q]
    shape = mu_p.shape if isinstance(mu_p, torch.Tensor) else None
    if shape is not None and _checks.common_call(given, [shape, shape + shape[-1:]] * (len(given) // 2)):
        args = given  # the common call: one dtype, device and batch shape
    else:
        sides = [("mu_p", mu_p, "m_p", m_p, False)]
        if mu_q is not None:
            sides.append(("mu_q", mu_q, "m_q", m_q, False))
        _, views = _checks.broadcast_sides(fn, sides, f"param={param!r}")
        args = [t for side in views for t in side]
    if len(args) == 2:
        args += [None, None]
    out = call("kl_full", *args, (param,), bool(check))
    return _checks.reduce(out, reduction)
