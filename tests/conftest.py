"""Fixtures every test file uses: the devices, the floating dtypes and their
tolerances, fresh random generators; the `cuda` marker skips (with the
reason) where there is no GPU or no CUDA kernels."""

import pytest
import torch

import gaussian_kl_cuda as gkl

HAS_CUDA = torch.cuda.is_available() and gkl.CUDA_KERNELS
CUDA_REASON = (
    "no CUDA device on this machine"
    if not torch.cuda.is_available()
    else "gaussian_kl_cuda was built without CUDA kernels"
)

# Value tolerances against a float64 reference on well-conditioned inputs
# (docs/design.md, "Accuracy targets"; the tests of hard cases set their own).
TOLERANCES = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-6, atol=2e-6)}


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason=CUDA_REASON)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Every test taking `device` runs on the CPU and on CUDA (skipped, with
    the reason, where there is none)."""
    return request.param


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param


@pytest.fixture
def tol(request):
    """assert_close tolerances for the test's dtype (float64 if it has none)."""
    dtype = request.getfixturevalue("dtype") if "dtype" in request.fixturenames else torch.float64
    return TOLERANCES[dtype]


@pytest.fixture
def gen():
    # Fresh random inputs per test, reproducible per test.
    return torch.Generator().manual_seed(1234)
