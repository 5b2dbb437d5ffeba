"""Reliability checks that apply to every op: concurrent calls from Python
threads give the same bits as serial calls, and results never go negative."""

import threading

import pytest
import torch

import gaussian_kl_cuda as gkl
from _memory import allocated_bytes


def _work(seed):
    g = torch.Generator().manual_seed(seed)
    mu, s = torch.randn(512, 24, generator=g), torch.rand(512, 24, generator=g) + 0.5
    L = torch.linalg.cholesky(torch.eye(6) + 0.1 * torch.ones(6, 6)).expand(64, 6, 6)
    m6 = torch.randn(64, 6, generator=g)
    ins = [mu.clone().requires_grad_(), s.clone().requires_grad_()]
    out = gkl.kl_diag(*ins, s.flip(0), s, param="std")
    out.sum().backward()
    full = gkl.kl_full(m6, L, m6.flip(0), L, param="scale_tril")
    return [out.detach(), ins[0].grad, ins[1].grad, full]


def test_concurrent_python_threads_match_serial():
    serial = {seed: _work(seed) for seed in range(8)}
    results, errors = {}, []

    def run(seed):
        try:
            for _ in range(5):
                results[seed] = _work(seed)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for t in threads[:4]:
        t.start()
    for t in threads[:4]:
        t.join()
    for t in threads[4:]:
        t.start()
    for t in threads[4:]:
        t.join()
    assert not errors, errors
    for seed, ref in serial.items():
        for a, b in zip(results[seed], ref):
            assert torch.equal(a, b)


@pytest.mark.parametrize("param", ["std", "var", "logvar", "logstd"])
def test_never_negative_on_random_inputs(param):
    g = torch.Generator().manual_seed(5)
    for scale in (1e-3, 1e-6, 1.0):
        mu = torch.randn(2000, 7, generator=g)
        s = torch.rand(2000, 7, generator=g) + 0.5
        if param in ("logvar", "logstd"):
            s = s.log()
        mq = mu + scale * torch.randn(2000, 7, generator=g)
        sq = s + scale * torch.randn(2000, 7, generator=g) if param in ("logvar", "logstd") \
            else s * (1 + scale * torch.randn(2000, 7, generator=g)).abs()
        assert torch.all(gkl.kl_diag(mu, s, mq, sq, param=param) >= 0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_no_rss_growth_over_10000_forward_backward_calls():
    """10 000 forward+backward calls of each op (diag, full, mixed) do not
    grow the resident set: nothing leaks per call."""
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(64, 8, generator=g, requires_grad=True)
    s = (torch.rand(64, 8, generator=g) + 0.5).requires_grad_()
    L = torch.linalg.cholesky(torch.eye(8) + 0.1 * torch.ones(8, 8)).expand(64, 8, 8).clone().requires_grad_()

    def step():
        (gkl.kl_diag(mu, s, mu.detach().flip(0), s.detach(), param="std").sum()
         + gkl.kl_full(mu, L, param="scale_tril").sum()
         + gkl.kl_mixed(mu, L, mu.detach(), s, p_param="scale_tril", q_param="var").sum()).backward()

    for _ in range(1000):  # warm-up: allocator caches, autograd, dispatcher
        step()
    before = _rss_bytes()
    for _ in range(10000):
        step()
    grown = _rss_bytes() - before
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10000 calls"


_DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
import gaussian_kl_cuda as gkl
from torch.nn.parallel import DistributedDataParallel as DDP

def model_and_data():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    return enc, x

def loss_of(enc, x):
    mu, logvar = enc(x).chunk(2, -1)
    prior = gkl.FullGaussian(torch.zeros(4), scale_tril=torch.eye(4) * 1.5)
    return gkl.GaussianKLLoss()(gkl.DiagGaussian(mu, logvar=logvar), prior)

rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
enc, x = model_and_data()
if world == 1:
    loss_of(enc, x).backward()
else:
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ddp = DDP(enc)
    shard = x.chunk(world)[rank]
    loss_of(ddp, shard).backward()   # DDP averages gradients over ranks
if rank == 0:
    torch.save([p.grad for p in enc.parameters()], out)
if world > 1:
    dist.barrier()  # every rank done before the group goes (gloo aborts on an early exit)
    dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_gloo_two_processes_match_single_process(tmp_path):
    """GaussianKLLoss under DistributedDataParallel (gloo, loopback, 2 CPU
    processes): the averaged gradients equal one process on the global batch."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    single, multi = tmp_path / "single.pt", tmp_path / "multi.pt"
    subprocess.run([sys.executable, "-c", _DDP_SCRIPT, "0", "1", str(single)], check=True, env=env,
                   timeout=120)
    procs = [subprocess.Popen([sys.executable, "-c", _DDP_SCRIPT, str(r), "2", str(multi)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{out[-3000:]}"
    for a, b in zip(torch.load(single), torch.load(multi)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_no_bxdxd_temporaries():
    """The forward of scale_tril inputs (and of the mixed full-diag pair)
    allocates its [B] output only, never a B x D x D temporary; the backward
    allocates the gradients it returns and nothing of that size besides
    (the row workspaces are per thread, O(D^2))."""
    B, D = 256, 32
    g = torch.Generator().manual_seed(0)
    A = torch.randn(B, D, D, generator=g)
    L = torch.linalg.cholesky(A @ A.mT / D + torch.eye(D))
    Lq = L.flip(0).contiguous()
    mu, mq = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    v = torch.rand(B, D, generator=g) + 0.5
    bxdxd = B * D * D * 4
    fwd = allocated_bytes(lambda: gkl.kl_full(mu, L, mq, Lq, param="scale_tril"), "gaussian_kl::kl_full")
    assert 0 < fwd <= 4 * B
    fwd_m = allocated_bytes(lambda: gkl.kl_mixed(mu, L, mq, v, p_param="scale_tril", q_param="var"),
                      "gaussian_kl::kl_mixed")
    assert 0 < fwd_m <= 4 * B
    grad = torch.ones(B)
    bwd = allocated_bytes(lambda: torch.ops.gaussian_kl.kl_full_backward(
        grad, mu, L, mq, Lq, "scale_tril", [False, True, False, True]), "gaussian_kl::kl_full_backward")
    assert 2 * bxdxd <= bwd <= 2 * bxdxd + (64 << 10)  # the two returned [B, D, D] gradients
