#!/usr/bin/env bash
# Peer for the benchmark: what a shell user writes — `xargs -P N curl` over the JSON lines of
# `hidream-batch expand --full`, one curl process per request.
#
#   HIDREAM_API_TOKEN=... submit_xargs.sh REQUESTS.jsonl RESULTS.tsv [CONCURRENCY] [MAX_ATTEMPTS]
#
# - jq splits the JSON lines into one body file per request (a body with a 6 MB image does not fit
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

# One body per file, named by line number; the list pairs each with its id and endpoint.
jq -c '.body' "$in" | split -l 1 -a 7 -d - "$work/b/"
jq -r '.request_id + " " + .endpoint' "$in" | awk '{ printf "%07d %s %s\n", NR - 1, $1, $2 }' > "$work/list"

: > "$out"
export W=$work OUT=$out RETRIES=$((attempts - 1))
# shellcheck disable=SC2016  # expanded by the inner shell
xargs -P "$conc" -L 1 sh -c '
  code=$(curl -sS --retry "$RETRIES" --max-time 60 -H @"$W/h" --data-binary @"$W/b/$0" \
           -o "$W/r/$0" -w "%{http_code}" "$2" 2>/dev/null) ; rc=$?
  body= ; { read -r body < "$W/r/$0"; } 2>/dev/null
  printf "%s\t%s\t%s\t%s\n" "$1" "$code" "$rc" "$body" >> "$OUT"
' < "$work/list"
