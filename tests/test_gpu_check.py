"""bench/gpu_check.sh (its CPU-safe parts) and bench/gpu_smoke.py."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
if not os.path.exists(SCRIPT):
    pytest.skip("bench/gpu_check.sh is not next to tests/ (these tests run from a checkout)",
                allow_module_level=True)


def test_gpu_check_dry_run_lists_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    res = subprocess.run(["bash", SCRIPT, "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    cmds = (tmp_path / "commands.txt").read_text().splitlines()
    assert len(cmds) == 4
    build, tests, sanitizer, bench = cmds
    assert "FORCE_CUDA=1" in build and "TORCH_CUDA_ARCH_LIST=" in build and "MAX_JOBS=" in build
    assert "setup.py build_ext --inplace" in build
    assert "-m pytest tests" in tests
    assert sanitizer.startswith("compute-sanitizer --tool memcheck") and "bench/gpu_smoke.py" in sanitizer
    assert "bench/bench_kl.py --device cuda --kind all --mode all --quick" in bench
    assert "--plot" in bench
    status = (tmp_path / "status.txt").read_text()
    assert status.count("dry-run") == 4


def test_gpu_check_refuses_unknown_arguments_and_missing_out(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    assert subprocess.run(["bash", SCRIPT, "--bogus"], env=env, capture_output=True).returncode == 2
    env.pop("OUT")
    assert subprocess.run(["bash", SCRIPT, "--dry-run"], env=env, capture_output=True).returncode != 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_gpu_check_is_shellcheck_clean():
    res = subprocess.run(["shellcheck", SCRIPT, os.path.join(ROOT, ".ci", "run")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.cuda
@pytest.mark.slow
def test_gpu_smoke():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_smoke.py")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
