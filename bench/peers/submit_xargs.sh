#!/usr/bin/env bash
# Peer for the benchmark: what a shell user writes — `xargs -P N curl` over the JSON lines of
# `hidream-batch expand --full`, one curl process per request.
#
#   HIDREAM_API_TOKEN=... submit_xargs.sh REQUESTS.jsonl RESULTS.tsv [CONCURRENCY] [MAX_ATTEMPTS]
#
# - awk splits the JSON lines into one body file per request (a body with a 6 MB image does not fit
#   on a command line) and a list of `request_id endpoint` pairs;
# - `xargs -P CONCURRENCY` runs one `curl --retry (MAX_ATTEMPTS-1)` per request: curl retries its
#   "transient" errors (timeouts, HTTP 408, 429, 500, 502, 503, 504), waiting 1 s doubling, or the
#   `Retry-After` the server sent;
# - each request appends one line to RESULTS.tsv: request_id, HTTP status, curl exit code, and the
#   answer's body (which holds the task id). The answer goes to a file first: curl truncates a
#   file before a retry, whereas on stdout the bodies of failed attempts would precede the last one.
# There is no rate limit: xargs cannot pace images per minute. The token is passed to curl in a
# header file, not on the command line (where `ps` would show it).
set -euo pipefail
in=$1 out=$2 conc=${3:-4} attempts=${4:-5}
: "${HIDREAM_API_TOKEN:?HIDREAM_API_TOKEN is not set}"
work=$(mktemp -d "${TMPDIR:-/tmp}/xargs-peer.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/b" "$work/r"

# Headers, read by curl with -H @file (curl >= 7.55).
umask 077
printf 'Authorization: Bearer %s\nContent-Type: application/json\n' "$HIDREAM_API_TOKEN" > "$work/h"

# One body per file, named by its number; the list pairs the number with the request id and the
# endpoint. awk, not jq: jq 1.6 parses a line with a 6 MB image at ~20 MB/s (8 s for 20 such
# requests), awk cuts it at ~200 MB/s. It relies on `expand`'s sorted keys: `{"body":{...},
# "endpoint":"...", ..., "request_id":"...", ...}` (a JSON string cannot contain `},"endpoint":"`
# unescaped, so the first occurrence ends the body).
awk -v dir="$work/b" -v list="$work/list" '{
  i = index($0, "},\"endpoint\":\""); body = substr($0, 9, i - 8); rest = substr($0, i + 2)
  match(rest, /"endpoint":"[^"]*"/); ep = substr(rest, RSTART + 12, RLENGTH - 13)
  match(rest, /"request_id":"[^"]*"/); id = substr(rest, RSTART + 14, RLENGTH - 15)
  n = sprintf("%07d", NR - 1); print n, id, ep > list
  f = dir "/" n; print body > f; close(f)
}' "$in"

: > "$out"
export W=$work OUT=$out RETRIES=$((attempts - 1))
# shellcheck disable=SC2016  # expanded by the inner shell
xargs -P "$conc" -L 1 sh -c '
  code=$(curl -sS --retry "$RETRIES" --max-time 60 -H @"$W/h" --data-binary @"$W/b/$0" \
           -o "$W/r/$0" -w "%{http_code}" "$2" 2>/dev/null) ; rc=$?
  body= ; { read -r body < "$W/r/$0"; } 2>/dev/null
  printf "%s\t%s\t%s\t%s\n" "$1" "$code" "$rc" "$body" >> "$OUT"
' < "$work/list"
