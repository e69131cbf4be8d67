#!/usr/bin/env bash
# Reliability figure of issue 5: a 10,000-request run against a simulator injecting 10% HTTP 500,
# 5% HTTP 429 and 1% dropped connections, killed with SIGKILL three times at random moments and
# resumed each time. Checks: every request ends `submitted` or `unknown`; the simulator saw no
# duplicate; then `--retry-unknown` creates at most as many duplicates as there were unknowns.
# Usage: bash bench/reliability.sh [REQUESTS]      (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
cargo build --release --quiet
bin=$PWD/target/release/hidream-batch
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'kill $sim 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$work/m.yaml" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
side = 100
rows = n // side
open(path, "w").write(f"""name: reliability
jobs:
  - id: sweep
    kind: txt2img
    prompt: "reliability {{a}} {{b}}"
    matrix:
      a: [{", ".join(str(i) for i in range(rows))}]
      b: [{", ".join(str(i) for i in range(side))}]
""")
PY

"$bin" simulate --listen 127.0.0.1:$port --latency 2ms..20ms --error-rate 0.10 --throttle-rate 0.05 \
  --drop-before 0.005 --drop-after 0.005 --seed 42 > "$work/sim.log" 2>&1 &
sim=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/sim/stats" > /dev/null && break; sleep 0.1; done

args=(run "$work/m.yaml" --base-url "http://127.0.0.1:$port" -o "$work/r.csv"
  --concurrency 8 --rate 0 --backoff 20ms --backoff-max 500ms --max-attempts 5 -q)
run() { HIDREAM_API_TOKEN=t "$bin" "${args[@]}" "$@"; }

for k in 1 2 3; do
  HIDREAM_API_TOKEN=t "$bin" "${args[@]}" > "$work/run$k.log" 2>&1 &
  pid=$!   # the binary itself, not a subshell
  sleep "$(python3 -c 'import random; print(round(random.uniform(1.0, 4.0), 2))')"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  echo "kill $k: $(($(wc -l < "$work/r.csv") - 1)) rows so far"
done
# Resume until nothing transient is left (a request can fail 5 attempts in a row).
for k in 1 2 3; do
  code=0; run > "$work/final$k.log" 2>&1 || code=$?; echo "resume $k: exit $code, $(tail -n 2 "$work/final$k.log" | head -c 300)"
  failed=$(python3 -c "import csv,sys; print(sum(r['status']=='failed' for r in csv.DictReader(open('$work/r.csv'))))")
  [ "$failed" = 0 ] && break
done
stats=$(curl -fs "http://127.0.0.1:$port/sim/stats")
python3 - "$work/r.csv" "$stats" "$n" <<'PY'
import csv, json, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
stats = json.loads(sys.argv[2]); n = int(sys.argv[3])
ids = [r["request_id"] for r in rows]
c = collections.Counter(r["status"] for r in rows)
print(f"requests: {n}; rows: {len(rows)}; distinct ids: {len(set(ids))}; statuses: {dict(c)}")
print(f"simulator: submit calls {stats['calls']['submit_txt2img']}, accepted {stats['accepted']}, "
      f"http 500 {stats['http_500']}, http 429 {stats['http_429']}, dropped {stats['dropped_before']}+{stats['dropped_after']}, "
      f"duplicates {stats['duplicates']}")
ok = len(rows) == n == len(set(ids)) and set(c) <= {"submitted", "unknown"} and stats["duplicates"] == 0
print("PASS" if ok else "FAIL")
open(sys.argv[1] + ".unknown", "w").write(str(c.get("unknown", 0)))
PY
unknown=$(cat "$work/r.csv.unknown")
run --retry-unknown > "$work/retry.log" 2>&1 || true
dups=$(curl -fs "http://127.0.0.1:$port/sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duplicates"])')
echo "with --retry-unknown: $unknown unknown resent, duplicates at the simulator: $dups (must be <= $unknown)"
[ "$dups" -le "$unknown" ] && echo PASS || echo FAIL
