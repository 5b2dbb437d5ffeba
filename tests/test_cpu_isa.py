"""Every CPU kernel variant runs the kernel tests on this machine.

The extension holds one copy of the CPU kernels per instruction set
(avx512, avx2, baseline: docs/architecture.md, "CPU variants") and runs the
best one the CPU supports. GKL_CPU_ISA forces another, read when the
package is imported; each variant this CPU can run gets the kernel tests in
a subprocess of its own (where they compare against float64 references and
torch.distributions, as in the default run).
"""

import os
import subprocess
import sys

import pytest
import torch

import gaussian_kl_cuda as gkl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = list(torch.ops.gaussian_kl.cpu_isa_variants())
FORCED = os.environ.get("GKL_CPU_ISA", "")
# The files whose tests call the CPU kernels of every case.
HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_TESTS = [os.path.join(HERE, f) for f in ("test_diag.py", "test_full.py", "test_pairs.py", "test_cpu_isa.py")]


def _run(env_isa, args, **kw):
    env = dict(os.environ, GKL_CPU_ISA=env_isa)
    return subprocess.run([sys.executable] + args, env=env, cwd=ROOT, capture_output=True, text=True, **kw)


def test_build_info_reports_the_variant_in_use():
    info = gkl.build_info()
    assert info["cpu_isa"] in VARIANTS
    assert info["cpu_isa_variants"] == VARIANTS
    if FORCED:
        assert info["cpu_isa"] == FORCED or (FORCED == "baseline" and info["cpu_isa"] == "portable")
    else:
        assert info["cpu_isa"] == VARIANTS[0], "without GKL_CPU_ISA the best variant runs"


def test_unknown_variant_fails_the_import_with_a_clear_message():
    r = _run("sse9", ["-c", "import gaussian_kl_cuda"])
    assert r.returncode != 0
    assert "GKL_CPU_ISA=sse9" in r.stderr and "available: " + ", ".join(VARIANTS) in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_kernel_tests_pass_under_variant(isa):
    if FORCED:
        pytest.skip("already inside a run forced to GKL_CPU_ISA=%s" % FORCED)
    if isa not in VARIANTS and not (isa == "baseline" and VARIANTS == ["portable"]):
        pytest.skip("this CPU or build has no %s variant (it has: %s)" % (isa, ", ".join(VARIANTS)))
    if isa == VARIANTS[0]:
        pytest.skip("%s is the default variant: the rest of this suite runs it" % isa)
    r = _run(isa, ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] + KERNEL_TESTS, timeout=1800)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail
