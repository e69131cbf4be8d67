#!/usr/bin/env python3
"""Benchmark driver behind `bench/run.sh`: hidream-batch against its peers (issue 7, issue 4).

For every scenario and repetition it runs hidream-batch and each peer in turn (hb, py, xargs, hb,
py, xargs, ...), each against a freshly started simulator (so the simulator's counters are per
run), under `/usr/bin/time -f '%e %U %S %M'`, while sampling the RSS of the whole process tree
(xargs starts a curl per request: its largest process is not its footprint). It writes
bench/results/results.csv (one row per run), bench/results/results.md (medians, ratios, targets,
the machine) and bench/results/chart.png.

Usage: python3 bench/harness.py --bin target/release/hidream-batch [--quick] [--reps N]
       [--only latency,overhead,...] [--chart-only]
"""

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PEERS = os.path.join(HERE, "peers")
TOKEN = "bench-token"
TOOLS = {"hb": "hidream-batch", "py": "asyncio peer", "xargs": "xargs+curl peer", "wrk": "wrk",
         "oha": "oha"}
# Load generators: the physical limit of the overhead-bound scenario, not peers.
LIMITS = ("wrk", "oha")

FIELDS = [
    "scenario", "tool", "rep", "requests", "images", "concurrency", "rate", "wall_s", "user_s",
    "sys_s", "cpu_s", "peak_rss_mb", "tree_rss_mb", "completed", "req_per_s", "ideal_s",
    "attempts", "accepted", "duplicates", "http_429", "http_500", "dropped_after",
    "max_in_flight", "max_images_per_minute", "exit_code", "outcomes", "note",
]


# ---------------------------------------------------------------------------------------------
# Scenarios


def scenarios(quick: bool):
    """Each scenario: the simulator's flags, the clients' settings, the manifest, the tools."""
    q = quick
    return [
        dict(name="latency", title="Latency-bound: 100 ms latency, concurrency 32, no rate limit",
             sim=["--latency", "100ms"], conc=32, rate=0,
             manifest=("txt2img", 500 if q else 2000, "one"), tools=["hb", "py", "xargs"]),
        dict(name="rate-mixed", title="Rate-bound: --rate 1200, simulator limit 1200/min, "
             "mixed image counts (1-4)",
             sim=["--latency", "50ms", "--rate-limit", "1200"], conc=32, rate=1200,
             manifest=("txt2img", 100 if q else 400, "mixed"), tools=["hb", "py", "xargs"]),
        dict(name="rate-one", title="Rate-bound: --rate 1200, simulator limit 1200/min, "
             "one-image requests",
             sim=["--latency", "50ms", "--rate-limit", "1200"], conc=32, rate=1200,
             manifest=("txt2img", 100 if q else 400, "one"), tools=["hb", "py", "xargs"]),
        dict(name="rate-gateway", title="Rate-bound against a gateway-style limit: --rate 1200, "
             "simulator limit 1200/min as a steady flow with bursts of up to 40 images "
             "(--rate-burst 40, like nginx limit_req), one-image requests",
             sim=["--latency", "50ms", "--rate-limit", "1200", "--rate-burst", "40"], conc=32,
             rate=1200, manifest=("txt2img", 100 if q else 400, "one"),
             tools=["hb", "py", "xargs"]),
        dict(name="rate-sustained", title="Rate-bound beyond one minute's allowance: --rate 1200, "
             "simulator limit 1200/min, 1,500 one-image requests",
             sim=["--latency", "50ms", "--rate-limit", "1200"], conc=32, rate=1200,
             manifest=("txt2img", 1500, "one"), tools=["hb", "py", "xargs"], reps=1,
             full_only=True),
        dict(name="overhead", title="Overhead-bound: no latency, concurrency 64, no rate limit",
             sim=["--latency", "0ms"], conc=64, rate=0,
             manifest=("txt2img", 5000 if q else 20000, "one"),
             # A curl process per request costs ~12 ms of CPU here: 20,000 would take ~5 min per
             # repetition, so xargs submits the first tenth (its requests/s is what compares).
             subset={"xargs": 500 if q else 2000}, tools=["hb", "py", "xargs", "wrk", "oha"]),
        dict(name="faults", title="Faults: 10% HTTP 500, 5% HTTP 429 (Retry-After: 1), "
             "1% connections dropped after the task was created",
             sim=["--latency", "20ms..60ms", "--error-rate", "0.10", "--throttle-rate", "0.05",
                  "--drop-after", "0.01", "--seed", "7"],
             # 2,000 requests: enough retried attempts meet a dropped connection, in every
             # repetition, for the peers' ways of handling it to show.
             conc=32, rate=0, manifest=("txt2img", 300 if q else 2000, "one"),
             tools=["hb", "py", "xargs"]),
        dict(name="scale", title="Scale: no latency, concurrency 64",
             sim=["--latency", "0ms"], conc=64, rate=0,
             manifest=("txt2img", 50000 if q else 200000, "one"), tools=["hb", "py"],
             reps=1),
        dict(name="images", title="Images: model requests with a 6 MB local PNG, concurrency 8",
             sim=["--latency", "50ms"], conc=8, rate=0,
             manifest=("model", 40 if q else 200, "image"), tools=["hb", "py", "xargs"]),
    ]


# ---------------------------------------------------------------------------------------------
# Inputs


def sim_args(flags, rep):
    """The simulator's flags for one repetition: a `--seed` is moved on by the repetition, so that
    every repetition draws a different fault pattern (the tools of one repetition share it)."""
    out = list(flags)
    if "--seed" in out:
        i = out.index("--seed") + 1
        out[i] = str(int(out[i]) + rep - 1)
    return out


def write_png(path: str, side: int):
    """A real PNG of random pixels (incompressible): side*side*3 bytes, about 6 MB at 1448 px."""
    raw = b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 1)))
        f.write(chunk(b"IEND", b""))


def write_manifest(path: str, name: str, kind: str, n: int, shape: str):
    """A YAML manifest of n requests with distinct bodies (a matrix of two variables)."""
    if kind == "model":
        lines = [f"name: {name}", "jobs:", "  - id: looks", "    kind: model",
                 "    image: big.png", '    prompt: "a model wearing this shirt, pose {i}"',
                 "    image_count: 1", "    matrix:",
                 f"      i: [{', '.join(str(i) for i in range(n))}]"]
    else:
        if shape == "mixed":
            a, b = n // 4, 4  # img_count cycles 1, 2, 3, 4: 2.5 images per request on average
            count = '"{n}"'
            matrix = [f"      a: [{', '.join(str(i) for i in range(a))}]",
                      "      n: [1, 2, 3, 4]"]
            prompt = "studio photo {a}, variant {n}"
        else:
            b = 100 if n >= 100 else n
            a = n // b
            count = "1"
            matrix = [f"      a: [{', '.join(str(i) for i in range(a))}]",
                      f"      b: [{', '.join(str(i) for i in range(b))}]"]
            prompt = "studio photo {a} of product {b} on a marble table"
        assert a * b == n, (n, a, b)
        lines = [f"name: {name}", "jobs:", "  - id: sweep", "    kind: txt2img",
                 f'    prompt: "{prompt}"', '    resolution: "1024*1024"',
                 f"    img_count: {count}", "    matrix:", *matrix]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def count_images(jsonl: str) -> int:
    total = 0
    with open(jsonl, "rb") as f:
        for line in f:
            # `images` is near the end of the line; parse only that.
            i = line.rfind(b'"images":')
            total += int(line[i + 9:].split(b",", 1)[0])
    return total


def head_lines(src: str, dst: str, n: int):
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for i, line in enumerate(fi):
            if i >= n:
                break
            fo.write(line)


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Simulator:
    def __init__(self, binary, port, flags, log):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [binary, "simulate", "--listen", f"127.0.0.1:{port}", "-q", "--token", TOKEN, *flags],
            stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not start (flags {flags})")
                time.sleep(0.05)

    def stats(self):
        return http_json(self.url + "/sim/stats")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tree_rss_kb(root: int) -> int:
    """Sum of the RSS of `root`'s descendants (not root itself: /usr/bin/time)."""
    children = {}
    rss = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
            fields = st[st.rfind(b")") + 2:].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages
    total, stack = 0, list(children.get(root, []))
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(cmd, env, log, sample=True):
    """Run cmd under /usr/bin/time; wall (monotonic), user, sys, peak RSS of the largest process,
    peak RSS of the process tree (sampled every 100 ms), exit code."""
    tf = tempfile.NamedTemporaryFile(prefix="time.", delete=False)
    tf.close()
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *cmd],
                         env=env, stdout=log, stderr=log)
    peak = [0]

    def sampler():
        while p.poll() is None:
            try:
                peak[0] = max(peak[0], tree_rss_kb(p.pid))
            except OSError:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    if sample:
        th.start()
    rc = p.wait()
    wall = time.monotonic() - t0
    if sample:
        th.join()
    with open(tf.name) as f:
        last = [ln for ln in f.read().splitlines() if ln.strip()][-1].split()
    os.unlink(tf.name)
    _, user, sys_, maxrss = last
    return dict(wall_s=wall, user_s=float(user), sys_s=float(sys_), cpu_s=float(user) + float(sys_),
                peak_rss_mb=int(maxrss) / 1024, tree_rss_mb=max(peak[0], int(maxrss)) / 1024,
                exit_code=rc)


# ---------------------------------------------------------------------------------------------
# Results of each tool


def outcomes_hb_or_py(path):
    """Counts of the `status` column of a results CSV."""
    counts = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
    return counts


def outcomes_xargs(path):
    """The xargs peer's lines: request_id, HTTP status, curl exit code, answer body."""
    counts = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 3)
            key = "malformed"
            if len(parts) == 4:
                key = f"http{parts[1]}/curl{parts[2]}"
                if parts[1] == "200":
                    try:
                        key = "submitted" if json.loads(parts[3]).get("code") == 0 else "rejected"
                    except ValueError:
                        key = "http200/unparsable"
            counts[key] = counts.get(key, 0) + 1
    return counts


def run_tool(tool, sc, inputs, binary, sim, work, log):
    env = dict(os.environ, HIDREAM_API_TOKEN=TOKEN)
    out = os.path.join(work, f"out-{tool}")
    for p in (out, out + ".wal", out + ".lock"):
        if os.path.exists(p):
            os.unlink(p)
    conc, rate = str(sc["conc"]), str(sc["rate"])
    jsonl = inputs["jsonl_sub"].get(tool, inputs["jsonl"])
    if tool == "hb":
        cmd = [binary, "run", inputs["manifest"], "--base-url", sim.url, "-o", out,
               "--concurrency", conc, "--rate", rate, "--max-attempts", "5", "--backoff", "1s",
               "-q"]
    elif tool == "py":
        cmd = [sys.executable, os.path.join(PEERS, "submit_asyncio.py"), jsonl, "-o", out,
               "--concurrency", conc, "--rate", rate, "--max-attempts", "5", "--backoff", "1s"]
    elif tool == "xargs":
        cmd = ["bash", os.path.join(PEERS, "submit_xargs.sh"), jsonl, out, conc, "5"]
    else:
        raise ValueError(tool)
    # Only xargs spreads its work over processes; for the others /usr/bin/time's peak RSS is the
    # tree's, and a sampler would take CPU from the tool measured.
    m = measure(cmd, env, log, sample=tool == "xargs")
    counts = outcomes_xargs(out) if tool == "xargs" else outcomes_hb_or_py(out)
    m["completed"] = counts.get("submitted", 0)
    m["outcomes"] = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    for p in os.listdir(work):
        if p.startswith("out-"):
            os.unlink(os.path.join(work, p))
    return m


BENCH_BODY = json.dumps({"prompt": "studio photo of a leather bag on a marble table",
                         "img_count": 1, "resolution": "1024*1024"})


def run_wrk(sc, sim, work, log, seconds):
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\n'
                f"wrk.body = '{BENCH_BODY}'\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')
    url = sim.url + "/api-pub/gw/v3/image/txt2img/async"
    t0 = time.monotonic()
    r = subprocess.run(["wrk", "-t2", f"-c{sc['conc']}", f"-d{seconds}s", "-s", lua, url],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    log.write(r.stdout.encode() + r.stderr.encode())
    rps = 0.0
    for line in r.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
    return dict(wall_s=wall, req_per_s=rps, exit_code=r.returncode)


def run_oha(sc, sim, log, requests):
    """oha (Rust, tokio + hyper: the stack hidream-batch uses) on the same endpoint, for the same
    number of requests as hidream-batch, measured as hidream-batch is: the whole process, from a
    fresh simulator. (wrk measures a 10 s steady state instead.)"""
    url = sim.url + "/api-pub/gw/v3/image/txt2img/async"
    t0 = time.monotonic()
    r = subprocess.run([shutil.which("oha"), "-n", str(requests), "-c", str(sc["conc"]),
                        "--no-tui", "--output-format", "json", "-m", "POST",
                        "-H", "Content-Type: application/json",
                        "-H", f"Authorization: Bearer {TOKEN}", "-d", BENCH_BODY, url],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    log.write(r.stderr.encode())
    try:
        own = float(json.loads(r.stdout)["summary"]["requestsPerSec"])
    except (ValueError, KeyError, TypeError):
        log.write(r.stdout.encode())
        own = 0.0
    rps = requests / wall if own else 0.0
    log.write(f"oha: {own:.0f} req/s by its own clock, {rps:.0f} whole process\n".encode())
    return dict(wall_s=wall, req_per_s=rps, exit_code=r.returncode)


# ---------------------------------------------------------------------------------------------
# The run


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "n/a"
    try:
        import aiohttp  # noqa: PLC0415
        aio = aiohttp.__version__
    except ImportError:
        aio = "n/a"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aio,
        "curl": version(["curl", "--version"]),
        "wrk": version(["wrk", "--version"]) if shutil.which("wrk") else "not installed",
        "oha": version(["oha", "--version"]) if shutil.which("oha") else "not installed",
        "load_before": os.getloadavg()[0],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true", help="1 repetition, smaller sizes")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--chart-only", action="store_true",
                    help="rebuild results.md and chart.png from results.csv")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    meta_path = os.path.join(RESULTS, "machine.json")
    if args.chart_only:
        with open(meta_path) as f:
            meta = json.load(f)
        rows = read_csv(os.path.join(RESULTS, "results.csv"))
        report(rows, meta)
        return

    reps = args.reps or (1 if args.quick else 3)
    binary = os.path.abspath(args.bin)
    only = {s for s in args.only.split(",") if s}
    chosen = [s for s in scenarios(args.quick)
              if (s["name"] in only if only else not (args.quick and s.get("full_only")))]
    meta = machine()
    meta.update(mode="quick" if args.quick else "full", reps=reps,
                hb_version=subprocess.run([binary, "--version"], capture_output=True,
                                          text=True).stdout.strip())
    have = {t: shutil.which(t) is not None for t in LIMITS}

    work = tempfile.mkdtemp(prefix="hb-bench.")
    log_path = os.path.join(work, "bench.log")
    log = open(log_path, "ab")
    port = free_port()
    rows = []
    t_start = time.monotonic()
    try:
        for sc in chosen:
            d = os.path.join(work, sc["name"])
            os.makedirs(d)
            kind, n, shape = sc["manifest"]
            if kind == "model":
                write_png(os.path.join(d, "big.png"), 1448)
            manifest = os.path.join(d, f"{sc['name']}.yaml")
            write_manifest(manifest, sc["name"].replace("-", "_"), kind, n, shape)
            jsonl = os.path.join(d, "requests.jsonl")
            with open(jsonl, "wb") as f:
                subprocess.run([binary, "expand", manifest, "--full", "--base-url",
                                f"http://127.0.0.1:{port}", "--max-requests", "2000000", "-q"],
                               stdout=f, check=True)
            images = count_images(jsonl)
            inputs = dict(manifest=manifest, jsonl=jsonl, jsonl_sub={})
            sub_n = {}
            for tool, k in sc.get("subset", {}).items():
                p = os.path.join(d, f"requests-{tool}.jsonl")
                head_lines(jsonl, p, k)
                inputs["jsonl_sub"][tool] = p
                sub_n[tool] = k
            tools = [t for t in sc["tools"] if t not in LIMITS or have[t]]
            sc_reps = min(reps, sc.get("reps", reps))
            print(f"== {sc['name']}: {n} requests, {images} images; {sc_reps} rep(s) of "
                  f"{', '.join(tools)}", flush=True)
            for rep in range(1, sc_reps + 1):
                for tool in tools:
                    sim = Simulator(binary, port, sim_args(sc["sim"], rep), log)
                    try:
                        if tool == "wrk":
                            m = run_wrk(sc, sim, d, log, 5 if args.quick else 10)
                        elif tool == "oha":
                            m = run_oha(sc, sim, log, n)
                        else:
                            m = run_tool(tool, sc, inputs, binary, sim, d, log)
                        st = sim.stats()
                    finally:
                        sim.stop()
                    reqs = sub_n.get(tool, n)
                    tool_images = images * reqs // n
                    row = dict(scenario=sc["name"], tool=tool, rep=rep, requests=reqs,
                               images=tool_images, concurrency=sc["conc"], rate=sc["rate"],
                               note="")
                    row.update(m)
                    if tool in LIMITS:
                        row["requests"] = st["submitted"]
                        row["completed"] = st["accepted"]
                        row["note"] = ("wrk -t2, 10 s" if tool == "wrk" else
                                       f"oha -n {n}, whole process") + ", one body repeated"
                    else:
                        row["req_per_s"] = row["completed"] / row["wall_s"]
                    if sc["rate"] or sc["name"] == "latency":
                        row["ideal_s"] = ideal_s(sc, reqs, tool_images)
                    row.update(attempts=st["submitted"], accepted=st["accepted"],
                               duplicates=st["duplicates"], http_429=st["http_429"],
                               http_500=st["http_500"], dropped_after=st["dropped_after"],
                               max_in_flight=st["max_in_flight"],
                               max_images_per_minute=max(st["max_images_per_minute"].values()))
                    if tool in sub_n:
                        row["note"] = f"first {reqs} of the {n} requests"
                    rows.append(row)
                    print(f"  rep {rep} {tool:5s} wall {row['wall_s']:7.2f}s  "
                          f"{row.get('req_per_s', 0):8.1f} req/s  cpu {row.get('cpu_s', 0):6.2f}s  "
                          f"rss {row.get('peak_rss_mb', 0):6.1f}/{row.get('tree_rss_mb', 0):6.1f} MB  "
                          f"done {row.get('completed')}  429 {row['http_429']}  "
                          f"dup {row['duplicates']}  rc {row['exit_code']}  {row.get('outcomes', '')}",
                          flush=True)
            shutil.rmtree(d)
    finally:
        log.close()
        meta["elapsed_s"] = round(time.monotonic() - t_start)
        meta["load_after"] = os.getloadavg()[0]
        if rows:
            write_csv(os.path.join(RESULTS, "results.csv"), rows)
            with open(meta_path, "w") as f:
                json.dump(meta, f, indent=1)
            # From the CSV, as `--chart-only` does: the same report either way.
            report(read_csv(os.path.join(RESULTS, "results.csv")), meta)
        print(f"log: {log_path}")
    print(f"total {meta['elapsed_s']} s; results in {RESULTS}")


def ideal_s(sc, reqs, images):
    """The least wall time the scenario allows: requests go `conc` at a time, each taking the
    simulator's latency, and no faster than its rate limit accepts them. A rolling minute accepts
    a minute's allowance at once and the next one a window later; a steady flow with bursts
    (`--rate-burst B`) accepts B at once and then rate/60 images a second."""
    flags = sc["sim"]
    latency = float(flags[flags.index("--latency") + 1].removesuffix("ms")) / 1000
    waves = lambda n: math.ceil(n / sc["conc"]) * latency  # noqa: E731
    rate = sc["rate"]
    if not rate:
        return waves(reqs)
    if "--rate-burst" in flags:
        burst = int(flags[flags.index("--rate-burst") + 1])
        return max(waves(reqs), max(0, images - burst) * 60 / rate)
    windows = math.ceil(images / rate) - 1
    last = reqs * (images - windows * rate) / images
    return windows * 60 + waves(last)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})


def read_csv(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k, v in r.items():
                if k in ("scenario", "tool", "note", "outcomes"):
                    continue
                if v == "":
                    r[k] = None
                else:
                    try:
                        r[k] = int(v)
                    except ValueError:
                        r[k] = float(v)
            rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def med(rows, scenario, tool, key):
    vals = [r[key] for r in rows if r["scenario"] == scenario and r["tool"] == tool
            and r.get(key) not in (None, "")]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.{digits}f}"
    return f"{int(v):,}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


def report(rows, meta):
    by_sc = {}
    for r in rows:
        by_sc.setdefault(r["scenario"], []).append(r["tool"])
    order = [s["name"] for s in scenarios(False)]
    titles = {s["name"]: s["title"] for s in scenarios(False)}
    md = ["# hidream-batch vs peers — benchmark results", ""]
    md += [f"Measured {meta['date']} by `bash bench/run.sh{' --quick' if meta['mode'] == 'quick' else ''}`"
           f" ({meta['mode']} mode, median of {meta['reps']} repetition(s), tools alternating "
           f"within each repetition, a fresh simulator per run). Total {meta.get('elapsed_s', '?')} s.",
           "",
           f"**Machine:** {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['memory_gib']} GiB RAM, "
           f"Linux {meta['kernel']}; load average {meta['load_before']:.2f} before, "
           f"{meta.get('load_after', 0):.2f} after. {meta['hb_version']}; Python {meta['python']}"
           f" + aiohttp {meta['aiohttp']}; {meta['curl'].split(' (')[0]}; {meta['wrk'].split(' [')[0]}; "
           f"{meta.get('oha', 'oha not installed')}."
           " Clients and simulator share the machine.", ""]
    md += ["Peak RSS is the largest single process (`/usr/bin/time` %M); *tree RSS* is the sampled "
           "peak of the sum over the tool's process tree (what xargs really holds: a curl per "
           "request in flight; sampled every 100 ms for xargs only: hidream-batch and the asyncio peer "
           "are one process each, so theirs is their peak RSS). CPU is user + system seconds of the client (the simulator not "
           "included). *Attempts*, *429*, *500*, *dups* are counted by the simulator.", ""]
    md += ["| scenario | tool | requests | wall s | req/s | vs ideal | CPU s | peak RSS MB | "
           "tree RSS MB | completed | attempts | 429 | 500 | dups | hb / peer |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for sc in order:
        if sc not in by_sc:
            continue
        tools = [t for t in ("hb", "py", "xargs", *LIMITS) if t in by_sc[sc]]
        for t in tools:
            g = lambda k, t=t: med(rows, sc, t, k)  # noqa: E731
            ideal = g("ideal_s")
            vs_ideal = "–"
            if ideal and t not in LIMITS:
                vs_ideal = f"{ideal / g('wall_s'):.2f} of ideal ({ideal:.2f} s)"
            cmp = ""
            if t != "hb":
                hb = lambda k: med(rows, sc, "hb", k)  # noqa: E731
                if sc in ("latency", "overhead") and t not in LIMITS:
                    cmp = (f"req/s {ratio(hb('req_per_s'), g('req_per_s'))}, "
                           f"CPU {ratio(hb('cpu_s'), g('cpu_s'))}, "
                           f"RSS {ratio(hb('peak_rss_mb'), g('tree_rss_mb'))}")
                elif t in LIMITS:
                    cmp = f"req/s {ratio(hb('req_per_s'), g('req_per_s'))}"
                elif sc.startswith("rate"):
                    cmp = f"wall {ratio(hb('wall_s'), g('wall_s'))}"
                elif sc == "faults":
                    cmp = (f"completed {ratio(hb('completed'), g('completed'))}, "
                           f"dups {fmt(hb('duplicates'))} vs {fmt(g('duplicates'))}")
                else:
                    cmp = (f"RSS {ratio(hb('peak_rss_mb'), g('tree_rss_mb'))}, "
                           f"wall {ratio(hb('wall_s'), g('wall_s'))}")
            reqs = g("requests")
            per_run = [r["duplicates"] for r in rows if r["scenario"] == sc and r["tool"] == t]
            dups = fmt(g("duplicates"))
            if len(set(per_run)) > 1:
                dups += f" (runs: {'/'.join(str(v) for v in per_run)})"
            if t in LIMITS:
                how = "10 s" if t == "wrk" else f"{fmt(reqs)} requests, whole process"
                md.append(f"| {sc} | {t} (64 conns, {how}) | {fmt(reqs)} | {fmt(g('wall_s'))} | "
                          f"{fmt(g('req_per_s'), 0)} | physical limit | – | – | – | – | – | "
                          f"{fmt(g('http_429'))} | – | – | {cmp} |")
                continue
            md.append(
                f"| {sc} | {TOOLS[t]} | {fmt(reqs)} | {fmt(g('wall_s'), 2)} | "
                f"{fmt(g('req_per_s'), 0)} | {vs_ideal} | {fmt(g('cpu_s'), 2)} | "
                f"{fmt(g('peak_rss_mb'))} | {fmt(g('tree_rss_mb'))} | {fmt(g('completed'))} | "
                f"{fmt(g('attempts'))} | {fmt(g('http_429'))} | {fmt(g('http_500'))} | "
                f"{dups} | {cmp} |")
    md += ["", "Scenarios:", ""]
    for sc in order:
        if sc in by_sc:
            md.append(f"- **{sc}** — {titles[sc]}.")
    md += ["", "## Targets (issue 4, issue 7)", ""]
    md += targets(rows)
    md += ["", "Notes:", "",
           "- Ideal: the least time the scenario allows — requests `concurrency` at a time, each "
           "taking the simulator's latency, and no sooner than its limit accepts them (a rolling "
           "minute: a minute's allowance, then the next a minute later; a steady flow: the burst, "
           "then rate/60 images a second).",
           "- xargs cannot rate-limit: it sends as fast as its concurrency allows; with fewer "
           "images than one minute's allowance it provokes no 429 only because the simulator's "
           "rolling minute has room.",
           "- The asyncio peer's token bucket starts full and refills continuously (the cookbook's "
           "design): beyond one minute's allowance it sends more than a rolling minute accepts. "
           "hidream-batch keeps an exact log of the last minute instead, and paces evenly once an "
           "endpoint answers 429.",
           "- Duplicates: the asyncio peer retries every exception, as the cookbook does, so a "
           "connection closed after the task was created is sent again. `curl --retry` does not "
           "retry an empty reply (exit 52) by itself, but once a retry has reused the connection "
           "(after a 500 or 429), libcurl silently re-sends the POST when that connection dies "
           "(`Connection died, retrying a fresh connect`): xargs+curl duplicates too, less often.",
           f"- The xargs peer submits only {subset_note(rows)} (a curl process per request costs "
           "~12 ms of CPU here), and is left out of the scale scenario (200,000 curl processes: "
           "about an hour, and more connections in TIME_WAIT than there are ephemeral ports).",
           "- Rate limits: the API says how many images a minute it allows, not how it counts them. "
           "rate-one, rate-mixed and rate-sustained count a rolling minute (`--rate-limit`): a "
           "client may send a minute's allowance at once. rate-gateway counts a steady flow with "
           "bursts of up to 40 images (`--rate-burst 40`), as nginx's `limit_req` and many API "
           "gateways do: the same bursts are answered 429. It is not one of the issue's scenarios; "
           "it shows what each tool does against the other way of counting.",
           "- Faults: every submission has the same chances (10% HTTP 500, 5% HTTP 429 with "
           "`Retry-After: 1`, 1% dropped after the task was created), drawn from the simulator's "
           "seed and the submission's sequence number.",
           "- rate-sustained runs once (it takes over 3 minutes), scale once (2 minutes of the "
           "Python peer); the others are medians of all repetitions.",
           "- Runs here are measured as a whole process: start-up, manifest expansion (hidream-batch) "
           "or JSON-lines parsing (peers; the `expand` output is prepared beforehand and not timed)."]
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    chart(rows, meta, order)


def subset_note(rows):
    for r in rows:
        if r["tool"] == "xargs" and str(r.get("note") or "").startswith("first"):
            return f"the {r['note'].replace('first ', 'first ', 1)} of the {r['scenario']} scenario"
    return "a subset where noted"


def targets(rows):
    out = []

    def line(ok, text):
        out.append(f"- {'✅' if ok else '❌'} {text}")

    def g(sc, t, k):
        return med(rows, sc, t, k)

    have = {r["scenario"] for r in rows}
    if "latency" in have:
        rps = g("latency", "hb", "req_per_s")
        line(rps >= 288, f"latency-bound ≥ 288 req/s (0.9 of ideal 320): {rps:.0f} req/s "
             f"({rps / 320:.2f} of ideal); 429s {g('latency', 'hb', 'http_429'):.0f}")
    for sc, label in (("rate-one", "{n} one-image requests"), ("rate-mixed", "{n} mixed requests"),
                      ("rate-gateway", "{n} one-image requests, gateway-style limit"),
                      ("rate-sustained", "{n} one-image requests")):
        if sc in have:
            label = label.format(n=f"{g(sc, 'hb', 'requests'):,.0f}")
            w, i = g(sc, "hb", "wall_s"), g(sc, "hb", "ideal_s")
            n429 = g(sc, "hb", "http_429")
            if sc == "rate-gateway":
                # Not one of the scenarios: no client can tell a steady-flow limit from a
                # rolling minute before its first 429, so the measure is the fewest 429s.
                fewest = all(n429 <= g(sc, t, "http_429") for t in ("py", "xargs")
                             if g(sc, t, "http_429") is not None)
                line(i / w >= 0.9 and fewest,
                     f"rate-bound, {label} (an extra scenario): ≥ 0.9 of ideal {i:.1f} s with the "
                     f"fewest 429s: {w:.1f} s ({i / w:.2f} of ideal), {n429:.0f} × 429 (peers "
                     + ", ".join(f"{g(sc, t, 'http_429'):.0f}" for t in ("py", "xargs")
                                 if g(sc, t, "http_429") is not None) + ")")
                continue
            line(i / w >= 0.9 and n429 == 0,
                 f"rate-bound, {label}: ≥ 0.9 of ideal {i:.2f} s with zero 429s: "
                 f"{w:.2f} s ({i / w:.2f} of ideal), {n429:.0f} × 429; most images the simulator "
                 f"saw in a minute: {g(sc, 'hb', 'max_images_per_minute'):.0f}")
    if "overhead" in have:
        hb, py = g("overhead", "hb", "req_per_s"), g("overhead", "py", "req_per_s")
        rss, pyrss = g("overhead", "hb", "peak_rss_mb"), g("overhead", "py", "peak_rss_mb")
        for t in LIMITS:
            lim = g("overhead", t, "req_per_s")
            if lim:
                how = ("a 10 s steady state" if t == "wrk" else
                       "the same requests, whole process, as hidream-batch is measured")
                line(hb >= 0.5 * lim, f"overhead-bound ≥ 50% of {t} ({how}): {hb:,.0f} vs "
                     f"{lim:,.0f} req/s ({hb / lim:.0%})")
        line(rss <= 64, f"overhead-bound peak RSS ≤ 64 MB: {rss:.1f} MB")
        line(hb >= 2 * py, f"overhead-bound ≥ 2× the Python peer's req/s: {hb:,.0f} vs "
             f"{py:,.0f} ({hb / py:.1f}×)")
        line(rss <= pyrss / 3, f"overhead-bound ≤ 1/3 of the Python peer's peak RSS: {rss:.1f} "
             f"vs {pyrss:.1f} MB ({rss / pyrss:.2f})")
        xa = g("overhead", "xargs", "req_per_s")
        if xa:
            line(hb > xa, f"overhead-bound ahead of xargs: {hb:,.0f} vs {xa:,.0f} req/s; CPU per "
                 f"request {1e6 * g('overhead', 'hb', 'cpu_s') / g('overhead', 'hb', 'requests'):.0f}"
                 f" µs vs {1e6 * g('overhead', 'xargs', 'cpu_s') / g('overhead', 'xargs', 'requests'):.0f} µs")
    if "scale" in have:
        rss = g("scale", "hb", "peak_rss_mb")
        n = g("scale", "hb", "requests")
        pyrss = g("scale", "py", "peak_rss_mb")
        line(rss <= 96, f"scale ({n:,.0f} requests) peak RSS ≤ 96 MB: {rss:.1f} MB "
             f"(Python peer {pyrss:.1f} MB)")
    if "faults" in have:
        d = {t: g("faults", t, "duplicates") for t in ("hb", "py", "xargs")}
        c = {t: g("faults", t, "completed") for t in ("hb", "py", "xargs")}
        per = {t: [r["duplicates"] for r in rows if r["scenario"] == "faults" and r["tool"] == t]
               for t in ("hb", "py", "xargs")}
        only = max(per["hb"], default=0) == 0 and all(
            sum(v) > 0 for t, v in per.items() if t != "hb" and v)
        line(only, "faults: hidream-batch the only tool with zero duplicates (in every run; each "
             "peer duplicated in some): duplicates "
             + ", ".join(f"{TOOLS[t]} {'/'.join(map(str, per[t]))} (per run)" for t in per
                         if per[t])
             + "; completed " + ", ".join(f"{TOOLS[t]} {c[t]:.0f}" for t in c if c[t] is not None))
    # Ahead in every scenario: by the scenario's headline figure.
    heads = {"latency": ("req_per_s", max), "overhead": ("req_per_s", max),
             "faults": ("duplicates", min), "scale": ("peak_rss_mb", min),
             "images": ("peak_rss_mb", min)}
    for sc, (k, best) in heads.items():
        if sc not in have:
            continue
        vals = {t: g(sc, t, "tree_rss_mb" if k == "peak_rss_mb" else k)
                for t in ("hb", "py", "xargs")}
        vals = {t: v for t, v in vals.items() if v is not None}
        winner = best(vals, key=vals.get)
        ahead = vals["hb"] == vals[winner]
        tied = [TOOLS[t] for t, v in vals.items() if t != "hb" and v == vals["hb"]]
        word = f"level with {', '.join(tied)} on" if ahead and tied else "ahead on"
        line(ahead, f"{sc}: hidream-batch {word} {k.replace('_', ' ').replace('per s', '/s')}: "
             + ", ".join(f"{TOOLS[t]} {v:,.1f}" for t, v in vals.items()))
    for sc in ("rate-one", "rate-mixed", "rate-gateway", "rate-sustained"):
        if sc not in have:
            continue
        vals = {t: (g(sc, t, "wall_s"), g(sc, t, "http_429")) for t in ("hb", "py", "xargs")
                if g(sc, t, "wall_s") is not None}
        hb_w, hb_429 = vals["hb"]
        fewest = all(hb_429 <= n for _, n in vals.values())
        sooner = [t for t, (w, n) in vals.items() if t != "hb" and w < hb_w and n <= hb_429]
        line(fewest and not sooner,
             f"{sc}: hidream-batch ahead (fewest 429s, and no peer done sooner without more "
             "429s): " + ", ".join(f"{TOOLS[t]} {w:.1f} s / {n:.0f} × 429"
                                  for t, (w, n) in vals.items()))
    return out


def chart(rows, meta, order):
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    colors = {"hb": "#1f77b4", "py": "#ff7f0e", "xargs": "#2ca02c", "wrk": "#7f7f7f",
              "oha": "#bcbcbc"}
    have = {r["scenario"] for r in rows}
    panels = []
    if "latency" in have:
        panels.append(("latency", "req_per_s", "Latency-bound: requests/s\n(dashed: ideal 320)",
                       320, False))
    for sc in ("rate-one", "rate-mixed"):
        if sc in have:
            panels.append((sc, "wall_s", f"{sc}: wall s\n(dashed: ideal)",
                           med(rows, sc, "hb", "ideal_s"), False))
    if "rate-gateway" in have:
        panels.append(("rate-gateway", "http_429", "rate-gateway (400 images, 1200/min,\n"
                       "bursts ≤ 40): HTTP 429s provoked", None, False))
        panels.append(("rate-gateway", "wall_s", "rate-gateway: wall s\n(dashed: ideal)",
                       med(rows, "rate-gateway", "hb", "ideal_s"), False))
    if "rate-sustained" in have:
        panels.append(("rate-sustained", "http_429", "rate-sustained (1,500 images at 1200/min):\n"
                       "HTTP 429s provoked", None, False))
        panels.append(("rate-sustained", "wall_s", "rate-sustained: wall s\n(dashed: ideal)",
                       med(rows, "rate-sustained", "hb", "ideal_s"), False))
    if "overhead" in have:
        panels.append(("overhead", "req_per_s", "Overhead-bound: requests/s (log)", None, True))
        panels.append(("overhead", "tree_rss_mb", "Overhead-bound: peak RSS MB,\nwhole process tree (log)", None,
                       True))
    if "faults" in have:
        panels.append(("faults", "duplicates", "Faults: duplicates at the simulator\n"
                       "(all runs together)", None, False))
    if "scale" in have:
        panels.append(("scale", "tree_rss_mb", "Scale: peak RSS MB", 96, False))
    if "images" in have:
        panels.append(("images", "tree_rss_mb", "Images (6 MB PNG, conc. 8):\npeak RSS MB, whole process tree",
                       None, False))
    cols = 4
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (sc, key, title, ref, log) in zip(axes.flat, panels):
        tools = [t for t in ("hb", "py", "xargs", *LIMITS) if med(rows, sc, t, key) is not None]
        if key == "duplicates":  # rare events: the sum says more than the median
            vals = [sum(r[key] for r in rows if r["scenario"] == sc and r["tool"] == t)
                    for t in tools]
        else:
            vals = [med(rows, sc, t, key) for t in tools]
        bars = ax.bar([TOOLS[t].replace(" peer", "") for t in tools], vals,
                      color=[colors[t] for t in tools])
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:,.0f}" if v >= 10 or float(v).is_integer() else f"{v:.1f}",
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=9)
        if ref:
            ax.axhline(ref, color="black", linestyle="--", linewidth=1)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle(f"hidream-batch vs peers — median of {meta['reps']} run(s), {meta['cpus']} CPUs "
                 f"({meta['cpu_model']}), {meta['memory_gib']} GiB, {meta['date']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "chart.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
