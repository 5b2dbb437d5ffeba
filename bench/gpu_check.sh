#!/usr/bin/env bash
# bench/gpu_check.sh — everything a GPU machine should verify, in one call.
#
#   OUT=<dir> bash bench/gpu_check.sh [--dry-run] [--full]
#
# On a machine with an NVIDIA GPU, CUDA's nvcc, a CUDA build of torch, ninja
# and pytest already installed, and no network:
#   1. builds the extension in place for the GPU present
#      (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability(),
#      MAX_JOBS = cores);
#   2. runs the whole test suite (the CUDA cases must run, not skip);
#   3. runs compute-sanitizer --tool memcheck over bench/gpu_smoke.py (every
#      op, small), when compute-sanitizer is present;
#   4. runs the benchmark on CUDA (--quick unless --full), with CSV, JSON and
#      PNG plots;
# writing logs and results under $OUT, and prints a summary table last.
# It only reads the GPU's state (nvidia-smi --query); it never changes
# clocks, power, compute mode or MIG, and never resets the GPU.
# --dry-run prints the commands it would run (to $OUT/commands.txt) and runs
# none of them: the CPU-safe part that tests/test_gpu_check.py exercises.
set -euo pipefail

DRY=0
QUICK="--quick"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --full) QUICK="" ;;
    *) echo "gpu_check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
: "${OUT:?set OUT=<dir> for logs and results}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p "$OUT"
: > "$OUT/commands.txt"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
STATUS_FILE="$OUT/status.txt"
: > "$STATUS_FILE"
t_start=$(date +%s)

# run NAME TIMEOUT_S CMD...: log to $OUT/NAME.log, record pass/fail.
run() {
  local name="$1" limit="$2"
  shift 2
  printf '%s\n' "$*" >> "$OUT/commands.txt"
  echo "=== [$(date +%T)] $name: $*"
  if [ "$DRY" = 1 ]; then
    echo "$name dry-run" >> "$STATUS_FILE"
    return 0
  fi
  local t0 rc=0
  t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" >> "$STATUS_FILE"
  tail -n 5 "$OUT/$name.log"
  if [ "$rc" != 0 ]; then
    echo "gpu_check: $name FAILED (rc=$rc); see $OUT/$name.log" >&2
    return "$rc"
  fi
}

if [ "$DRY" = 1 ]; then
  ARCH="9.0"
else
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv \
    > "$OUT/gpu.txt" 2>&1 || true
  ARCH="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
fi
JOBS="$(nproc)"
FAILED=0

run build 300 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" \
  "$PY" setup.py build_ext --inplace || FAILED=1

if [ "$FAILED" = 0 ]; then
  run tests 240 "$PY" -m pytest tests -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" || FAILED=1
  if [ "$DRY" = 1 ] || command -v compute-sanitizer > /dev/null 2>&1; then
    run sanitizer 180 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
      "$PY" bench/gpu_smoke.py || FAILED=1
  else
    echo "sanitizer absent" >> "$STATUS_FILE"
  fi
  # shellcheck disable=SC2086  # $QUICK is one optional flag
  run bench 300 "$PY" bench/bench_kl.py --device cuda --kind all --mode all $QUICK \
    --out "$OUT" --tag gpu --plot || FAILED=1
fi

if [ "$DRY" = 0 ]; then
  "$PY" - "$OUT" <<'PYEOF' || true
import json, os, re, sys
out = sys.argv[1]
print("\n================ gpu_check summary ================")
print(open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "")
print(open(os.path.join(out, "status.txt")).read().strip())
log = os.path.join(out, "tests.log")
if os.path.exists(log):
    tail = open(log).read().strip().splitlines()[-1:]
    print("tests:", tail[0] if tail else "?")
    cuda_skips = sum(1 for l in open(log) if "SKIPPED" in l and "CUDA" in l)
    print("CUDA tests skipped:", cuda_skips, "(must be 0)")
san = os.path.join(out, "sanitizer.log")
if os.path.exists(san):
    txt = open(san).read()
    m = re.search(r"ERROR SUMMARY: (\d+) error", txt)
    print("compute-sanitizer memcheck:", f"{m.group(1)} errors" if m else "no summary")
res = os.path.join(out, "gpu.json")
if os.path.exists(res):
    rows = json.load(open(res))
    print(f"{'op':8} {'mode':8} {'B':>8} {'D':>5} {'gkl ms':>8} {'%copyBW':>8} {'x td':>7} {'x compiled':>10}")
    keys = []
    for r in rows:
        k = (r["op"], r["mode"], r["B"], r["D"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rs = {r["provider"]: r for r in rows if (r["op"], r["mode"], r["B"], r["D"]) == k}
        g = rs["gkl"]
        comp = rs.get("compiled closed form")
        print(f"{k[0]:8} {k[1]:8} {k[2]:>8} {k[3]:>5} {g['median_ms']:>8.3f} {g['pct_of_copy_bw']:>7.0f}% "
              f"{rs['torch.distributions']['gkl_speedup']:>7.1f} "
              f"{(comp['gkl_speedup'] if comp else float('nan')):>10.2f}")
PYEOF
fi
echo "gpu_check: total $(( $(date +%s) - t_start )) s; results in $OUT"
if [ "$FAILED" != 0 ]; then
  echo "gpu_check: FAILED" >&2
  exit 1
fi
