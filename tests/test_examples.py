"""The examples/ scripts run (shortened) and do what they claim."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vae_trains():
    first, last = load("vae").train(steps=150, verbose=False)
    assert last < 0.5 * first


def test_trpo_policy_respects_trust_region_and_improves():
    history = load("policy_kl").train(iters=6, max_kl=0.01, verbose=False)
    kls = [kl for kl, _ in history]
    assert all(0 < kl <= 0.015 for kl in kls), kls
    rewards = [r for _, r in history]
    assert rewards[-1] > rewards[0]


def test_variational_posterior_reaches_exact_posterior():
    err_m, err_S = load("variational_posterior").train(steps=1500, verbose=False)
    assert err_m < 1e-6 and err_S < 1e-3


@pytest.mark.parametrize("name", ["vae", "policy_kl", "variational_posterior"])
def test_examples_have_a_main_and_docstring(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert '__name__ == "__main__"' in text and f"python examples/{name}.py" in text
