#!/usr/bin/env python3
"""Peer for the benchmark: a Python asyncio + aiohttp batch submitter in the design of OpenAI's
cookbook `api_request_parallel_processor.py`, written from scratch for HiDream's image API.

The design, as in the cookbook:
- requests are read lazily, one JSON line at a time, from `hidream-batch expand` output
  (`{"request_id", "endpoint", "images", "body", ...}`);
- a token bucket of images per minute (capacity = one minute's allowance, refilled continuously,
  starting full), charged the request's image count on every attempt, retries included;
- bounded concurrency (an asyncio semaphore: the cookbook bounds only by rate; users add this);
- a retry queue: a failed attempt goes back to the queue, due after a backoff (doubling from
  `--backoff` with full jitter, capped at `--backoff-max`, `Retry-After` as a floor), and after a
  429 the whole dispatcher pauses until `Retry-After` has passed (the cookbook's "cool down");
- like the cookbook, any exception (timeout, connection closed before the answer) is retried: the
  script cannot tell "not sent" from "sent, answer lost";
- one result line per request, appended and flushed when it completes (CSV, or JSONL with
  `--jsonl`).

Usage: HIDREAM_API_TOKEN=... submit_asyncio.py REQUESTS.jsonl -o results.csv \
           --concurrency 32 --rate 1200 --max-attempts 5 --backoff 1s
"""

import argparse
import asyncio
import csv
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp

RETRYABLE = {408, 429, 500, 502, 503, 504}


def duration(text: str) -> float:
    """`1s`, `250ms`, `2m` or a bare number of seconds."""
    t = text.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * scale
    return float(t)


@dataclass
class Request:
    request_id: str
    endpoint: str
    images: int
    body: dict
    attempts: int = 0
    not_before: float = 0.0
    started: float = 0.0
    last_status: str = ""


@dataclass
class Status:
    in_progress: int = 0
    submitted: int = 0
    rejected: int = 0
    failed: int = 0
    attempts: int = 0
    http_429: int = 0
    errors: int = 0
    pause_until: float = 0.0  # the cookbook's cool-down after a rate-limit error


@dataclass
class TokenBucket:
    """Images per minute: capacity = one minute's allowance, starting full (as in the cookbook)."""

    per_minute: float
    available: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self):
        self.available = self.per_minute
        self.updated = time.monotonic()

    async def take(self, n: int):
        if self.per_minute <= 0:
            return
        n = min(n, self.per_minute)
        while True:
            now = time.monotonic()
            self.available = min(
                self.per_minute,
                self.available + (now - self.updated) * self.per_minute / 60.0,
            )
            self.updated = now
            if self.available >= n:
                self.available -= n
                return
            await asyncio.sleep((n - self.available) * 60.0 / self.per_minute)


def retry_after(headers) -> float:
    value = headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return 0.0


class Writer:
    FIELDS = ["request_id", "status", "task_id", "attempts", "http_status", "code", "message",
              "elapsed_ms"]

    def __init__(self, path: str, jsonl: bool):
        self.f = open(path, "w", newline="", encoding="utf-8")
        self.jsonl = jsonl
        if not jsonl:
            self.csv = csv.writer(self.f)
            self.csv.writerow(self.FIELDS)

    def write(self, row: dict):
        if self.jsonl:
            self.f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self.csv.writerow([row.get(k, "") for k in self.FIELDS])
        self.f.flush()

    def close(self):
        self.f.close()


async def attempt(session, req: Request, args, token, st: Status, retry_q: asyncio.Queue,
                  writer: Writer, sem: asyncio.Semaphore):
    """One attempt; the semaphore slot was taken by the dispatcher and is released here."""
    req.attempts += 1
    st.attempts += 1
    if req.attempts == 1:
        req.started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    retry = False
    wait = 0.0
    row = None
    try:
        async with session.post(req.endpoint, data=json.dumps(req.body), headers=headers) as resp:
            text = await resp.text()
            status = resp.status
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {}
            code = answer.get("code") if isinstance(answer, dict) else None
            message = answer.get("message", "") if isinstance(answer, dict) else ""
            if status == 200 and code == 0:
                result = answer.get("result") or {}
                row = dict(status="submitted", task_id=result.get("task_id", ""),
                           http_status=status, code=code, message="")
                st.submitted += 1
            elif status in RETRYABLE:
                if status == 429:
                    st.http_429 += 1
                wait = retry_after(resp.headers)
                if status == 429 and wait:
                    st.pause_until = max(st.pause_until, time.monotonic() + wait)
                retry = True
                row = dict(status="failed", http_status=status, code=code, message=message)
            else:
                row = dict(status="rejected", http_status=status, code=code, message=message)
                st.rejected += 1
    except Exception as e:  # noqa: BLE001 - the cookbook retries every exception
        st.errors += 1
        retry = True
        row = dict(status="failed", http_status="", code="", message=f"{type(e).__name__}: {e}")
    finally:
        sem.release()
        st.in_progress -= 1

    if retry:
        if req.attempts < args.max_attempts:
            cap = min(args.backoff_max, args.backoff * 2 ** (req.attempts - 1))
            req.not_before = time.monotonic() + max(wait, random.uniform(0, cap))
            retry_q.put_nowait(req)
            return
        st.failed += 1
    row.update(request_id=req.request_id, attempts=req.attempts,
               elapsed_ms=int((time.monotonic() - req.started) * 1000))
    writer.write(row)


def read_requests(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                yield Request(d["request_id"], d["endpoint"], int(d.get("images", 1)), d["body"])


async def main_async(args):
    token = os.environ.get("HIDREAM_API_TOKEN", "")
    if not token:
        print("HIDREAM_API_TOKEN is not set", file=sys.stderr)
        return 2
    st = Status()
    retry_q: asyncio.Queue = asyncio.Queue()
    sem = asyncio.Semaphore(args.concurrency)
    buckets: dict[str, TokenBucket] = {}  # one per endpoint, as the API limits per endpoint
    writer = Writer(args.out, args.jsonl)
    source = read_requests(args.requests)
    exhausted = False
    tasks = set()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while True:
            # Next request: a due retry first, then the file.
            req = None
            if not retry_q.empty():
                # The queue is FIFO; retries become due in roughly that order.
                head = retry_q._queue[0]  # noqa: SLF001 - peek
                if head.not_before <= time.monotonic() or exhausted:
                    req = retry_q.get_nowait()
            if req is None and not exhausted:
                req = next(source, None)
                if req is None:
                    exhausted = True
            if req is None:
                if exhausted and retry_q.empty() and st.in_progress == 0:
                    break
                await asyncio.sleep(0.01)
                continue
            delay = req.not_before - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pause = st.pause_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            await sem.acquire()
            bucket = buckets.get(req.endpoint)
            if bucket is None:
                bucket = buckets[req.endpoint] = TokenBucket(args.rate)
            await bucket.take(req.images)
            st.in_progress += 1
            t = asyncio.create_task(attempt(session, req, args, token, st, retry_q, writer, sem))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    writer.close()
    elapsed = time.monotonic() - t0
    print(f"done: {st.submitted} submitted, {st.rejected} rejected, {st.failed} failed; "
          f"{st.attempts} attempts, {st.http_429} HTTP 429, {st.errors} exceptions; "
          f"{elapsed:.1f}s", file=sys.stderr)
    return 0 if st.failed == 0 and st.rejected == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("requests", help="JSON lines from `hidream-batch expand`")
    p.add_argument("-o", "--out", default="results.csv")
    p.add_argument("--jsonl", action="store_true", help="write JSON lines instead of CSV")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rate", type=float, default=100, help="images per minute; 0 = no limit")
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--backoff", type=duration, default=1.0)
    p.add_argument("--backoff-max", type=duration, default=60.0)
    p.add_argument("--timeout", type=duration, default=60.0)
    args = p.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
