#!/usr/bin/env bash
# hidream-batch against the tools its users would otherwise use (issue 7; the figures of issue 4):
# a Python asyncio + aiohttp submitter (bench/peers/submit_asyncio.py) and `xargs -P N curl`
# (bench/peers/submit_xargs.sh), scenario by scenario, alternating, against the built-in simulator.
#
#   bash bench/run.sh            # full run: 3 repetitions (~20 min on 2 cores)
#   bash bench/run.sh --quick    # smoke run: 1 repetition, smaller sizes (~3 min)
#   bash bench/run.sh --reps 5 --only latency,overhead
#   bash bench/run.sh --chart-only   # rebuild results.md and chart.png from results.csv
#
# Writes bench/results/results.md, results.csv, chart.png (and machine.json).
# Set CARGO_TARGET_DIR to build elsewhere than target/.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
if [[ " $* " != *" --chart-only "* ]]; then
  echo "building (the dist profile: the binary we ship)..." >&2
  cargo build --profile dist --quiet
fi

# Python peer and chart dependencies.
if ! python3 -c 'import aiohttp, matplotlib' 2>/dev/null; then
  echo "installing aiohttp and matplotlib (pip)..." >&2
  python3 -m pip install --quiet aiohttp matplotlib
fi
# The physical limit (overhead-bound scenario: wrk) and the xargs peer's tools.
if ! command -v wrk > /dev/null; then
  echo "installing wrk (apt-get)..." >&2
  { apt-get update -qq && apt-get install -y -qq wrk; } > /dev/null 2>&1 ||
    echo "warning: wrk could not be installed; the overhead-bound scenario runs without it" >&2
fi
# oha (Rust, tokio + hyper: the stack hidream-batch uses) is the second physical limit.
export PATH="$target/bench-tools/bin:$PATH"
if [[ " $* " != *" --chart-only "* ]] && ! command -v oha > /dev/null; then
  echo "installing oha (cargo install; takes minutes the first time)..." >&2
  cargo install oha --locked --quiet --root "$target/bench-tools" ||
    echo "warning: oha could not be installed; the overhead-bound scenario runs without it" >&2
fi
for tool in curl awk xargs /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "error: $tool is required" >&2; exit 2; }
done

exec python3 bench/harness.py --bin "$target/dist/hidream-batch" "$@"
