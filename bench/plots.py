"""PNG plots of benchmark rows: achieved GB/s vs problem size for the
diagonal KL (with the measured copy bandwidth drawn as the ceiling), and the
speed-up of gkl over torch.distributions vs D for the full covariance, with
torch.distributions' time over the read floor's (a ceiling for the forward)."""

import os
from typing import List

from names import READ_FLOOR, TD


def plot_results(rows: List[dict], out_dir: str, tag: str) -> List[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots: matplotlib is not installed; skipping (pip install matplotlib)")
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    diag = [r for r in rows if r["op"] == "kl_diag"]
    if diag:
        modes = sorted({r["mode"] for r in diag})
        fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            rs = [r for r in diag if r["mode"] == mode]
            for prov in sorted({r["provider"] for r in rs}):
                pts = sorted((r["B"] * r["D"], r["gbps"]) for r in rs if r["provider"] == prov)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=prov)
            ax.axhline(rs[0]["copy_gbps"], color="k", linestyle="--", label="copy bandwidth")
            ax.set_xscale("log")
            ax.set_xlabel("elements B*D")
            ax.set_ylabel("GB/s (bytes that must move)")
            ax.set_title(f"kl_diag {mode}, {rs[0]['dtype']}, {rs[0]['device']}")
            ax.legend(fontsize=7)
        path = os.path.join(out_dir, f"{tag}_diag_gbps.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    full = [r for r in rows if r["op"] == "kl_full"]
    if full:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for mode in sorted({r["mode"] for r in full}):
            pts = sorted((r["D"], r["gkl_speedup"]) for r in full
                         if r["mode"] == mode and r["provider"] == TD)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{mode} vs td")
        # td's time over the read floor's: the forward speed-up of anything
        # that only reads its inputs, at torch's rate.
        med = {(r["D"], r["provider"]): r["median_ms"] for r in full if r["mode"] == "fwd"}
        pts = sorted((D, med[(D, TD)] / m) for (D, p), m in med.items()
                     if p == READ_FLOOR and (D, TD) in med)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="gray", linestyle=":",
                    label="td / read floor (fwd)")
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("D")
        ax.set_ylabel("speed-up of gkl (x)")
        ax.set_title(f"kl_full scale_tril, {full[0]['dtype']}, {full[0]['device']}")
        ax.legend()
        path = os.path.join(out_dir, f"{tag}_full_speedup.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
