"""Benchmarks: gaussian_kl_cuda against torch.distributions, the eager
closed form users write by hand, and torch.compile of that closed form.

    python bench/bench_kl.py --device cpu --kind diag --mode all

All providers are timed in one process, interleaved round by round, on the
same inputs; every row reports median / p20 / p80 and the speed-up of gkl
against each provider measured in that same run. Results go to CSV and JSON
under --out (default bench/results/).
"""

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.distributions as td

import gaussian_kl_cuda as gkl
from names import COMPILED, EAGER, GKL, GKL_CHECK, READ_FLOOR, TD, TD_VALIDATE

DIAG_SHAPES_CPU = [(4096, 64), (65536, 16), (16384, 512), (1 << 20, 16), (2048, 4096)]
DIAG_SHAPES_CPU_QUICK = [(65536, 16), (16384, 512)]
DIAG_SHAPES_CUDA = [(1 << 20, 64), (65536, 4096), (1 << 22, 256)]
DIAG_SHAPES_CUDA_QUICK = [(1 << 20, 64), (65536, 4096)]
# Full covariance: B sized to roughly constant work (B * D^3).
FULL_SHAPES_CPU = [(65536, 2), (16384, 4), (8192, 8), (4096, 16), (1024, 32), (512, 64), (64, 128),
                   (32, 256), (8, 512)]
FULL_SHAPES_CPU_QUICK = [(16384, 4), (4096, 16), (512, 64), (32, 256)]
FULL_SHAPES_CUDA = [(1 << 20, 2), (1 << 19, 4), (1 << 18, 8), (1 << 17, 16), (1 << 16, 32),
                    (8192, 64), (1024, 128), (128, 256)]
FULL_SHAPES_CUDA_QUICK = [(1 << 18, 4), (1 << 16, 16), (1 << 14, 32)]
# Mixed: full p (scale_tril) against a diagonal q (std).
MIXED_SHAPES_CPU = [(65536, 4), (16384, 16), (4096, 64), (256, 256)]
MIXED_SHAPES_CPU_QUICK = [(4096, 64)]
MIXED_SHAPES_CUDA = [(1 << 19, 4), (1 << 17, 16), (1 << 15, 64), (2048, 256)]
MIXED_SHAPES_CUDA_QUICK = [(1 << 17, 16), (1 << 15, 64)]


def git_sha() -> str:
    """HEAD's short sha, with "+dirty" when tracked files other than
    bench/results/ differ from it (the numbers are then of uncommitted code)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        return subprocess.check_output(["git", *args], cwd=here, stderr=subprocess.DEVNULL, text=True)

    try:
        sha = git("rev-parse", "--short", "HEAD").strip()
    except Exception:
        return "unknown"
    try:
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except Exception:
        return sha
    return sha + "+dirty" if any(not p.startswith("bench/results/") for p in changed) else sha


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------- closed forms
def closed_form_std(mu_p, s_p, mu_q, s_q):
    """What users write by hand (and what td computes): std parametrisation."""
    var_ratio = (s_p / s_q).pow(2)
    t1 = ((mu_p - mu_q) / s_q).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log()).sum(-1)


def closed_form_logvar(mu_p, lv_p, mu_q, lv_q):
    d = mu_q - mu_p
    return 0.5 * (torch.exp(lv_p - lv_q) + d * d * torch.exp(-lv_q) - 1 + lv_q - lv_p).sum(-1)


_compiled: Dict[str, Callable] = {}


def compiled(fn):
    """torch.compile of fn, one per closed form; every (shape, grad mode) the
    benchmark visits gets its own static-shape graph (the recompile limit is
    raised so that no shape silently falls back to eager)."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 256))
    if fn.__name__ not in _compiled:
        _compiled[fn.__name__] = torch.compile(fn, dynamic=False)
    return _compiled[fn.__name__]


# ----------------------------------------------------------------- timing
class Timer:
    """CPU: wall clock around each call. CUDA: events, synchronised once per
    sample."""

    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn: Callable[[], None], inner: int) -> float:
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner


def measure_copy_bandwidth(device: str) -> float:
    """GB/s of a large tensor copy (read + write) on the device."""
    n = (1 << 26) if device == "cpu" else (1 << 28)  # 256 MB / 1 GB of float32
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    timer = Timer(device)
    for _ in range(2):
        dst.copy_(src)
    ts = sorted(timer(lambda: dst.copy_(src), 3) for _ in range(7))
    return 2 * src.numel() * src.element_size() / ts[len(ts) // 2] / 1e9


def measure_matmul_gflops(device: str, dtype=torch.float32) -> float:
    """GFLOP/s of a large square matrix product on the device (the ceiling
    for the full-covariance rows)."""
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = Timer(device)
    a @ b
    ts = sorted(timer(lambda: a @ b, 2) for _ in range(5))
    return 2 * n ** 3 / ts[len(ts) // 2] / 1e9


def cpu_alloc_bytes(fn: Callable[[], None]) -> float:
    """Bytes allocated through torch's CPU allocator during one call of fn
    (the sum of all allocations, freed or not: what the call asks the
    allocator for), from the profiler's memory accounting."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fds(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return float(sum(max(e.self_cpu_memory_usage, 0) for e in prof.events()))


@contextlib.contextmanager
def _quiet_fds():
    """Silences file descriptors 1 and 2 (the profiler's native tracer prints
    USDT/ERROR lines there at start and stop, below Python's sys.stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def percentile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ----------------------------------------------------------------- diag cases
def diag_inputs(B: int, D: int, dtype, device, param: str, requires_grad: bool, gen):
    def t(scale=1.0, offset=0.0):
        x = torch.randn(B, D, generator=gen, dtype=torch.float32) * scale + offset
        return x.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    mu_p, mu_q = t(), t()
    lv_p, lv_q = t(0.5), t(0.5)
    with torch.no_grad():
        std_p, std_q = (0.5 * lv_p).exp(), (0.5 * lv_q).exp()
    std_p.requires_grad_(requires_grad)
    std_q.requires_grad_(requires_grad)
    return dict(mu_p=mu_p, mu_q=mu_q, lv_p=lv_p, lv_q=lv_q, std_p=std_p, std_q=std_q)


def diag_providers(x, param: str, with_compile: bool) -> Dict[str, Callable[[], torch.Tensor]]:
    mp, mq, sp, sq = x["mu_p"], x["mu_q"], x["std_p"], x["std_q"]
    lp, lq = x["lv_p"], x["lv_q"]
    if param == "std":
        closed, a, b = closed_form_std, sp, sq
    else:
        closed, a, b = closed_form_logvar, lp, lq
    prov = {
        TD: lambda: td.kl_divergence(
            td.Independent(td.Normal(mp, sp, validate_args=False), 1),
            td.Independent(td.Normal(mq, sq, validate_args=False), 1),
        ),
        TD_VALIDATE: lambda: td.kl_divergence(
            td.Independent(td.Normal(mp, sp, validate_args=True), 1),
            td.Independent(td.Normal(mq, sq, validate_args=True), 1),
        ),
        EAGER: lambda: closed(mp, a, mq, b),
    }
    if with_compile:
        cf = compiled(closed)
        prov[COMPILED] = lambda: cf(mp, a, mq, b)
    prov[GKL] = lambda: gkl.kl_diag(mp, a, mq, b, param=param, check=False)
    prov[GKL_CHECK] = lambda: gkl.kl_diag(mp, a, mq, b, param=param)
    return prov


def full_inputs(B: int, D: int, dtype, device, requires_grad: bool, gen):
    def spd_factor():
        A = torch.randn(B, D, D, generator=gen, dtype=torch.float64)
        S = A @ A.transpose(-1, -2) / D + torch.eye(D, dtype=torch.float64)
        return torch.linalg.cholesky(S).to(device=device, dtype=dtype).requires_grad_(requires_grad)

    def mu():
        return torch.randn(B, D, generator=gen).to(device=device, dtype=dtype).requires_grad_(requires_grad)

    return dict(mu_p=mu(), mu_q=mu(), L_p=spd_factor(), L_q=spd_factor())


def full_providers(x) -> Dict[str, Callable[[], torch.Tensor]]:
    """Both sides scale_tril, or p only (prior_inputs: q = N(0, I), which
    torch.distributions gets as an explicit zero mean and identity factor)."""
    mp, Lp = x["mu_p"], x["L_p"]
    q = (x["mu_q"], x["L_q"]) if "mu_q" in x else ()
    D = mp.shape[-1]
    mq, Lq = q or (torch.zeros(D, dtype=mp.dtype, device=mp.device),
                   torch.eye(D, dtype=mp.dtype, device=mp.device))

    def td_kl(validate: bool):
        return lambda: td.kl_divergence(
            td.MultivariateNormal(mp, scale_tril=Lp, validate_args=validate),
            td.MultivariateNormal(mq, scale_tril=Lq, validate_args=validate),
        )

    return {
        TD: td_kl(False),
        TD_VALIDATE: td_kl(True),
        GKL: lambda: gkl.kl_full(mp, Lp, *q, param="scale_tril", check=False),
        GKL_CHECK: lambda: gkl.kl_full(mp, Lp, *q, param="scale_tril"),
    }


def prior_inputs(B: int, D: int, dtype, device, requires_grad: bool, gen):
    """A full-covariance p only: the KL against q = N(0, I) (a VAE's KL term)."""
    x = full_inputs(B, D, dtype, device, requires_grad, gen)
    return dict(mu_p=x["mu_p"], L_p=x["L_p"])


def mixed_inputs(B: int, D: int, dtype, device, requires_grad: bool, gen):
    x = full_inputs(B, D, dtype, device, requires_grad, gen)
    std = (torch.rand(B, D, generator=gen) + 0.5).to(device=device, dtype=dtype)
    return dict(mu_p=x["mu_p"], mu_q=x["mu_q"], L_p=x["L_p"], std_q=std.requires_grad_(requires_grad))


def closed_form_full_diag(mu_p, L_p, mu_q, std_q):
    """The O(D^2) closed form of KL(N(mu_p, Lp Lp^T) || N(mu_q, diag(std_q^2)))
    an experienced user writes by hand instead of densifying q."""
    vq = std_q * std_q
    tr = (L_p * L_p).sum(-1) / vq
    d = mu_q - mu_p
    logdet_p = torch.diagonal(L_p, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (tr + d * d / vq - 1 + vq.log()).sum(-1) - logdet_p


def mixed_providers(x, with_compile: bool) -> Dict[str, Callable[[], torch.Tensor]]:
    mp, mq, Lp, sq = x["mu_p"], x["mu_q"], x["L_p"], x["std_q"]
    prov = {
        # torch has no full-diagonal pair: users densify the diagonal.
        TD: lambda: td.kl_divergence(
            td.MultivariateNormal(mp, scale_tril=Lp, validate_args=False),
            td.MultivariateNormal(mq, scale_tril=torch.diag_embed(sq), validate_args=False),
        ),
        TD_VALIDATE: lambda: td.kl_divergence(
            td.MultivariateNormal(mp, scale_tril=Lp, validate_args=True),
            td.MultivariateNormal(mq, scale_tril=torch.diag_embed(sq), validate_args=True),
        ),
        EAGER: lambda: closed_form_full_diag(mp, Lp, mq, sq),
    }
    if with_compile:
        cf = compiled(closed_form_full_diag)
        prov[COMPILED] = lambda: cf(mp, Lp, mq, sq)
    prov[GKL] = lambda: gkl.kl_mixed(mp, Lp, mq, sq, p_param="scale_tril", q_param="std", check=False)
    prov[GKL_CHECK] = lambda: gkl.kl_mixed(mp, Lp, mq, sq, p_param="scale_tril", q_param="std")
    return prov




def gkl_inputs(kind: str, x: dict, param: str) -> List[torch.Tensor]:
    """The tensors the gkl provider of this kind reads."""
    if kind == "diag":
        side = "std" if param == "std" else "lv"
        return [x["mu_p"], x[side + "_p"], x["mu_q"], x[side + "_q"]]
    if kind == "prior":
        return [x["mu_p"], x["L_p"]]
    return [x["mu_p"], x["L_p"], x["mu_q"], x["L_q" if kind == "full" else "std_q"]]


def set_elements(kind: str, B: int, D: int) -> int:
    """Elements of one input set."""
    if kind == "diag":
        return 4 * B * D
    if kind == "mixed":
        return B * D * D + 3 * B * D
    if kind == "prior":
        return B * D * (D + 1)
    return 2 * B * D * (D + 1)


def full_flops(B: int, D: int, mode: str) -> float:
    """Useful flops: the triangular solve for E (D^3/3) and for b (D^2);
    the backward adds two more triangular solves and E E^T (~D^3)."""
    fwd = B * (D ** 3 / 3 + D * D)
    return fwd if mode == "fwd" else fwd + B * (D ** 3 + 2 * D * D)


def diag_bytes(B: int, D: int, elsize: int, mode: str) -> int:
    """Bytes that must move: each input read once, outputs written once."""
    fwd = (4 * B * D + B) * elsize
    bwd = (4 * B * D + B + 4 * B * D) * elsize  # read inputs + grad, write 4 grads
    return fwd if mode == "fwd" else fwd + bwd


def run_case(kind, B, D, dtype, device, mode, param, args, copy_bw, sha, matmul=None) -> List[dict]:
    gen = torch.Generator().manual_seed(B * 7 + D)
    need_grad = mode != "fwd"
    elsize = torch.empty((), dtype=dtype).element_size()
    set_bytes = set_elements(kind, B, D) * elsize
    # On a GPU, rotate among several input sets when one set would sit in the
    # L2 cache (~50 MB): a cache-resident buffer would flatter every provider.
    n_sets = 1 if device == "cpu" else max(1, min(8, -(-(3 * 64 << 20) // max(set_bytes, 1))))
    sets = []
    for _ in range(n_sets):
        if kind == "diag":
            x = diag_inputs(B, D, dtype, device, param, need_grad, gen)
            sets.append((x, diag_providers(x, param, args.compile)))
        elif kind == "mixed":
            x = mixed_inputs(B, D, dtype, device, need_grad, gen)
            sets.append((x, mixed_providers(x, args.compile)))
        elif kind == "prior":
            x = prior_inputs(B, D, dtype, device, need_grad, gen)
            sets.append((x, full_providers(x)))
        else:
            x = full_inputs(B, D, dtype, device, need_grad, gen)
            sets.append((x, full_providers(x)))
    if mode == "fwd":
        # Not a KL: the time torch takes to read every input gkl reads once
        # (a sum of each), in the same rounds. td / floor bounds the
        # forward speed-up any implementation reading at torch's rate gets.
        for x, p in sets:
            p[READ_FLOOR] = lambda ts=gkl_inputs(kind, x, param): [t.sum() for t in ts]
    if kind in ("full", "prior"):
        param = "scale_tril"
    elif kind == "mixed":
        param = "scale_tril|std"
    prov = sets[0][1]

    def make_call(name):
        state = {"i": 0, "graph": {}}

        def pick():
            i = state["i"] % n_sets
            state["i"] += 1
            x, p = sets[i]
            return [v for v in x.values() if v.requires_grad], p[name], i

        if mode == "fwd":
            def call():
                _, f, _ = pick()
                f()
        elif mode == "fwd+bwd":
            def call():
                leaves, f, _ = pick()
                for t in leaves:
                    t.grad = None
                f().sum().backward()
        else:  # bwd: the backward pass alone, on a graph built once per set
            def call():
                leaves, f, i = pick()
                if i not in state["graph"]:
                    state["graph"][i] = f().sum()
                torch.autograd.grad(state["graph"][i], leaves, retain_graph=True, allow_unused=True)
        return call

    calls = {name: make_call(name) for name in prov}
    # Correctness guard: every provider computes the same thing.
    with torch.no_grad():
        ref = prov[TD]().double()
        for name, f in prov.items():
            if name == READ_FLOOR:
                continue
            got = f().double()
            if not torch.allclose(got, ref, rtol=5e-2 if dtype != torch.float32 else 1e-3, atol=1e-2):
                raise RuntimeError(f"bench: provider {name} disagrees with torch.distributions")
    timer = Timer(device)
    # Size the inner loop to ~20 ms per sample so timer noise is small.
    inner = {}
    peak = {}
    for name, c in calls.items():
        c()
        c()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            c()
            torch.cuda.synchronize()
            peak[name] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        else:
            peak[name] = cpu_alloc_bytes(c) / 2 ** 20
        t = timer(c, 1)
        inner[name] = max(1, min(200, int(0.02 / max(t, 1e-7))))
    samples: Dict[str, List[float]] = {n: [] for n in calls}
    order = list(calls)
    rng = random.Random(B * 31 + D)
    for _ in range(args.rounds):
        # Interleaved, in a fresh order each round: every provider sees the
        # same machine state, and none always follows the same neighbour
        # (allocation-heavy providers leave caches and TLBs cold).
        rng.shuffle(order)
        for name in order:
            samples[name].append(timer(calls[name], inner[name]))
    if device == "cuda":
        torch.cuda.synchronize()
    med = {n: statistics.median(s) for n, s in samples.items()}
    rows = []
    if kind == "diag":
        nbytes = diag_bytes(B, D, elsize, mode)
    else:
        nbytes = (set_elements(kind, B, D) + B) * elsize * (1 if mode == "fwd" else 3)
    flops = full_flops(B, D, mode) if kind == "full" else 0.0
    for name, s in samples.items():
        row = dict(
            op="kl_full (q = N(0, I))" if kind == "prior" else f"kl_{kind}", provider=name, mode=mode, param=param, B=B, D=D,
            dtype=str(dtype).replace("torch.", ""), median_ms=med[name] * 1e3,
            p20_ms=percentile(s, 0.2) * 1e3, p80_ms=percentile(s, 0.8) * 1e3,
            gbps=nbytes / med[name] / 1e9, copy_gbps=copy_bw,
            pct_of_copy_bw=100 * nbytes / med[name] / 1e9 / copy_bw,
            gflops=flops / med[name] / 1e9, matmul_gflops=matmul if kind == "full" else None,
            # CUDA: max_memory_allocated over one call; CPU: bytes allocated
            # through torch's allocator during one call (profiler accounting).
            peak_mem_mb=peak.get(name),
            gkl_speedup=med[name] / med[GKL], device=device_name(device),
            torch=torch.__version__, git_sha=sha,
        )
        rows.append(row)
    return rows


def fits(kind: str, B: int, D: int, dtype, device: str) -> bool:
    """Inputs, gradients and the providers' temporaries (~4x) must fit."""
    elsize = torch.empty((), dtype=dtype).element_size()
    per = set_elements(kind, B, D) * elsize
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return 12 * per < free
    return 12 * per < 8 << 30


def print_table(rows: List[dict], file=sys.stdout) -> None:
    hdr = f"{'op':9} {'mode':8} {'B':>8} {'D':>5} {'dtype':8} {'provider':30} {'median ms':>10} {'p20':>9} {'p80':>9} {'GB/s':>7} {'mem MiB':>8} {'gkl x':>7}"
    print(hdr, file=file)
    print("-" * len(hdr), file=file)
    for r in rows:
        print(
            f"{r['op']:9} {r['mode']:8} {r['B']:>8} {r['D']:>5} {r['dtype']:8} {r['provider']:30} "
            f"{r['median_ms']:>10.3f} {r['p20_ms']:>9.3f} {r['p80_ms']:>9.3f} {r['gbps']:>7.1f} "
            f"{(r['peak_mem_mb'] if r['peak_mem_mb'] is not None else float('nan')):>8.1f} "
            f"{r['gkl_speedup']:>7.2f}",
            file=file,
        )


def write_results(rows: List[dict], out_dir: str, tag: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, tag)
    with open(base + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {base}.csv and {base}.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--kind", default="diag", choices=["diag", "full", "prior", "mixed", "all"],
                   help="diag, full (scale_tril inputs), prior (scale_tril p vs q = N(0, I)), "
                        "mixed (scale_tril p vs std q) or all")
    p.add_argument("--mode", default="all", choices=["fwd", "bwd", "fwd+bwd", "all"],
                   help="all = fwd and fwd+bwd")
    p.add_argument("--param", default="std", choices=["std", "logvar"],
                   help="parametrisation (std matches torch.distributions' Normal)")
    p.add_argument("--quick", action="store_true", help="fewer shapes and rounds")
    p.add_argument("--shapes", default=None, help="override, e.g. 65536x16,16384x512")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile provider")
    p.add_argument("--out", default=os.path.join("bench", "results"))
    p.add_argument("--tag", default=None, help="file name stem of the results")
    p.add_argument("--plot", action="store_true", help="also write PNG plots (needs matplotlib)")
    return p.parse_args(argv)


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    if args.device == "cuda" and not (torch.cuda.is_available() and gkl.CUDA_KERNELS):
        sys.exit("bench: --device cuda needs a GPU and a build with CUDA kernels")
    dtype = getattr(torch, args.dtype)
    if args.rounds is None:
        args.rounds = 7 if args.quick else 15
    kinds = ["diag", "full", "prior", "mixed"] if args.kind == "all" else [args.kind]
    modes = ["fwd", "fwd+bwd"] if args.mode == "all" else [args.mode]
    sha = git_sha()
    copy_bw = measure_copy_bandwidth(args.device)
    matmul = measure_matmul_gflops(args.device) if "full" in kinds else None
    print(f"gaussian_kl_cuda bench: {device_name(args.device)}, torch {torch.__version__}, "
          f"git {sha}, copy bandwidth {copy_bw:.1f} GB/s"
          + (f", float32 matmul {matmul:.0f} GFLOP/s" if matmul else ""))
    rows = []
    for kind in kinds:
        if args.shapes:
            shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        else:
            table = {
                ("diag", "cpu"): (DIAG_SHAPES_CPU_QUICK, DIAG_SHAPES_CPU),
                ("diag", "cuda"): (DIAG_SHAPES_CUDA_QUICK, DIAG_SHAPES_CUDA),
                ("full", "cpu"): (FULL_SHAPES_CPU_QUICK, FULL_SHAPES_CPU),
                ("full", "cuda"): (FULL_SHAPES_CUDA_QUICK, FULL_SHAPES_CUDA),
                ("prior", "cpu"): (FULL_SHAPES_CPU_QUICK, FULL_SHAPES_CPU),
                ("prior", "cuda"): (FULL_SHAPES_CUDA_QUICK, FULL_SHAPES_CUDA),
                ("mixed", "cpu"): (MIXED_SHAPES_CPU_QUICK, MIXED_SHAPES_CPU),
                ("mixed", "cuda"): (MIXED_SHAPES_CUDA_QUICK, MIXED_SHAPES_CUDA),
            }[(kind, args.device)]
            shapes = table[0] if args.quick else table[1]
        for B, D in shapes:
            for mode in modes:
                if not fits(kind, B, D, dtype, args.device):
                    print(f"skip {kind} {B}x{D}: does not fit in device memory with its gradients")
                    continue
                rows += run_case(kind, B, D, dtype, args.device, mode, args.param, args, copy_bw, sha,
                                 matmul)
    print_table(rows)
    if args.plot:
        from plots import plot_results

        for path in plot_results(rows, args.out, args.tag or f"{args.kind}_{args.device}_{args.dtype}"):
            print(f"wrote {path}")
    tag = args.tag or f"{args.kind}_{args.device}_{args.dtype}_{args.param}"
    write_results(rows, args.out, tag)
    return rows


if __name__ == "__main__":
    main()
