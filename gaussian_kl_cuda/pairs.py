"""gkl.kl: KL(p || q) for every pair of Gaussian forms, and GaussianKLLoss."""

from typing import Optional, Tuple, Union

import torch
import torch.distributions as td

from . import _checks, _params
from ._autograd import call
from .diag import kl_diag
from .full import kl_full
from .gaussians import DiagGaussian, FullGaussian

GaussianLike = Union[DiagGaussian, FullGaussian, td.MultivariateNormal, td.Independent]

_NORMAL_HELP = (
    "a bare torch.distributions.Normal is a batch of independent 1-D Gaussians, and its KL is "
    "per dimension ([*batch, D]); gkl.kl returns the KL of multivariate Gaussians (one number "
    "per batch element, summed over D). Wrap it: Independent(Normal(loc, scale), 1), or use "
    "gkl.DiagGaussian(loc, std=scale)"
)


def _unwrap(x, arg: str) -> Tuple[bool, torch.Tensor, str, torch.Tensor]:
    """(diag, loc, param, scale tensor) of a supported Gaussian, without copies."""
    if isinstance(x, (DiagGaussian, FullGaussian)):
        return isinstance(x, DiagGaussian), x.loc, x.param, x.scale
    if isinstance(x, td.MultivariateNormal):
        # The factor torch holds (computed once at construction from a
        # covariance/precision, or the user's own scale_tril): not expanded.
        return False, x.loc, "scale_tril", x._unbroadcasted_scale_tril
    if isinstance(x, td.Independent):
        base = x.base_dist
        if type(base) is td.Normal and x.reinterpreted_batch_ndims == 1:
            return True, base.loc, "std", base.scale
        raise TypeError(
            f"gkl.kl: {arg} is Independent({type(base).__name__}, "
            f"{x.reinterpreted_batch_ndims}); supported is Independent(Normal, 1) (a diagonal "
            "Gaussian with event dim D). Reshape to one event dim, or use gkl.DiagGaussian"
        )
    if isinstance(x, td.Normal):
        raise TypeError(f"gkl.kl: {arg} is a torch.distributions.Normal: {_NORMAL_HELP}")
    raise TypeError(
        f"gkl.kl: {arg} must be a gkl.DiagGaussian, gkl.FullGaussian, "
        "torch.distributions.MultivariateNormal or Independent(Normal, 1)"
        + (", or None for N(0, I)" if arg == "q" else "")
        + f", got {type(x).__name__}"
    )


def kl_mixed(mu_p, m_p, mu_q, m_q, *, p_param: str, q_param: str, reduction: str = "none",
             check: bool = True) -> torch.Tensor:
    """KL(p || q) for sides of different kinds, natively: full p vs diagonal
    q (O(D^2) per row: no factor of q, no solve), diagonal p vs full q, and
    scale_tril vs cov. A side is ``[*batch, D, D]`` for ``"scale_tril"`` /
    ``"cov"`` and ``[*batch, D]`` for ``"std"`` / ``"var"`` / ``"logvar"`` /
    ``"logstd"``; q is required. ``gkl.kl`` calls this for mixed pairs."""
    fn = "kl_mixed"
    params = ("scale_tril", "cov", "std", "var", "logvar", "logstd")
    _checks.check_choice(fn, "p_param", p_param, params)
    _checks.check_choice(fn, "q_param", q_param, params)
    _checks.check_choice(fn, "reduction", reduction, _checks.REDUCTIONS)
    p_diag, q_diag = p_param in params[2:], q_param in params[2:]
    if p_diag and q_diag:
        raise ValueError(f"{fn}: both sides are diagonal: use kl_diag")
    if p_param == q_param:
        raise ValueError(f"{fn}: both sides are {p_param!r}: use kl_full")
    sides = [("mu_p", mu_p, "m_p", m_p, p_diag), ("mu_q", mu_q, "m_q", m_q, q_diag)]
    _, views = _checks.broadcast_sides(fn, sides, f"p_param={p_param!r}, q_param={q_param!r}")
    out = call("kl_mixed", *views[0], *views[1], (p_param, q_param), bool(check))
    return _checks.reduce(out, reduction)


def kl(p: GaussianLike, q: Optional[GaussianLike] = None, *, reduction: str = "none",
       check: bool = True) -> torch.Tensor:
    """KL(p || q) for any pair of Gaussians, one value per batch element.

    p, q: ``gkl.DiagGaussian``, ``gkl.FullGaussian``, or torch's own
    ``MultivariateNormal`` / ``Independent(Normal, 1)`` (unwrapped without
    copying); ``q=None`` is N(0, I). Every pair is one native call:

    ==============  ==============  =====================================
    p               q               kernel
    ==============  ==============  =====================================
    diagonal        diagonal/None   kl_diag (a q in another param than
                                    p's is converted elementwise first)
    full            full/None       kl_full (same param) or kl_mixed
                                    (scale_tril vs cov)
    full            diagonal        kl_mixed, O(D^2) per row, no factor
    diagonal        full            kl_mixed
    ==============  ==============  =====================================

    Batch shapes broadcast; gradients flow to every tensor of both sides.
    reduction and check as in ``kl_diag`` / ``kl_full``.

    Example::

        >>> p = gkl.FullGaussian(mu, scale_tril=L)
        >>> prior = gkl.DiagGaussian(torch.zeros(D), var=prior_var)
        >>> loss = gkl.kl(p, prior, reduction="mean")
    """
    p_diag, mu_p, p_param, s_p = _unwrap(p, "p")
    if q is None:
        if p_diag:
            return kl_diag(mu_p, s_p, param=p_param, reduction=reduction, check=check)
        return kl_full(mu_p, s_p, param=p_param, reduction=reduction, check=check)
    q_diag, mu_q, q_param, s_q = _unwrap(q, "q")
    if p_diag and q_diag:
        s_q = _params.convert(s_q, q_param, p_param)
        return kl_diag(mu_p, s_p, mu_q, s_q, param=p_param, reduction=reduction, check=check)
    if p_param == q_param:
        return kl_full(mu_p, s_p, mu_q, s_q, param=p_param, reduction=reduction, check=check)
    return kl_mixed(mu_p, s_p, mu_q, s_q, p_param=p_param, q_param=q_param, reduction=reduction,
                    check=check)


class GaussianKLLoss(torch.nn.Module):
    """``loss(p, q=None)`` = ``gkl.kl(p, q, reduction=..., check=...)``: the
    KL term of a VAE / policy / variational objective as a module.

    Args:
        reduction: ``"mean"`` (default: over batch elements), ``"sum"`` or ``"none"``.
        check: as in ``gkl.kl`` (False: no host sync on CUDA).
    """

    def __init__(self, reduction: str = "mean", check: bool = True):
        super().__init__()
        _checks.check_choice("GaussianKLLoss", "reduction", reduction, _checks.REDUCTIONS)
        self.reduction = reduction
        self.check = check

    def forward(self, p: GaussianLike, q: Optional[GaussianLike] = None) -> torch.Tensor:
        return kl(p, q, reduction=self.reduction, check=self.check)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, check={self.check}"
