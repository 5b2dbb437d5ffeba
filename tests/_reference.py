"""float64 references written independently of the library."""

import math

import torch

PARAMS = ("std", "var", "logvar", "logstd")


def to_var(s: torch.Tensor, param: str) -> torch.Tensor:
    s = s.double()
    if param == "std":
        return s * s
    if param == "var":
        return s
    if param == "logvar":
        return s.exp()
    return (2 * s).exp()


def to_std(s: torch.Tensor, param: str) -> torch.Tensor:
    return to_var(s, param).sqrt()


def kl_diag_ref(mu_p, s_p, mu_q=None, s_q=None, *, param):
    """0.5 * sum_d [vp/vq + (mu_q-mu_p)^2/vq - 1 + log vq - log vp] in float64,
    with log v taken from the parameter directly where it is a log."""
    vp = to_var(s_p, param)
    logvp = {"std": 2 * s_p.double().abs().log(), "var": s_p.double().log(),
             "logvar": s_p.double(), "logstd": 2 * s_p.double()}[param]
    if mu_q is None:
        vq = torch.ones_like(vp)
        logvq = torch.zeros_like(vp)
        mu_q = torch.zeros_like(vp)
    else:
        vq = to_var(s_q, param)
        logvq = {"std": 2 * s_q.double().abs().log(), "var": s_q.double().log(),
                 "logvar": s_q.double(), "logstd": 2 * s_q.double()}[param]
    d = mu_q.double() - mu_p.double()
    # vp/vq - 1 - log(vp/vq) computed as phi(l) with expm1 for accuracy.
    l = logvp - logvq
    phi = torch.expm1(l) - l
    small = l.abs() < 1e-3
    phi = torch.where(small, l * l / 2 + l ** 3 / 6 + l ** 4 / 24, phi)
    return 0.5 * (phi + d * d / vq).sum(-1)


def random_scale(shape, param, gen, dtype=torch.float64, device="cpu"):
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    if param == "std":
        s = 0.5 + 1.5 * u
    elif param == "var":
        s = 0.25 + 3.75 * u
    elif param == "logvar":
        s = -1.5 + 3 * u
    else:
        s = -0.75 + 1.5 * u
    return s.to(dtype=dtype, device=device)


def random_loc(shape, gen, dtype=torch.float64, device="cpu"):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def identity_scale(param):
    return 0.0 if param in ("logvar", "logstd") else 1.0
