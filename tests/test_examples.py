"""The entry points users run: the examples/ scripts (shortened, doing what
they claim) and python -m gaussian_kl_cuda."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import time

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                    reason="examples/ is not next to tests/ (these tests run from a checkout)")


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@needs_examples
def test_vae_trains():
    first, last = load("vae").train(steps=150, verbose=False)
    assert last < 0.5 * first


@pytest.mark.slow
@needs_examples
def test_trpo_policy_respects_trust_region_and_improves():
    history = load("policy_kl").train(iters=6, max_kl=0.01, verbose=False)
    kls = [kl for kl, _ in history]
    assert all(0 < kl <= 0.015 for kl in kls), kls
    rewards = [r for _, r in history]
    assert rewards[-1] > rewards[0]


@pytest.mark.slow
@needs_examples
def test_variational_posterior_reaches_exact_posterior():
    err_m, err_S = load("variational_posterior").train(steps=1500, verbose=False)
    assert err_m < 1e-6 and err_S < 1e-3


@needs_examples
@pytest.mark.parametrize("name", ["vae", "policy_kl", "variational_posterior"])
def test_examples_have_a_main_and_docstring(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert '__name__ == "__main__"' in text and f"python examples/{name}.py" in text


# ------------------------------------------------------------ python -m gaussian_kl_cuda
def test_main_self_check_passes():
    from gaussian_kl_cuda.__main__ import self_check, self_check_pairs

    assert self_check("cpu") and self_check_pairs("cpu")


@pytest.mark.slow
def test_main_is_quiet_and_short():
    """README command 1's job: build info, self-check, speed table; nothing
    else on stdout or stderr (no tracer, profiler or ERROR lines, no warnings)."""
    env = dict(os.environ, PYTHONWARNINGS="default")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gaussian_kl_cuda", "--quick"], capture_output=True, text=True,
                       env=env, timeout=300)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == "", r.stderr
    assert "all checks passed" in r.stdout and "gkl x" in r.stdout
    for bad in ("USDT", "ERROR", "Warning", "warn"):
        assert bad not in r.stdout, r.stdout
    assert elapsed < 60, elapsed  # the budget README command 1 is held to
