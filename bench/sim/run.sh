#!/usr/bin/env bash
# Benchmark of the simulator's submit path (issue 3): with no latency and no faults it must serve
# ≥ 20,000 submit requests/s with 64 connections, and stay under 100 MB of memory after 1,000,000
# requests. Builds the release binary, starts `hidream-batch simulate`, drives it with wrk and
# submit.lua (a valid txt2img body, a unique request_id per request), then reads /sim/stats and the
# simulator's peak RSS (VmHWM).
#
# Usage: bench/sim/run.sh            (defaults: 60 s, 64 connections, 2 wrk threads, port 18787)
#        DURATION=10s CONNECTIONS=64 THREADS=2 PORT=18787 bench/sim/run.sh
# Needs: wrk (apt-get install wrk), curl, jq.
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18787}
TARGET=${CARGO_TARGET_DIR:-target}

for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || { echo "run.sh: \`$tool\` is not installed" >&2; exit 2; }
done

cargo build --release --quiet
BIN="$TARGET/release/hidream-batch"

LOG=$(mktemp)
"$BIN" -q simulate --latency 0ms --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
SIM=$!
trap 'kill -TERM "$SIM" 2>/dev/null || true; rm -f "$LOG"' EXIT

URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
  grep -q "listening on" "$LOG" && break
  kill -0 "$SIM" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
grep -q "listening on" "$LOG" || { echo "run.sh: the simulator did not start" >&2; exit 1; }

echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION against $URL (simulator pid $SIM)"
WRK_OUT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/sim/submit.lua "$URL")
echo "$WRK_OUT"

STATS=$(curl -fsS "$URL/sim/stats")
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SIM/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SIM/status")
RPS=$(echo "$WRK_OUT" | awk '/^Requests\/sec:/ {print $2}')

echo "== result"
echo "requests/s (wrk):        $RPS"
echo "submitted (sim):         $(jq .submitted <<<"$STATS")"
echo "accepted (sim):          $(jq .accepted <<<"$STATS")"
echo "rejected (sim):          $(jq .rejected <<<"$STATS") $(jq -c .rejected_by_reason <<<"$STATS")"
echo "duplicates (sim):        $(jq .duplicates <<<"$STATS")"
echo "max in flight (sim):     $(jq .max_in_flight <<<"$STATS")"
echo "peak RSS (VmHWM):        $((HWM_KB / 1024)) MiB"
echo "RSS now (VmRSS):         $((RSS_KB / 1024)) MiB"

kill -TERM "$SIM"
wait "$SIM" && echo "simulator stopped cleanly (exit 0)"
trap 'rm -f "$LOG"' EXIT
