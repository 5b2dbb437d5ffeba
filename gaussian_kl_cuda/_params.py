"""Conversions between the diagonal parametrisations (std, var, logvar,
logstd), in torch ops; autograd and torch.func chain through them. Used where
a diagonal side is handled in Python: a q given in another param than p's
(pairs.py) and the torch-op closed form of the second derivatives
(_autograd.py)."""

import torch


def to_logvar(s: torch.Tensor, param: str) -> torch.Tensor:
    return {"std": lambda: 2 * torch.log(s), "var": lambda: torch.log(s),
            "logvar": lambda: s, "logstd": lambda: 2 * s}[param]()


def convert(s: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    if src == dst:
        return s
    if (src, dst) == ("std", "var"):
        return s * s
    if (src, dst) == ("var", "std"):
        return torch.sqrt(s)
    lv = to_logvar(s, src)
    return {"std": lambda: torch.exp(0.5 * lv), "var": lambda: torch.exp(lv),
            "logvar": lambda: lv, "logstd": lambda: 0.5 * lv}[dst]()
