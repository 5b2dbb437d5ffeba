"""What the torch.func transforms and second derivatives cost, against the same
transform over torch.distributions, measured in one run (interleaved rounds,
median of each; the ratio is torch time / ours).

    python bench/transforms.py --device cpu [--rounds 15] [--out bench/results/transforms_cpu.json]
"""

import argparse
import json
import statistics
import time

import torch
import torch.distributions as td
from torch.func import grad, hessian, jvp, vmap

import gaussian_kl_cuda as gkl


def _timer(device):
    def run(fn):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return run


def cases(device, dtype):
    """(name, inputs (p's two, then q's two), ours, torch.distributions)."""
    g = torch.Generator().manual_seed(0)

    def rnd(*s):
        return torch.randn(*s, generator=g, dtype=dtype).to(device)

    def diag_ours(m, l, mq, lq):
        return gkl.kl_diag(m, l, mq, lq, param="logvar")

    def diag_td(m, l, mq, lq):
        return td.kl_divergence(td.Independent(td.Normal(m, (0.5 * l).exp()), 1),
                                td.Independent(td.Normal(mq, (0.5 * lq).exp()), 1))

    def full_ours(m, L, mq, Lq):
        return gkl.kl_full(m, L, mq, Lq, param="scale_tril")

    def full_td(m, L, mq, Lq):
        return td.kl_divergence(td.MultivariateNormal(m, scale_tril=L), td.MultivariateNormal(mq, scale_tril=Lq))

    def tril(B, D):
        A = rnd(B, D, D)
        return torch.linalg.cholesky(A @ A.mT / D + torch.eye(D, dtype=dtype, device=device))

    out = []
    for B, D in ((256, 16), (16384, 16)):
        out.append((f"kl_diag {B}x{D}", (rnd(B, D), 0.3 * rnd(B, D), rnd(B, D), 0.3 * rnd(B, D)), diag_ours, diag_td))
    for B, D in ((256, 16), (4096, 16)):
        out.append((f"kl_full {B}x{D}", (rnd(B, D), tril(B, D), rnd(B, D), tril(B, D)), full_ours, full_td))
    return out


def transforms(x):
    """The transforms timed, each w.r.t. p's two inputs."""
    t = tuple(torch.randn_like(a) for a in x[:2])
    q = x[2:]

    def hvp(f):
        xs = [a.detach().requires_grad_() for a in x[:2]]
        gs = torch.autograd.grad(f(*xs, *q).sum(), xs, create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(gs, t)), xs)

    return {
        "grad": lambda f: grad(lambda *a: f(*a).sum(), argnums=(0, 1))(*x),
        "vmap(grad) per row": lambda f: vmap(grad(f, argnums=(0, 1)))(*x),
        "jvp": lambda f: jvp(lambda a, b: f(a, b, *q), x[:2], t),
        "hvp (double backward)": hvp,
        "hessian, 4 rows": lambda f: hessian(lambda a: f(a, *(y[:4] for y in x[1:])).sum())(x[0][:4]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    timer, rows = _timer(args.device), []
    print("| case | transform | ours (ms) | torch.distributions (ms) | speed-up |\n|---|---|---|---|---|")
    for name, x, ours, ref in cases(args.device, torch.float32):
        for tname, tr in transforms(x).items():
            for _ in range(2):  # warm-up
                tr(ours), tr(ref)
            a, b = [], []
            for _ in range(args.rounds):
                a.append(timer(lambda: tr(ours)))
                b.append(timer(lambda: tr(ref)))
            ma, mb = statistics.median(a), statistics.median(b)
            rows.append(dict(case=name, transform=tname, ours_ms=1e3 * ma, torch_ms=1e3 * mb, speedup=mb / ma))
            print(f"| {name} | {tname} | {1e3 * ma:.3f} | {1e3 * mb:.3f} | {mb / ma:.2f}x |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=args.device, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
