"""Every op once, small, on CUDA, forward and backward, every dtype and
parametrisation: the workload bench/gpu_check.sh runs under
compute-sanitizer (memcheck), and a quick correctness check against float64
on the CPU. Exit status 1 on any mismatch."""

import sys

import torch

import gaussian_kl_cuda as gkl


def mixed_pairs(g, dtype, D, tol) -> int:
    """kl_mixed for every pair of kinds (full-diag, diag-full, scale_tril-cov)."""
    bad = 0
    A = torch.randn(9, D, D, generator=g, dtype=torch.float64)
    S = A @ A.mT / D + torch.eye(D, dtype=torch.float64)
    sides = {"scale_tril": torch.linalg.cholesky(S), "cov": S}
    s = torch.rand(9, D, generator=g, dtype=torch.float64) + 0.5
    for param in gkl.DIAG_PARAMS:
        sides[param] = s.log() if param in ("logvar", "logstd") else s
    mu = torch.randn(9, D, generator=g, dtype=torch.float64)
    pairs = [(a, b) for a in gkl.FULL_PARAMS for b in gkl.DIAG_PARAMS]
    pairs += [(b, a) for a, b in pairs] + [("scale_tril", "cov"), ("cov", "scale_tril")]
    for pp, qp in pairs:
        ins = [t.to("cuda", dtype).requires_grad_() for t in (mu, sides[pp], mu.flip(0), sides[qp].flip(0))]
        out = gkl.kl_mixed(*ins, p_param=pp, q_param=qp)
        out.sum().backward()
        ref = gkl.kl_mixed(mu, sides[pp], mu.flip(0), sides[qp].flip(0), p_param=pp, q_param=qp)
        err = ((out.double().cpu() - ref).abs() / ref.abs().clamp_min(1)).max().item()
        if err > tol:
            bad += 1
            print(f"MISMATCH kl_mixed {dtype} D={D} {pp}-{qp}: {err:.2e}")
    return bad


def main() -> int:
    assert torch.cuda.is_available() and gkl.CUDA_KERNELS, "needs a GPU and the CUDA kernels"
    g = torch.Generator().manual_seed(0)
    bad = 0
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
        for D in (1, 5, 8, 12, 20, 32, 64, 130):  # vector paths and tails; full: groups of 8 (D <= 8), 16 (D = 12), 32, blocks
            for param in gkl.DIAG_PARAMS:
                mu = torch.randn(33, D, generator=g)
                s = torch.rand(33, D, generator=g) + 0.5
                if param in ("logvar", "logstd"):
                    s = s.log()
                mq, sq = torch.randn(D, generator=g), s[0].clone()
                ins = [t.to("cuda", dtype).requires_grad_() for t in (mu, s, mq, sq)]
                out = gkl.kl_diag(*ins, param=param)
                out.sum().backward()
                ref = gkl.kl_diag(*(t.double() for t in (mu, s, mq, sq)), param=param)
                err = ((out.double().cpu() - ref).abs() / ref.abs().clamp_min(1)).max().item()
                if err > tol:
                    bad += 1
                    print(f"MISMATCH kl_diag {dtype} D={D} {param}: {err:.2e}")
                gkl.kl_diag(*(t.detach() for t in ins[:2]), param=param, check=False)
            for param in gkl.FULL_PARAMS:  # lane groups (D <= 32), blocks (shared memory; D = 130: global scratch)
                A = torch.randn(9, D, D, generator=g, dtype=torch.float64)
                S = A @ A.mT / D + torch.eye(D, dtype=torch.float64)
                m = torch.linalg.cholesky(S) if param == "scale_tril" else S
                mu = torch.randn(9, D, generator=g, dtype=torch.float64)
                for q in ("full", "shared", "prior"):
                    qs = {"full": (mu.flip(0), m.flip(0)), "shared": (mu[0], m[0]), "prior": ()}[q]
                    ins = [t.to("cuda", dtype).requires_grad_() for t in (mu, m, *qs)]
                    out = gkl.kl_full(*ins, param=param)
                    out.sum().backward()
                    ref = gkl.kl_full(mu, m, *qs, param=param)
                    err = ((out.double().cpu() - ref).abs() / ref.abs().clamp_min(1)).max().item()
                    if err > tol * 10:
                        bad += 1
                        print(f"MISMATCH kl_full {dtype} D={D} {param} q={q}: {err:.2e}")
            if D <= 64:
                bad += mixed_pairs(g, dtype, D, tol * 10)
    torch.cuda.synchronize()
    print("gpu_smoke:", "OK" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
