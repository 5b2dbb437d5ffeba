"""Compare two runs of the benchmark (results JSON from bench/bench_kl.py):
gkl's speed-up against torch.distributions in each, and their ratio.

    python bench/compare.py bench/results/redesign_before_full.json bench/results/redesign_after_full.json

A ratio below 1 means the second run's gkl gained less on torch.distributions
than the first's (each speed-up is measured within its own run, so the
machine's speed that day cancels).
"""

import json
import sys

from names import TD


def speedups(path):
    out = {}
    for r in json.load(open(path)):
        if r["provider"] == TD:
            out[(r["op"], r["B"], r["D"], r["mode"])] = r["gkl_speedup"]
    return out


def main(before, after):
    a, b = speedups(before), speedups(after)
    print("| op | B×D | mode | before (× td) | after (× td) | after / before |")
    print("|---|---|---|---|---|---|")
    worst = None
    for key in a:
        if key not in b:
            continue
        op, B, D, mode = key
        ratio = b[key] / a[key]
        worst = ratio if worst is None else min(worst, ratio)
        print(f"| {op} | {B}×{D} | {mode} | {a[key]:.1f}× | {b[key]:.1f}× | {ratio:.2f} |")
    if worst is not None:
        print(f"\nlowest after / before: {worst:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
