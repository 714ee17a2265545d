"""Throughput with 1 and 2 workers: the spool (workers kept by the daemon) and Redis + RQ
(workers started as on other hosts, each in its own directory).

    make bench      (also runs bench/benchmark.py)
    .venv/bin/python bench/scaling.py [--uploads 80] [--output docs/scaling.md]

Each setting gets two warm-up uploads per worker, then a burst of concurrent uploads (the images
of bench/benchmark.py, in turn) timed until every job is done; clients poll once a second, as
the page does. On a machine with few cores, two
workers share the same cores: the gain is bounded by what one worker leaves idle.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchmark import CONFIGS, THRESHOLD, make_images  # noqa: E402
from tests.random_weights import build_random_checkpoint  # noqa: E402
from tests.support import SHARED_CHECKPOINT, LiveServer, RedisServer, write_config  # noqa: E402


def burst(server: LiveServer, images: list[bytes], count: int) -> float:
    """Seconds from the first upload until ``count`` concurrent uploads are all done."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(min(count, 16)) as pool:
        responses = list(pool.map(lambda i: server.upload(images[i % len(images)], name="b.jpg",
                                                          threshold=THRESHOLD), range(count)))
        assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
        states = list(pool.map(lambda r: server.wait_until_finished(r.json()["sid"], 1800,
                                                                     interval=1.0)["state"],
                               responses))
    assert states == ["done"] * count
    return time.perf_counter() - started


def warm_up(server: LiveServer, images: list[bytes], workers: int) -> None:
    burst(server, images, 2 * workers)


def spool(workdir: Path, model: str, checkpoint: Path, workers: int, threads: int, images,
          count) -> float:
    directory = workdir / f"spool-{workers}-{threads}"
    directory.mkdir()
    ini = write_config(directory, {model: checkpoint}, default_model=model, workers=workers,
                       torch_threads=threads, max_queue=count + 10, max_upload_bytes=20_000_000)
    server = LiveServer(ini).start(timeout=60)
    try:
        warm_up(server, images, workers)
        return burst(server, images, count)
    finally:
        server.stop()
        server.kill_worker()
        server.remove_metrics()


def rq(workdir: Path, model: str, checkpoint: Path, workers: int, threads: int, images,
       count) -> float:
    redis = RedisServer(workdir / f"redis-{workers}-{threads}").start()
    common = {"default_model": model, "queue": "rq", "redis_url": redis.url,
              "torch_threads": threads, "max_queue": count + 10,
              "max_upload_bytes": 20_000_000}
    processes = []
    try:
        for index in range(workers):
            directory = workdir / f"rq-{workers}-{threads}-worker{index}"
            directory.mkdir()
            ini = write_config(directory, {model: checkpoint}, **common)
            log = open(directory / "worker.log", "wb")
            processes.append(subprocess.Popen(
                [sys.executable, str(ROOT / "mmdetectionl.py"), "--config", str(ini), "worker"],
                cwd=directory, stdout=log, stderr=log))
        directory = workdir / f"rq-{workers}-{threads}-web"
        directory.mkdir()
        server = LiveServer(write_config(directory, {model: checkpoint}, spawn_worker="false",
                                         **common)).start(timeout=60)
        try:
            warm_up(server, images, workers)
            return burst(server, images, count)
        finally:
            server.stop()
    finally:
        for process in processes:
            process.kill()
            process.wait()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolox_nano", choices=list(CONFIGS))
    parser.add_argument("--uploads", type=int, default=80)
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    images = make_images()
    workdir = Path(tempfile.mkdtemp(prefix="scaling-", dir=ROOT / "artifacts"))
    if args.model == "yolox_nano" and SHARED_CHECKPOINT.is_file():
        checkpoint, weights = SHARED_CHECKPOINT, "real COCO weights"
    else:
        checkpoint, weights = workdir / f"{args.model}_random.pth", "random weights"
        build_random_checkpoint(CONFIGS[args.model], checkpoint)
    rows = []
    cores = len(os.sched_getaffinity(0))
    # (workers, threads each: 0 is the libraries' choice; the spool's default for 2 workers is
    # the cores split, which RQ workers, started one by one, are given here by hand)
    settings = [(1, 0), (2, max(1, cores // 2)), (2, cores)]
    for backend, run in (("spool", spool), ("rq", rq)):
        rates = []
        for workers, threads in settings:
            print(f"== {backend}, {workers} worker(s), threads {threads or 'all'}", flush=True)
            wall = run(workdir, args.model, checkpoint, workers, threads, images, args.uploads)
            rates.append(args.uploads / wall)
        rows.append(f"| {backend} | " + " | ".join(
            f"{rate:.2f}" + (f" ({rate / rates[0]:.2f}×)" if i else "")
            for i, rate in enumerate(rates)) + " |")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    table = "\n".join([
        f"Machine: {cpu}, {os.cpu_count()} cores. Model {args.model} ({weights}); a burst of "
        f"{args.uploads} concurrent uploads (640x480, 1280x960 and 1920x1080 JPEGs in turn) "
        "after a warm-up, clients polling once a second; images per second until all are done.", "",
        f"| queue | 1 worker | 2 workers, {max(1, cores // 2)} thread(s) each (the spool's "
        f"default) | 2 workers, {cores} threads each |", "|---|---|---|---|",
        *rows]) + "\n"
    print(table)
    if args.output:
        args.output.write_text("# Scaling: 1 vs 2 workers\n\nMade by `make bench` "
                               "(bench/scaling.py).\n\n" + table)


if __name__ == "__main__":
    main()
