"""The CPU-safe parts of bench/gpu_check.sh and the bench plots."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")


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
    assert "gaussian_kl_cuda.bench --device cuda --kind all --mode all --quick" in bench
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


def test_bench_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from gaussian_kl_cuda import bench

    bench.main(["--device", "cpu", "--kind", "all", "--mode", "fwd", "--shapes", "64x4,32x8",
                "--no-compile", "--rounds", "1", "--out", str(tmp_path), "--tag", "p", "--plot"])
    assert (tmp_path / "p_diag_gbps.png").stat().st_size > 1000
    assert (tmp_path / "p_full_speedup.png").stat().st_size > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_gpu_smoke():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_smoke.py")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
