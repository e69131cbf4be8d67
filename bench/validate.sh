#!/usr/bin/env bash
# Benchmark of `validate` (issue 2): a 1,000,000-request matrix manifest and a 100,000-row CSV
# manifest. Prints wall time and peak RSS of each, median of 3 runs, and the machine.
# Usage: bash bench/validate.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/hidream-batch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 100 × 100 × 100 = 1,000,000 text-to-image requests.
python3 - "$work" <<'PY'
import sys, os
d = sys.argv[1]
vals = lambda p: "[" + ", ".join(f"{p}{i}" for i in range(100)) + "]"
open(os.path.join(d, "million.yaml"), "w").write(f"""name: million
jobs:
  - id: sweep
    kind: txt2img
    prompt: "{{a}} photo of a {{b}} in {{c}} light"
    resolution: "1024*1024"
    img_count: 2
    matrix:
      a: {vals('a')}
      b: {vals('b')}
      c: {vals('c')}
""")
with open(os.path.join(d, "rows.csv"), "w", encoding="utf-8") as f:
    f.write("id,kind,prompt,img_count,resolution,meta.sku\n")
    for i in range(100_000):
        f.write(f"sku-{i},txt2img,\"product {i}, studio shot, 白色背景\",1,1024*1024,SKU{i:06d}\n")
PY

measure() { # name, args...
  local name=$1; shift
  local times=() rss=()
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$work/t" "$bin" validate --max-requests 2000000 "$@" > /dev/null
    read -r t m < "$work/t"; times+=("$t"); rss+=("$m")
  done
  local mt mr
  mt=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
  mr=$(printf '%s\n' "${rss[@]}" | sort -n | sed -n 2p)
  printf '| %s | %s s | %s MB |\n' "$name" "$mt" "$((mr / 1024))"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m)"
echo "| manifest | wall (median of 3) | peak RSS |"
echo "|---|---|---|"
measure "1,000,000-request matrix (YAML)" "$work/million.yaml"
measure "100,000-row CSV manifest" "$work/rows.csv"
