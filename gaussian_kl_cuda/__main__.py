"""python -m gaussian_kl_cuda: what this build has, a self-check against
torch.distributions on every available device, and a short speed table.

Exit status 1 if any check fails."""

import argparse
import statistics
import sys
import time

import torch
import torch.distributions as td

import gaussian_kl_cuda as gkl


def _std(s, param):
    return {"std": s, "var": s.sqrt(), "logvar": (0.5 * s).exp(), "logstd": s.exp()}[param]


def self_check(device: str) -> bool:
    gen = torch.Generator().manual_seed(0)
    ok = True
    for param in gkl.DIAG_PARAMS:
        for prior in (False, True):
            B, D = 257, 19
            mu_p = torch.randn(B, D, generator=gen, dtype=torch.float64)
            s_p = torch.rand(B, D, generator=gen, dtype=torch.float64) + 0.5
            mu_q = torch.randn(D, generator=gen, dtype=torch.float64)
            s_q = torch.rand(D, generator=gen, dtype=torch.float64) + 0.5
            if param in ("logvar", "logstd"):
                s_p, s_q = s_p.log(), s_q.log()
            if prior:
                mu_q, s_q_t = torch.zeros(D, dtype=torch.float64), None
                std_q = torch.ones(D, dtype=torch.float64)
            else:
                s_q_t, std_q = s_q, _std(s_q, param)
            ref_in = [t.clone().requires_grad_() for t in (mu_p, _std(s_p, param))]
            ref = td.kl_divergence(
                td.Independent(td.Normal(*ref_in), 1), td.Independent(td.Normal(mu_q, std_q), 1)
            )
            ref.sum().backward()
            worst = 0.0
            for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
                a = [mu_p.to(device, dtype).clone().requires_grad_(), s_p.to(device, dtype)]
                q = [] if prior else [mu_q.to(device, dtype), s_q_t.to(device, dtype)]
                out = gkl.kl_diag(*a, *q, param=param)
                out.sum().backward()
                with torch.no_grad():
                    err = ((out.double().cpu() - ref).abs() / ref.abs().clamp_min(1)).max()
                    gerr = (a[0].grad.double().cpu() - ref_in[0].grad).abs().max()
                worst = max(worst, float(err) / tol, float(gerr) / tol)
            status = "ok" if worst <= 1 else "FAIL"
            ok &= worst <= 1
            print(f"  {device:5} kl_diag param={param:7} q={'N(0,I)' if prior else 'shared':7}  "
                  f"value+grad vs torch.distributions: {status}")
    return ok


def _side(kind, loc, S, var):
    """A gkl container of kind (a full param or a diagonal param)."""
    if kind == "scale_tril":
        return gkl.FullGaussian(loc, scale_tril=torch.linalg.cholesky(S))
    if kind == "cov":
        return gkl.FullGaussian(loc, cov=S)
    s = {"std": var.sqrt(), "var": var, "logvar": var.log(), "logstd": 0.5 * var.log()}[kind]
    return gkl.DiagGaussian(loc, **{kind: s})


def self_check_pairs(device: str) -> bool:
    """gkl.kl for full-full and both mixed directions against
    td.MultivariateNormal (diagonals densified), value and mean gradient."""
    gen = torch.Generator().manual_seed(1)
    ok = True
    B, D = 33, 7
    for pk, qk in (("scale_tril", "scale_tril"), ("cov", "cov"), ("scale_tril", "var"),
                   ("cov", "logvar"), ("logvar", "scale_tril"), ("std", "cov")):
        dense = []
        sides = []
        for kind in (pk, qk):
            loc = torch.randn(B, D, generator=gen, dtype=torch.float64)
            var = torch.rand(B, D, generator=gen, dtype=torch.float64) + 0.5
            A = torch.randn(B, D, D, generator=gen, dtype=torch.float64)
            S = A @ A.mT / D + 0.5 * torch.eye(D, dtype=torch.float64)
            S = S if kind in gkl.FULL_PARAMS else torch.diag_embed(var)
            dense.append((loc, S))
            sides.append((kind, loc, S, var))
        ref_mu = dense[0][0].clone().requires_grad_()
        ref = td.kl_divergence(td.MultivariateNormal(ref_mu, dense[0][1]),
                               td.MultivariateNormal(*dense[1]))
        ref.sum().backward()
        worst = 0.0
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-3)):
            conv = [(k, loc.to(device, dtype), S.to(device, dtype), v.to(device, dtype))
                    for k, loc, S, v in sides]
            mu = conv[0][1].clone().requires_grad_()
            out = gkl.kl(_side(conv[0][0], mu, *conv[0][2:]), _side(*conv[1]))
            out.sum().backward()
            with torch.no_grad():
                err = ((out.double().cpu() - ref).abs() / ref.abs().clamp_min(1)).max()
                gerr = (mu.grad.double().cpu() - ref_mu.grad).abs().max()
            worst = max(worst, float(err) / tol, float(gerr) / tol)
        status = "ok" if worst <= 1 else "FAIL"
        ok &= worst <= 1
        print(f"  {device:5} kl p={pk:10} q={qk:10}  value+grad vs torch.distributions: {status}")
    return ok


def speed_table(device: str, quick: bool) -> None:
    """kl_diag (param="std") against torch.distributions, float32, forward and
    forward + backward, timed interleaved in this process (median of rounds).
    The full benchmark: bench/bench_kl.py."""
    shapes = {"cpu": [(4096, 16), (16384, 512)] if quick else [(65536, 16), (16384, 512)],
              "cuda": [(1 << 20, 64)]}[device]
    rounds = 3 if quick else 7
    print(f"\nspeed ({device}, float32, param=std; gkl x = how many times faster gkl is than "
          "torch.distributions):")
    print(f"  {'B':>7} {'D':>5}  {'mode':8} {'td ms':>9} {'gkl ms':>9} {'gkl x':>7}")
    gen = torch.Generator().manual_seed(2)
    for B, D in shapes:
        x = [torch.randn(B, D, generator=gen).to(device), torch.rand(B, D, generator=gen).to(device) + 0.5,
             torch.randn(B, D, generator=gen).to(device), torch.rand(B, D, generator=gen).to(device) + 0.5]
        providers = {
            "td": lambda a: td.kl_divergence(td.Independent(td.Normal(a[0], a[1], validate_args=False), 1),
                                             td.Independent(td.Normal(a[2], a[3], validate_args=False), 1)),
            "gkl": lambda a: gkl.kl_diag(*a, param="std", check=False),
        }
        for mode in ("fwd", "fwd+bwd"):
            args = [t.clone().requires_grad_(mode != "fwd") for t in x]

            def call(f):
                out = f(args)
                if mode != "fwd":
                    out.sum().backward()
                if device == "cuda":
                    torch.cuda.synchronize()

            times = {k: [] for k in providers}
            for r in range(rounds + 1):
                for k, f in providers.items():
                    t0 = time.perf_counter()
                    call(f)
                    if r:  # the first round warms up
                        times[k].append(time.perf_counter() - t0)
            td_ms, gkl_ms = (1e3 * statistics.median(times[k]) for k in ("td", "gkl"))
            print(f"  {B:>7} {D:>5}  {mode:8} {td_ms:>9.3f} {gkl_ms:>9.3f} {td_ms / gkl_ms:>6.1f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller speed table")
    p.add_argument("--no-bench", action="store_true", help="skip the speed table")
    args = p.parse_args(argv)

    info = gkl.build_info()
    print(f"gaussian_kl_cuda {info['gaussian_kl_cuda']} on torch {info['torch']}")
    print(f"  kernels: CPU yes, CUDA {'yes' if info['cuda_kernels'] else 'no (CPU-only build)'}"
          f"; CUDA device: {info['device'] if info['cuda_available'] else 'none'}")
    devices = ["cpu"] + (["cuda"] if info["cuda_available"] and info["cuda_kernels"] else [])
    print("self-check:")
    ok = all([self_check(d) and self_check_pairs(d) for d in devices])

    if not args.no_bench:
        for d in devices:
            speed_table(d, args.quick)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
