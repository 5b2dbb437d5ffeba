"""Print a results JSON (from bench/bench_kl.py) as a markdown table:
median time per provider and, in parentheses, how many times faster gkl is.

    python bench/to_markdown.py bench/results/issue2_diag_cpu_float32_std.json
"""

import json
import sys

from names import COMPILED, EAGER, GKL, READ_FLOOR, TD, TD_VALIDATE

PROVIDERS = (TD, TD_VALIDATE, EAGER, COMPILED, GKL, READ_FLOOR)


def table(path: str) -> str:
    all_rows = json.load(open(path))
    return "\n\n".join(op_table([r for r in all_rows if r["op"] == op])
                        for op in sorted({r["op"] for r in all_rows}))


def duration(ms: float) -> str:
    """Milliseconds with two decimals; microseconds below 0.1 ms (small
    batches would otherwise all read 0.02 ms)."""
    return f"{ms * 1e3:.0f} µs" if ms < 0.1 else f"{ms:.2f} ms"


def op_table(rows) -> str:
    provs = [p for p in PROVIDERS if any(r["provider"] == p for r in rows)]
    out = [f"**{rows[0]['op']}**\n", "| B×D | mode | " + " | ".join(provs) + " |", "|---|---|" + "---|" * len(provs)]
    keys = []
    for r in rows:
        k = (r["B"], r["D"], r["mode"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rs = {r["provider"]: r for r in rows if (r["B"], r["D"], r["mode"]) == k}
        cells = ["–" if p not in rs else
                 duration(rs[p]["median_ms"]) + ("" if p == GKL else f" ({rs[p]['gkl_speedup']:.1f}×)")
                 for p in provs]
        out.append(f"| {k[0]}×{k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    r0 = rows[0]
    out.append(f"\n{r0['device']}, torch {r0['torch']}, {r0['dtype']}, param={r0['param']}, "
               f"git {r0['git_sha']}; copy bandwidth {r0['copy_gbps']:.0f} GB/s")
    if READ_FLOOR in provs:
        out.append(f"{READ_FLOOR}: not a KL, torch summing each input once (forward rows); "
                   "its (×) below 1 means gkl takes longer than that read.")
    return "\n".join(out)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(table(p))
        print()
