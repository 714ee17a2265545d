"""Teaching the service, timed through its HTTP API as a user's script would: a dataset of 60
images saved one by one (``POST /datasets/NAME/images`` with their boxes), a training from the
real YOLOX-Nano COCO checkpoint queued as a job, detections served while it trains, the new
version promoted; then a second version, compared with the first on the held-out images.

    .venv/bin/python bench/teaching.py --output docs/teaching.md

Numbers: the time from the last image's "Save" to a promoted model; detection p50 (upload to
result, one at a time) while idle and while the training runs, the detections paced as a camera
sends them (one every ``PACE`` seconds); each version's held-out mAP.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchmark import one_upload  # noqa: E402
from synthetic import SUITE, make_split  # noqa: E402

from tests.support import SHARED_CHECKPOINT, LiveServer, write_config  # noqa: E402

IMAGES = 60
PACE = 0.5  # seconds between detections while a training runs: a camera's 2 frames a second
DATASET = "photo-3"  # its classes and looks; 60 images of it
WORK = ROOT / "artifacts" / "teaching"


def detections_p50(server: LiveServer, photo: bytes, seconds: float | None = None,
                   count: int = 10, until=lambda: False, pace: float = 0.0) -> tuple[float, int]:
    """p50 in ms of uploads one at a time, one every ``pace`` seconds at most: ``count`` of
    them, or as many as fit while ``until()`` is false (at most ``seconds``)."""
    times = []
    deadline = time.monotonic() + (seconds or 1e9)
    while (len(times) < count if seconds is None else not until()) \
            and time.monotonic() < deadline:
        started = time.monotonic()
        times.append(one_upload(server, photo)["total"] * 1000)
        time.sleep(max(0.0, started + pace - time.monotonic()))
    return (statistics.median(times) if times else float("nan")), len(times)


def train(server: LiveServer, photo: bytes, seed: int) -> dict:
    """Queue a training and measure detections while it runs; its final status."""
    accepted = requests.post(f"{server.url}/training", json={
        "dataset": "taught", "base": "yolox_nano", "name": "taught", "seed": seed},
        timeout=30)
    accepted.raise_for_status()
    status_url = server.url + accepted.json()["status_url"]
    state = {"status": None}

    def finished() -> bool:
        state["status"] = requests.get(status_url, timeout=30).json()
        if state["status"]["state"] == "running" and "epoch" in state["status"]:
            print(f"  {state['status']['stage']}", flush=True)
        return state["status"]["state"] in ("done", "failed")
    p50, count = detections_p50(server, photo, seconds=1200, until=finished, pace=PACE)
    status = state["status"]
    assert status["state"] == "done", status
    return {"status": status, "p50_during": p50, "count_during": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the report to this markdown file")
    args = parser.parse_args()
    if not SHARED_CHECKPOINT.is_file():
        sys.exit(f"needs the real YOLOX-Nano checkpoint at {SHARED_CHECKPOINT}")
    import shutil
    shutil.rmtree(WORK, ignore_errors=True)
    data = make_split(SUITE[DATASET], WORK / "data", IMAGES, seed=7)
    coco = json.loads(data.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    ini = write_config(WORK, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       idle_exit_seconds=0)
    server = LiveServer(ini).start(timeout=60)
    try:
        photo = (sorted((ROOT.parent / "shared" / "photos").glob("*.jpg"))[0]).read_bytes()
        one_upload(server, photo)  # the model loaded, warm
        idle, _ = detections_p50(server, photo, count=20)
        requests.post(f"{server.url}/datasets", json={"name": "taught", "classes": list(
            names.values())}, timeout=30).raise_for_status()
        for entry in coco["images"]:
            boxes = [{"label": names[a["category_id"]],
                      "box": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                              a["bbox"][1] + a["bbox"][3]]}
                     for a in coco["annotations"] if a["image_id"] == entry["id"]]
            saved = requests.post(f"{server.url}/datasets/taught/images", files={
                "image": (entry["file_name"], (data.parent / entry["file_name"]).read_bytes())},
                data={"annotations": json.dumps(boxes)}, timeout=30)
            saved.raise_for_status()
        last_save = time.monotonic()
        first = train(server, photo, seed=0)
        requests.post(f"{server.url}/models/taught/promote", json={"version": 1},
                      timeout=30).raise_for_status()
        to_promoted = time.monotonic() - last_save
        second = train(server, photo, seed=1)
        versions = requests.get(f"{server.url}/models/taught", timeout=30).json()["versions"]
    finally:
        server.stop()
        server.kill_worker()
        server.remove_metrics()
    lines = [
        f"Machine: {os.cpu_count()} cores. {IMAGES} images like the fine-tuning suite's "
        f"`{DATASET}` (classes {', '.join(names.values())}), saved one by one through the API "
        "(every fifth held out); trainings with the defaults (`time_budget` 240 s) from "
        "YOLOX-Nano's COCO checkpoint, queued by `POST /training`.", "",
        f"- From the last image's save to a promoted model: **{to_promoted:.0f} s** (training "
        f"{first['status']['timings']['train_ms'] / 1000:.0f} s of the job's "
        f"{first['status']['timings']['total_ms'] / 1000:.0f} s).",
        f"- Detection p50 (upload to drawn result, one at a time, a 640x480 photo): idle "
        f"**{idle:.0f} ms**; while training, one every {PACE} s, **"
        f"{first['p50_during']:.0f} ms** ({first['count_during']} detections during the first "
        f"training), {second['p50_during']:.0f} ms during the second.", "",
        "| version | seed | epochs (trained of planned) | held-out bbox mAP@0.5 | mAP | the "
        "served version then | warning |", "|---|---:|---|---:|---:|---|---|"]
    for version in versions:
        served = version.get("served_then")
        then = (f"{served['version']}: {served['bbox_map50']:.3f}" if served else "none")
        trained, planned = version["epochs"]
        lines.append(f"| {version['version']} | {version['seed']} | {trained} of {planned} | "
                     f"{version['metrics']['bbox_map50']:.3f} | "
                     f"{version['metrics']['bbox_map']:.3f} | {then} | "
                     f"{version.get('warning') or ''} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text("# Teaching: from saved images to a served model\n\nMade by "
                               "`bench/teaching.py`.\n\n" + report)


if __name__ == "__main__":
    main()
