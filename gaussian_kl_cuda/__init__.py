"""gaussian_kl_cuda: fused KL divergence between batched Gaussians, with
native forward and backward kernels on CPU and CUDA.

    import gaussian_kl_cuda as gkl
    kl = gkl.kl_diag(mu, logvar, param="logvar")      # KL(N(mu, e^logvar) || N(0, I))
    kl = gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril")
    kl = gkl.kl(gkl.FullGaussian(mu, scale_tril=L), gkl.DiagGaussian(m0, var=v0))
"""

import torch

from ._ops import CUDA_KERNELS
from .diag import DIAG_PARAMS, kl_diag
from .full import FULL_PARAMS, kl_full
from .gaussians import DiagGaussian, FullGaussian
from .interop import is_registered, register_with_torch, unregister_from_torch
from .pairs import GaussianKLLoss, kl, kl_mixed


def _version() -> str:
    """pyproject.toml's version: from the installed metadata, or read from
    the source tree (an in-place build such as bench/gpu_check.sh's)."""
    from importlib import metadata

    try:
        return metadata.version("gaussian_kl_cuda")
    except metadata.PackageNotFoundError:
        import pathlib
        import re

        path = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', path.read_text(), re.M) if path.exists() else None
        return found.group(1) if found else "unknown"


__version__ = _version()

# The CPU kernel variant is chosen now: an unknown or unsupported
# GKL_CPU_ISA fails the import with a message naming the variants there are.
CPU_ISA = torch.ops.gaussian_kl.cpu_isa()

__all__ = [
    "kl", "kl_diag", "kl_full", "kl_mixed", "DiagGaussian", "FullGaussian", "GaussianKLLoss",
    "register_with_torch", "unregister_from_torch", "is_registered",
    "DIAG_PARAMS", "FULL_PARAMS", "CUDA_KERNELS", "build_info", "__version__",
]


def build_info() -> dict:
    """What this build has: kernels per device, and the torch it runs on."""
    return {
        "gaussian_kl_cuda": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_kernels": True,
        "cpu_isa": CPU_ISA,
        "cpu_isa_variants": list(torch.ops.gaussian_kl.cpu_isa_variants()),
        "cuda_kernels": CUDA_KERNELS,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
