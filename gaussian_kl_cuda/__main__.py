"""python -m gaussian_kl_cuda: what this build has, a self-check against
torch.distributions on every available device, and a short speed table.

Exit status 1 if any check fails."""

import argparse
import sys

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
        from . import bench

        for d in devices:
            shapes = "4096x16,16384x512" if args.quick else "65536x16,16384x512"
            if d == "cuda":
                shapes = "1048576x64"
            print(f"\nspeed ({d}, float32, param=std; 'gkl x' = how many times faster gkl is):")
            rows = []
            cfg = bench.parse_args(["--device", d, "--shapes", shapes, "--no-compile",
                                    "--rounds", "3" if args.quick else "7"])
            copy_bw = bench.measure_copy_bandwidth(d)
            for B, D in [tuple(int(v) for v in s.split("x")) for s in shapes.split(",")]:
                for mode in ("fwd", "fwd+bwd"):
                    rows += bench.run_case("diag", B, D, torch.float32, d, mode, "std", cfg, copy_bw,
                                           bench.git_sha())
            bench.print_table([r for r in rows if "validate" not in r["provider"]])
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
