"""Containers: a Gaussian with its parametrisation named once, at
construction, so that a std is never taken for a variance further down."""

from typing import Optional, Tuple

import torch

from . import _checks
from .diag import DIAG_PARAMS
from .full import FULL_PARAMS


def _one_of(cls: str, given: dict) -> Tuple[str, torch.Tensor]:
    named = [(k, v) for k, v in given.items() if v is not None]
    if len(named) != 1:
        got = ", ".join(k for k, _ in named) or "none"
        raise ValueError(
            f"{cls}: pass exactly one of {', '.join(given)} (keyword-only), got {got}"
        )
    return named[0]


class _Gaussian:
    __slots__ = ("loc", "param", "scale", "batch_shape", "event_size")

    def _finish(self, fn: str, loc: torch.Tensor, param: str, scale: torch.Tensor, diag: bool):
        side = [("loc", loc, param, scale, diag)]
        # Checks only: types, dtypes, devices, shapes (no host sync).
        _checks.broadcast_sides(fn, side, f"{param}=")
        self.loc = loc
        self.param = param
        self.scale = scale
        loc_batch = tuple(loc.shape[:-1])
        scale_batch = tuple(scale.shape[:-1] if diag else scale.shape[:-2])
        self.batch_shape = torch.Size(torch.broadcast_shapes(loc_batch, scale_batch))
        self.event_size = int(loc.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return torch.promote_types(self.loc.dtype, self.scale.dtype)

    @property
    def device(self) -> torch.device:
        return self.loc.device

    def to(self, *args, **kwargs):
        """A copy with loc and the scale tensor moved/cast by Tensor.to."""
        return type(self)(self.loc.to(*args, **kwargs), **{self.param: self.scale.to(*args, **kwargs)})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, "
            f"event_size={self.event_size}, param={self.param!r}, dtype={self.dtype}, "
            f"device={self.device})"
        )


class DiagGaussian(_Gaussian):
    """N(loc, diag(v)) with the variance given by exactly one of ``std``,
    ``var``, ``logvar``, ``logstd`` (keyword-only), each ``[*batch, D]``
    and broadcastable against ``loc`` ``[*batch, D]``.

    Example::

        >>> p = gkl.DiagGaussian(mu, logvar=logvar)      # encoder output
        >>> prior = gkl.DiagGaussian(torch.zeros(D), std=torch.ones(D))
    """

    __slots__ = ()

    def __init__(
        self,
        loc: torch.Tensor,
        *,
        std: Optional[torch.Tensor] = None,
        var: Optional[torch.Tensor] = None,
        logvar: Optional[torch.Tensor] = None,
        logstd: Optional[torch.Tensor] = None,
    ):
        param, scale = _one_of(
            "DiagGaussian", {"std": std, "var": var, "logvar": logvar, "logstd": logstd}
        )
        assert param in DIAG_PARAMS
        self._finish("DiagGaussian", loc, param, scale, diag=True)


class FullGaussian(_Gaussian):
    """N(loc, Sigma) with Sigma given by exactly one of ``scale_tril`` (lower
    Cholesky factor L, Sigma = L L^T; only its lower triangle is read) or
    ``cov`` (read symmetric), ``[*batch, D, D]``, keyword-only.

    Example::

        >>> q = gkl.FullGaussian(mu, scale_tril=L)
    """

    __slots__ = ()

    def __init__(
        self,
        loc: torch.Tensor,
        *,
        scale_tril: Optional[torch.Tensor] = None,
        cov: Optional[torch.Tensor] = None,
    ):
        param, scale = _one_of("FullGaussian", {"scale_tril": scale_tril, "cov": cov})
        assert param in FULL_PARAMS
        self._finish("FullGaussian", loc, param, scale, diag=False)
