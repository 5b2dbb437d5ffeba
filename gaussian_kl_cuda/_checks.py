"""Argument checking shared by the public functions: clear Python errors
before anything reaches a kernel. No host syncs here: only shapes, dtypes,
devices (value checks happen in the kernels, see check=)."""

from typing import Optional, Sequence, Tuple

import torch

from . import _ops

REDUCTIONS = ("none", "sum", "mean")


def check_choice(fn: str, name: str, value, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{fn}: {name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        )


_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def common_call(tensors: Sequence, shapes: Sequence) -> bool:
    """The common call, checked cheaply (~1 us): every argument a tensor of
    exactly the given shape (with an event dimension), one float dtype, one
    CPU or (with the CUDA kernels) CUDA device. False otherwise: the caller
    then runs the full checks, which raise the precise error or broadcast.
    (Those cost ~5-10 us of Python per call, as much as a small kernel.)"""
    t0 = tensors[0]
    if not isinstance(t0, torch.Tensor) or not shapes[0]:
        return False
    dt = t0.dtype
    if dt not in _FLOATS:
        return False
    cpu = t0.is_cpu
    if not cpu and not (t0.is_cuda and _ops.CUDA_KERNELS):
        return False
    dev = None if cpu else t0.device
    for t, shape in zip(tensors, shapes):
        if not isinstance(t, torch.Tensor) or t.dtype is not dt or t.shape != shape:
            return False
        if not (t.is_cpu if cpu else t.device == dev):
            return False
    return True


def check_tensors(fn: str, named: Sequence[Tuple[str, Optional[torch.Tensor]]]) -> torch.dtype:
    """Type, dtype, device and rank checks; returns the promoted float dtype."""
    device = None
    first = None
    dtype = None
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(
                f"{fn}: {name} has dtype {t.dtype}; expected a floating dtype "
                "(float32, float64, float16 or bfloat16)"
            )
        if t.dim() < 1:
            raise ValueError(
                f"{fn}: {name} must have an event dimension (shape [*batch, D]), got a 0-dim tensor; "
                "use t.reshape(1) for D = 1"
            )
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(f"{fn}: {name} is on {t.device} but {first} is on {device}")
        dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"{fn}: unsupported dtype {dtype}")
    if device is not None and device.type == "cuda" and not _ops.CUDA_KERNELS:
        raise RuntimeError(
            f"{fn}: got CUDA tensors, but this gaussian_kl_cuda build has no CUDA kernels "
            "(it was compiled without a CUDA toolkit or against a CPU-only torch). Rebuild with "
            "a CUDA build of torch and the CUDA toolkit: "
            "FORCE_CUDA=1 CUDA_HOME=/usr/local/cuda pip install --no-build-isolation -e ."
        )
    if device is not None and device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{fn}: device {device} is not supported (CPU and CUDA are)")
    return dtype


def broadcast_event(fn: str, named: Sequence[Tuple[str, torch.Tensor]]) -> Tuple[Tuple[int, ...], int]:
    """Broadcast shape of the batch dims and the common event size D.

    Shapes follow torch's broadcasting ([B, D] against [D] is a shared q);
    the event sizes must agree (or be 1, broadcast like any other dim)."""
    dims = {name: t.shape[-1] for name, t in named}
    D = max(dims.values())
    for name, d in dims.items():
        if d != D and d != 1:
            desc = ", ".join(f"{n} {tuple(t.shape)}" for n, t in named)
            raise ValueError(f"{fn}: event sizes (last dim) disagree: {desc}")
    batch: list = []
    for name, t in named:
        shape = list(t.shape[:-1])
        n = max(len(batch), len(shape))
        batch = [1] * (n - len(batch)) + batch
        shape = [1] * (n - len(shape)) + shape
        for i in range(n):
            if shape[i] == batch[i] or shape[i] == 1:
                continue
            if batch[i] == 1:
                batch[i] = shape[i]
                continue
            desc = ", ".join(f"{n_} {tuple(t_.shape)}" for n_, t_ in named)
            raise ValueError(f"{fn}: batch shapes do not broadcast: {desc}")
    return tuple(batch), D


def reduce(out: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.mean()


def broadcast_sides(fn: str, sides, param_desc: str):
    """Checks and broadcasts the sides of a full-covariance (or mixed) KL.

    sides: [(mu_name, mu, m_name, m, diag)] for p and optionally q; a side
    with diag=False has m of shape [*batch, D, D], with diag=True [*batch, D].
    Returns (dtype, [mu, m] per side, expanded to one batch shape: stride-0
    views, nothing materialised)."""
    # The common call: one dtype and device, every side already of one batch
    # shape (nothing to check further, no views to make).
    tensors = [t for side in sides for t in (side[1], side[3])]
    if isinstance(sides[0][1], torch.Tensor):
        shape = sides[0][1].shape
        square = shape + shape[-1:]
        if common_call(tensors, [s for side in sides for s in (shape, shape if side[4] else square)]):
            return tensors[0].dtype, [(mu, m) for _mn, mu, _n, m, _diag in sides]
    named = []
    for mn, mu, n, m, _diag in sides:
        named += [(mn, mu), (n, m)]
    dtype = check_tensors(fn, named)
    for mn, mu, n, m, diag in sides:
        if diag:
            if m.shape[-1] != mu.shape[-1]:
                raise ValueError(
                    f"{fn}: {n} must have shape [*batch, D] (a diagonal), got {tuple(m.shape)} "
                    f"with {mn} {tuple(mu.shape)}")
            continue
        if m.dim() < 2 or m.shape[-1] != m.shape[-2]:
            hint = ""
            if m.dim() >= 1 and m.shape[-1] == mu.shape[-1] and m.dim() == mu.dim():
                hint = (" It has the shape of the mean, as a diagonal would: for a diagonal "
                        "covariance use kl_diag (param='var' or 'std').")
            raise ValueError(
                f"{fn}: {n} must have shape [*batch, D, D] ({param_desc}), got "
                f"{tuple(m.shape)} with {mn} {tuple(mu.shape)}.{hint}")
        if m.shape[-1] != mu.shape[-1]:
            raise ValueError(
                f"{fn}: event sizes disagree: {mn} {tuple(mu.shape)} but {n} {tuple(m.shape)}")
    D = sides[0][1].shape[-1]
    if any(side[1].shape[-1] != D for side in sides):
        desc = ", ".join(f"{n} {tuple(t.shape)}" for n, t in named)
        raise ValueError(f"{fn}: event sizes disagree: {desc}")
    # Common case first: one batch shape and one dtype already (no views to make).
    batch0 = sides[0][1].shape[:-1]
    if all(mu.shape[:-1] == batch0 and (m.shape[:-1] if diag else m.shape[:-2]) == batch0
           and mu.dtype == dtype and m.dtype == dtype for _mn, mu, _n, m, diag in sides):
        return dtype, [(mu, m) for _mn, mu, _n, m, _diag in sides]
    # Broadcast the batch dims of all (the event dims stay as they are).
    batch_named = []
    for mn, mu, n, m, diag in sides:
        batch_named += [(mn, mu[..., :1]), (n, m[..., :1] if diag else m[..., 0, :1])]
    batch, _ = broadcast_event(fn, batch_named)
    out = []
    for _mn, mu, _n, m, diag in sides:
        mu = mu if mu.dtype == dtype else mu.to(dtype)
        m = m if m.dtype == dtype else m.to(dtype)
        out.append((mu.expand(batch + (D,)), m.expand(batch + ((D,) if diag else (D, D)))))
    return dtype, out
