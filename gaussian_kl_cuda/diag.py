"""KL divergence between diagonal Gaussians."""

from typing import Optional

import torch

from . import _checks
from ._autograd import call

DIAG_PARAMS = ("std", "var", "logvar", "logstd")


def kl_diag(
    mu_p: torch.Tensor,
    s_p: torch.Tensor,
    mu_q: Optional[torch.Tensor] = None,
    s_q: Optional[torch.Tensor] = None,
    *,
    param: str,
    reduction: str = "none",
    check: bool = True,
) -> torch.Tensor:
    """KL(p || q) between diagonal Gaussians, summed over the event dim.

    p = N(mu_p, diag(v_p)), q = N(mu_q, diag(v_q)), where the variance is
    given through ``param``:

    ========  =========================  ===============================
    param     s is                       variance v
    ========  =========================  ===============================
    "std"     standard deviation (> 0)   s ** 2
    "var"     variance (> 0)             s
    "logvar"  log-variance               exp(s)
    "logstd"  log standard deviation     exp(2 s)
    ========  =========================  ===============================

    Args:
        mu_p, s_p: ``[*batch, D]`` mean and scale parameter of p.
        mu_q, s_q: the same for q, broadcastable against p (a ``[D]`` q is
            one shared prior, read in place, never copied per row); both
            ``None`` means q = N(0, I), computed by a dedicated kernel.
        param: keyword-only and required, so a variance is never taken for a
            std by default.
        reduction: ``"none"`` → shape ``[*batch]``; ``"sum"``; ``"mean"``
            (over batch elements).
        check: if True (default), a non-positive std/var or a non-finite
            input raises ``ValueError`` naming the argument and the first bad
            batch index. On CUDA this costs one host sync, like
            ``torch.distributions``' own validation. If False there is no
            sync, ever: an invalid batch element gives NaN in that element
            only.

    Returns:
        KL per batch element (one number per multivariate Gaussian, never per
        dimension), in the promoted dtype of the inputs. Gradients flow to
        every input that requires them; float16/bfloat16 are computed in
        float32. Accurate near p == q (float32 relative error ~1e-6 at
        KL ~1e-8) and never negative.

    Example::

        >>> kl = gkl.kl_diag(mu, logvar, param="logvar", reduction="mean")  # VAE prior
        >>> kl = gkl.kl_diag(mu, std, prior_mu, prior_std, param="std")      # shared [D] prior
    """
    fn = "kl_diag"
    _checks.check_choice(fn, "param", param, DIAG_PARAMS)
    _checks.check_choice(fn, "reduction", reduction, _checks.REDUCTIONS)
    if (mu_q is None) != (s_q is None):
        raise ValueError(
            f"{fn}: pass both mu_q and s_q, or neither (q = N(0, I)); got "
            f"{'mu_q' if s_q is None else 's_q'} alone"
        )
    given = [mu_p, s_p] if mu_q is None else [mu_p, s_p, mu_q, s_q]
    if isinstance(mu_p, torch.Tensor) and _checks.common_call(given, [mu_p.shape] * len(given)):
        args = given  # the common call: one dtype, device and shape
    else:
        named = [("mu_p", mu_p), ("s_p", s_p)]
        if mu_q is not None:
            named += [("mu_q", mu_q), ("s_q", s_q)]
        dtype = _checks.check_tensors(fn, named)
        batch, D = _checks.broadcast_event(fn, named)
        shape = batch + (D,)
        args = [t if t.dtype == dtype else t.to(dtype) for _, t in named]
        # Views with stride 0 along broadcast dims: nothing is materialised.
        args = [t if tuple(t.shape) == shape else t.expand(shape) for t in args]
    if len(args) == 2:
        args += [None, None]
    out = call("kl_diag", *args, (param,), bool(check))
    return _checks.reduce(out, reduction)
