import pytest
import torch

import gaussian_kl_cuda as gkl

HAS_CUDA = torch.cuda.is_available() and gkl.CUDA_KERNELS
CUDA_REASON = (
    "no CUDA device on this machine"
    if not torch.cuda.is_available()
    else "gaussian_kl_cuda was built without CUDA kernels"
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=CUDA_REASON)),
]


@pytest.fixture
def gen():
    # Fresh random inputs per test, reproducible per test.
    return torch.Generator().manual_seed(1234)
