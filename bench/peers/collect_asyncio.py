#!/usr/bin/env python3
"""Peer for the collection benchmark: the asyncio submitter's user, extended the way a user would
write collection (and the way HiDream's own client polls): for every submitted task of a results
CSV, query `GET <submit URL>/results?task_id=…` every 5 s until every image is done, failed or
refused, then download each done image. HTTP calls in flight are bounded by a semaphore
(`--concurrency`); nothing else paces the queries.

Usage: HIDREAM_API_TOKEN=... collect_asyncio.py RESULTS.csv --base-url URL -o DIR [--concurrency 4]
Prints one JSON line: tasks, images downloaded, queries, seconds.
"""

import argparse
import asyncio
import csv
import json
import os
import time

import aiohttp

PATHS = {
    "txt2img": "/api-pub/gw/v3/image/txt2img/async",
    "model": "/api-pub/ec/v3/image/model/async",
}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--interval", type=float, default=5.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.results, newline="", encoding="utf-8") as f:
        tasks = [
            (r["kind"], r["task_id"], r["request_id"])
            for r in csv.DictReader(f)
            if r["status"] == "submitted" and r["task_id"]
        ]
    sem = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {os.environ['HIDREAM_API_TOKEN']}"}
    counts = {"queries": 0, "images": 0}
    started = time.monotonic()

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.concurrency)
    ) as session:

        async def follow(kind: str, task_id: str, request_id: str) -> None:
            url = f"{args.base_url}{PATHS[kind]}/results"
            while True:
                async with sem:
                    async with session.get(
                        url, params={"task_id": task_id}, headers=headers
                    ) as r:
                        answer = await r.json()
                counts["queries"] += 1
                subs = (answer.get("result") or {}).get("sub_task_results") or []
                if subs and all(s.get("task_status") in (1, 3, 4) for s in subs):
                    break
                await asyncio.sleep(args.interval)
            for n, s in enumerate(subs):
                if s.get("task_status") != 1 or not s.get("image"):
                    continue
                async with sem:
                    async with session.get(s["image"]) as r:
                        body = await r.read()
                with open(os.path.join(args.out, f"{request_id}-{n}.png"), "wb") as f:
                    f.write(body)
                counts["images"] += 1

        await asyncio.gather(*(follow(*t) for t in tasks))
    print(
        json.dumps(
            {
                "tasks": len(tasks),
                "images": counts["images"],
                "queries": counts["queries"],
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    )


asyncio.run(main())
