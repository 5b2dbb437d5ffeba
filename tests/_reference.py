"""float64 references written independently of the library."""


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


def kl_full_ref(mu_p, S_p, mu_q=None, S_q=None):
    """0.5 [tr(Sq^-1 Sp) + d^T Sq^-1 d - D + logdet Sq - logdet Sp], float64."""
    mu_p, S_p = mu_p.double(), S_p.double()
    D = mu_p.shape[-1]
    if mu_q is None:
        mu_q = torch.zeros_like(mu_p)
        S_q = torch.eye(D, dtype=torch.float64).expand_as(S_p)
    mu_q, S_q = mu_q.double(), S_q.double()
    Sq_inv = torch.linalg.inv(S_q)
    d = (mu_q - mu_p).unsqueeze(-1)
    tr = (Sq_inv * S_p.transpose(-1, -2)).sum((-1, -2))
    maha = (d.transpose(-1, -2) @ Sq_inv @ d)[..., 0, 0]
    return 0.5 * (tr + maha - D + torch.linalg.slogdet(S_q)[1] - torch.linalg.slogdet(S_p)[1])


def rand_spd(shape, D, gen, cond=None, dtype=torch.float64):
    """Random SPD matrices; with cond, eigenvalues log-spaced over [1/cond, 1]."""
    A = torch.randn(*shape, D, D, generator=gen, dtype=torch.float64)
    if cond is None:
        S = A @ A.transpose(-1, -2) / D + 0.5 * torch.eye(D, dtype=torch.float64)
    else:
        Q, _ = torch.linalg.qr(A)
        ev = torch.logspace(0, -torch.log10(torch.tensor(float(cond))).item(), D, dtype=torch.float64)
        S = Q @ torch.diag_embed(ev.expand(*shape, D)) @ Q.transpose(-1, -2)
        S = 0.5 * (S + S.transpose(-1, -2))
    return S.to(dtype)
