"""bench/bench_kl.py: runs, writes its results, times what it says it times,
and draws its plots."""

import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
if not os.path.isdir(BENCH):
    pytest.skip("bench/ is not next to tests/ (these tests run from a checkout)", allow_module_level=True)
sys.path.insert(0, BENCH)
import bench_kl  # noqa: E402
from names import GKL, READ_FLOOR, TD, EAGER  # noqa: E402


def test_bench_runs_and_writes_results(tmp_path):
    rows = bench_kl.main(["--device", "cpu", "--shapes", "64x8,16x40", "--no-compile", "--rounds", "2",
                          "--out", str(tmp_path), "--tag", "t"])
    assert {r["provider"] for r in rows} >= {TD, EAGER, GKL}
    assert all(r["median_ms"] > 0 for r in rows)
    # The read floor is timed with the forward rows only, once per shape.
    floor = [r for r in rows if r["provider"] == READ_FLOOR]
    assert sorted((r["B"], r["D"], r["mode"]) for r in floor) == [(16, 40, "fwd"), (64, 8, "fwd")]
    assert (tmp_path / "t.csv").exists() and (tmp_path / "t.json").exists()


@pytest.mark.parametrize("kind", ["diag", "full", "prior", "mixed"])
def test_bench_read_floor_reads_the_bytes_counted(kind):
    """The read floor sums exactly the tensors gkl reads: as many bytes as
    the rows' GB/s count, each input once."""
    B, D = 5, 3
    gen = torch.Generator().manual_seed(0)
    make_inputs = {"diag": lambda: bench_kl.diag_inputs(B, D, torch.float32, "cpu", "logvar", False, gen),
                   "full": lambda: bench_kl.full_inputs(B, D, torch.float32, "cpu", False, gen),
                   "prior": lambda: bench_kl.prior_inputs(B, D, torch.float32, "cpu", False, gen),
                   "mixed": lambda: bench_kl.mixed_inputs(B, D, torch.float32, "cpu", False, gen)}
    x = make_inputs[kind]()
    ts = bench_kl.gkl_inputs(kind, x, "logvar")
    assert len({id(t) for t in ts}) == (2 if kind == "prior" else 4)
    assert sum(t.numel() for t in ts) == bench_kl.set_elements(kind, B, D)
    if kind == "diag":
        assert ts[1] is x["lv_p"] and ts[3] is x["lv_q"]


@pytest.mark.slow
def test_bench_plots(tmp_path):
    pytest.importorskip("matplotlib")
    bench_kl.main(["--device", "cpu", "--kind", "all", "--mode", "fwd", "--shapes", "64x4,32x8",
                   "--no-compile", "--rounds", "1", "--out", str(tmp_path), "--tag", "p", "--plot"])
    assert (tmp_path / "p_diag_gbps.png").stat().st_size > 1000
    assert (tmp_path / "p_full_speedup.png").stat().st_size > 1000
