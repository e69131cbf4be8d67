#!/usr/bin/env python3
"""A/B builds of hidream-batch on the overhead-bound scenario, beside oha.

    python3 bench/ab_overhead.py [--reps N] [--requests N] [--sim BIN] BIN [BIN ...]

Each BIN is a hidream-batch binary (or a script that execs one, e.g. with an environment
variable set). Every repetition runs each BIN, then oha, each against a freshly started simulator
(`--latency 0ms`, from `--sim`, by default the first BIN), with the harness's manifest and flags
(concurrency 64, no rate limit), measured as a whole process. It prints each repetition and the
medians, with the ratio to oha per repetition: on a shared 2-CPU machine the swing between
repetitions is larger than most single changes, so compare medians of 7 or more repetitions, and
alternate the builds (as this does) rather than run them one after the other.

oha is the one `bench/run.sh` installs (`target/bench-tools/bin/oha`), or any on the PATH.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--sim", help="the binary that runs `simulate` (default: the first BIN)")
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    oha = os.path.join(ROOT, "target", "bench-tools", "bin", "oha")
    if not os.path.exists(oha):
        oha = shutil.which("oha")
    if not oha:
        sys.exit("oha is not installed: run `bash bench/run.sh --quick --only overhead` once")
    sim_bin = a.sim or a.bins[0]
    work = tempfile.mkdtemp(prefix="hb-ab-")
    manifest = os.path.join(work, "overhead.yaml")
    harness.write_manifest(manifest, "overhead", "txt2img", a.requests, "one")
    names = [f"{i}:{b}" for i, b in enumerate(a.bins)]
    rps = {n: [] for n in names + ["oha"]}
    cpu = {n: [] for n in names}
    with open(os.path.join(work, "log"), "wb") as log:
        for rep in range(a.reps):
            for name in names + ["oha"]:
                sim = harness.Simulator(sim_bin, harness.free_port(), ["--latency", "0ms"], log)
                try:
                    out = os.path.join(work, "out.csv")
                    for p in (out, out + ".wal", out + ".lock"):
                        if os.path.exists(p):
                            os.unlink(p)
                    t0 = time.monotonic()
                    if name == "oha":
                        subprocess.run(
                            [oha, "-n", str(a.requests), "-c", "64", "--no-tui", "--output-format",
                             "json", "-m", "POST", "-H", "Content-Type: application/json",
                             "-H", f"Authorization: Bearer {harness.TOKEN}",
                             "-d", harness.BENCH_BODY,
                             sim.url + "/api-pub/gw/v3/image/txt2img/async"],
                            capture_output=True, check=True)
                    else:
                        binary = name.split(":", 1)[1]
                        r = subprocess.run(
                            ["/usr/bin/time", "-f", "%e %U %S %M", binary, "run", manifest,
                             "--base-url", sim.url, "-o", out, "--concurrency", "64", "--rate", "0",
                             "--max-attempts", "5", "--backoff", "1s", "-q"],
                            env=dict(os.environ, HIDREAM_API_TOKEN=harness.TOKEN),
                            capture_output=True, text=True)
                        if r.returncode != 0:
                            sys.exit(f"{binary} exited {r.returncode}:\n{r.stderr[-2000:]}")
                        wall, user, system, _ = r.stderr.strip().splitlines()[-1].split()
                        cpu[name].append(float(user) + float(system))
                        submitted = sim.stats().get("accepted")
                        if submitted is not None and submitted != a.requests:
                            sys.exit(f"{binary}: the simulator accepted {submitted} requests")
                    rps[name].append(a.requests / (time.monotonic() - t0))
                finally:
                    sim.stop()
            print(f"rep {rep + 1}: " + "  ".join(f"{n}={v[-1]:,.0f}" for n, v in rps.items()),
                  flush=True)
    o = statistics.median(rps["oha"])
    print(f"oha: median {o:,.0f} req/s")
    for n in names:
        m = statistics.median(rps[n])
        ratios = " ".join(f"{x / y:.0%}" for x, y in zip(rps[n], rps["oha"]))
        print(f"{n}: median {m:,.0f} req/s ({m / o:.0%} of oha), CPU median "
              f"{statistics.median(cpu[n]):.2f} s ({1e6 * statistics.median(cpu[n]) / a.requests:.0f}"
              f" µs a request); per repetition {ratios}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
