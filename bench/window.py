#!/usr/bin/env python3
"""The account's real limits, measured (issue 15): slot utilisation of `run --max-pending` and
collection of 10,000 tasks, against the built-in simulator on loopback.

1. Slot utilisation: `run --max-pending P` against `simulate --max-pending P --task-time T`, N
   requests. `/sim/stats` is sampled every 20 ms: the average number of unfinished tasks between
   the first task and the last one's end, and the time from the run's start to that end, beside
   the ideal N / P × T. Targets: average ≥ 0.9 P, time ≤ 1.1 × ideal, no refusal.
2. Collection: 10,000 requests of 4 images are submitted (`--rate 0`, not measured), then
   `collect --wait` with its default flags is timed, beside the asyncio peer
   (bench/peers/collect_asyncio.py: every task polled every 5 s, as HiDream's own client does).

Usage: python3 bench/window.py --bin target/release/hidream-batch [--quick] [--only slots|collect]
Writes bench/results/window.md.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, HIDREAM_API_TOKEN="bench-token")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulator(binary: str, *flags: str):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "simulate", "--listen", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            stats(base)
            return proc, base
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the simulator did not start")


def stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/sim/stats", timeout=5) as r:
        return json.load(r)


def manifest(dir: str, n: int, count: int) -> str:
    path = os.path.join(dir, "m.yaml")
    with open(path, "w") as f:
        f.write("jobs:\n")
        for i in range(n):
            f.write(f"  - {{id: j{i}, kind: txt2img, prompt: \"p {i}\", img_count: {count}}}\n")
    return path


def slots(binary: str, p: int, t: float, n: int) -> dict:
    proc, base = simulator(
        binary, "--max-pending", str(p), "--task-time", f"{int(t * 1000)}ms", "--latency", "20ms"
    )
    try:
        with tempfile.TemporaryDirectory() as dir:
            m = manifest(dir, n, 1)
            samples = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    samples.append((time.monotonic(), stats(base)["pending"]))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            start = time.monotonic()
            sampler.start()
            subprocess.run(
                [binary, "run", m, "--base-url", base, "--max-pending", str(p), "--rate", "0",
                 "-o", os.path.join(dir, "r.csv"), "-q"],
                env=ENV, check=False, stdout=subprocess.DEVNULL,
            )
            while stats(base)["pending"] > 0:
                time.sleep(0.02)
            done.set()
            sampler.join()
            busy = [(at, k) for at, k in samples if k > 0]
            first, last = busy[0][0], busy[-1][0]
            inside = [k for at, k in samples if first <= at <= last]
            s = stats(base)
            ideal = n / p * t
            return {
                "P": p, "T": t, "N": n,
                "average": sum(inside) / len(inside),
                "seconds": last - start,
                "ideal": ideal,
                "refused": s["pending_limited"],
                "max_seen": s["max_pending_seen"],
            }
    finally:
        proc.kill()


def collect(binary: str, n: int) -> dict:
    proc, base = simulator(binary, "--latency", "5ms", "--task-time", "2s")
    try:
        with tempfile.TemporaryDirectory() as dir:
            m = manifest(dir, n, 4)
            results = os.path.join(dir, "r.csv")
            subprocess.run(
                [binary, "run", m, "--base-url", base, "--rate", "0", "--concurrency", "16",
                 "-o", results, "-q"],
                env=ENV, check=True, stdout=subprocess.DEVNULL,
            )
            time.sleep(2.5)  # every task done (task time 2 s): the measure is collection alone
            before = stats(base)["calls"]
            start = time.monotonic()
            subprocess.run(
                [binary, "collect", "--base-url", base, "--results", results,
                 "-o", os.path.join(dir, "imgs"), "--wait", "-q"],
                env=ENV, check=True, stdout=subprocess.DEVNULL,
            )
            ours = time.monotonic() - start
            after = stats(base)["calls"]
            queries = after["results_txt2img"] - before["results_txt2img"]
            start = time.monotonic()
            subprocess.run(
                [binary, "collect", "--base-url", base, "--results", results,
                 "-o", os.path.join(dir, "imgs-unpaced"), "--wait", "--poll-rate", "0", "-q"],
                env=ENV, check=True, stdout=subprocess.DEVNULL,
            )
            unpaced = time.monotonic() - start
            peer = subprocess.run(
                [sys.executable, os.path.join(HERE, "peers", "collect_asyncio.py"), results,
                 "--base-url", base, "-o", os.path.join(dir, "peer")],
                env=ENV, check=True, capture_output=True, text=True,
            )
            return {"tasks": n, "ours": ours, "ours_queries": queries, "unpaced": unpaced,
                    "peer": json.loads(peer.stdout.strip().splitlines()[-1])}
    finally:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["slots", "collect"])
    args = ap.parse_args()
    lines = ["# The account's limits (bench/window.py)", ""]
    if args.only in (None, "slots"):
        cases = [(3, 1.0, 30)] if args.quick else [(5, 2.0, 100), (10, 1.0, 200), (1, 1.0, 20)]
        lines += [
            "## Slot utilisation: `run --max-pending P` against `simulate --max-pending P --task-time T`",
            "",
            "| P | T | N | average unfinished | ≥ 0.9 P | time | ideal N/P×T | ≤ 1.1 × ideal | refused | most seen |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p, t, n in cases:
            r = slots(args.bin, p, t, n)
            print(json.dumps(r), file=sys.stderr)
            lines.append(
                f"| {p} | {t:g} s | {n} | {r['average']:.2f} | {'yes' if r['average'] >= 0.9 * p else 'NO'} "
                f"| {r['seconds']:.1f} s | {r['ideal']:.1f} s | {'yes' if r['seconds'] <= 1.1 * r['ideal'] else 'NO'} "
                f"| {r['refused']} | {r['max_seen']} |"
            )
        lines.append("")
    if args.only in (None, "collect"):
        n = 1000 if args.quick else 10_000
        r = collect(args.bin, n)
        print(json.dumps(r), file=sys.stderr)
        lines += [
            f"## Collection: {n:,} tasks × 4 images, every task already done",
            "",
            "| collector | time | task queries | images |",
            "|---|---|---|---|",
            f"| `hidream-batch collect --wait` (defaults: --poll-rate 3000, --concurrency 4) | {r['ours']:.1f} s | {r['ours_queries']} | {4 * n} |",
            f"| `hidream-batch collect --wait --poll-rate 0` (no pace: --concurrency 4 bounds it) | {r['unpaced']:.1f} s | {n} | {4 * n} |",
            f"| asyncio peer (poll every 5 s, 4 calls in flight, no pacing) | {r['peer']['seconds']:.1f} s | {r['peer']['queries']} | {r['peer']['images']} |",
            "",
        ]
    out = os.path.join(HERE, "results", "window.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


main()
