"""Long jobs and push, timed through the live service with the real YOLOX-Nano on this machine:
a video end to end against the model alone on the same frames, callback delivery after a job
ends, and a batch of photos against single uploads.

    .venv/bin/python bench/long_jobs.py --output docs/long_jobs.md
    .venv/bin/python bench/long_jobs.py --device cuda:0     (on a GPU: frames and a batch's
                                                             images gpu_batch_size at a time)

Video: a 20 s 1280x720 clip at 30 frames a second (a real photo panned across it, H.264),
uploaded and detected at ``fps`` frames a second with tracking; its frames a second from the
upload's start to the job's end, against mmdet's ``inference_detector`` (a fresh process,
default settings, the same checkpoint) on the same frames, decoded beforehand. Callbacks: jobs
one at a time, each with a callback to a receiver on 127.0.0.1; the delay from the job's end
(its result written) to the receiver's first byte.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plain_mmdet import PlainMMDet  # noqa: E402

from tests.clips import panned_photo  # noqa: E402
from tests.support import (  # noqa: E402
    SHARED_CHECKPOINT,
    SHARED_PHOTOS,
    CallbackReceiver,
    LiveServer,
    write_config,
)

WORK = ROOT / "artifacts" / "long_jobs"
SECRET = "a-bench-secret-of-32-characters!"
CONFIG = "yolox/yolox_nano_8xb8-300e_coco.py"


def one_video(server: LiveServer, clip: bytes, fps: float) -> tuple[float, dict]:
    """Seconds from the upload's start to the job's end, and its status."""
    started = time.perf_counter()
    sid = requests.post(server.url + "/upload", files={"image": ("clip.mp4", clip)},
                        data={"fps": str(fps), "threshold": "0.3"}, timeout=60).json()["sid"]
    status = server.wait_until_finished(sid, timeout=1800, interval=0.05)
    assert status["state"] == "done", status
    return time.perf_counter() - started, status


def video_numbers(server: LiveServer, fps: float, seconds: float, device: str) -> dict:
    """The service's (its long lane's worker started for it, then warm) and the model alone's
    frames a second on one clip."""
    from detection.models import mmdet_configs_dir
    from detection.videos import VideoLimits, sampled_frames
    clip = panned_photo(size=(1280, 720), seconds=seconds, fps=30)
    server.kill_worker()  # a daemon without its long lane's worker: it starts for the clip
    cold, _ = one_video(server, clip, fps)
    service, status = one_video(server, clip, fps)
    frames = [rgb for _, rgb in sampled_frames(clip, VideoLimits(600, 10**8, 10**5), fps)]
    paths = []
    for index, rgb in enumerate(frames):  # the frames as files, for the plain process
        from PIL import Image
        path = WORK / f"frame{index:04d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    plain = PlainMMDet(str(mmdet_configs_dir() / CONFIG), SHARED_CHECKPOINT, paths,
                       device=device)
    try:
        alone = sum(plain.measure(index) for index in range(len(paths)))
    finally:
        plain.close()
    return {"frames": status["frames"], "service_s": service, "cold_s": cold, "alone_s": alone,
            "timings": status["timings"], "tracks": len(status["tracks"]),
            "bytes": len(clip)}


def batch_numbers(server: LiveServer, count: int) -> dict:
    """Images a second: ``count`` photos as one zip, and as single uploads one at a time."""
    import zipfile
    photos = [(SHARED_PHOTOS / "dog.jpg").read_bytes()] * count
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, photo in enumerate(photos):
            archive.writestr(f"photo{index:03d}.jpg", photo)
    runs = []
    for _ in range(2):  # the first starts the long lane's worker; the second is warm
        started = time.perf_counter()
        sid = requests.post(server.url + "/upload", files={"image": ("p.zip", buffer.getvalue())},
                            data={"threshold": "0.3"}, timeout=120).json()["sid"]
        status = server.wait_until_finished(sid, timeout=1800, interval=0.05)
        assert status["state"] == "done" and len(status["images"]) == count, status
        runs.append(time.perf_counter() - started)
    started = time.perf_counter()
    for photo in photos:
        sid = server.upload(photo, threshold="0.3").json()["sid"]
        assert server.wait_until_finished(sid)["state"] == "done"
    single = time.perf_counter() - started
    return {"count": count, "cold_s": runs[0], "batch_s": runs[1], "single_s": single,
            "timings": status["timings"]}


def callback_delays(server: LiveServer, receiver: CallbackReceiver, count: int) -> list[float]:
    photo = (SHARED_PHOTOS / "dog.jpg").read_bytes()
    delays = []
    for _ in range(count):
        sid = server.upload(photo, callback_url=receiver.url).json()["sid"]
        server.wait_until_finished(sid)
        deadline = time.monotonic() + 10
        while not any(d["headers"].get("X-Detection-Job") == sid for d in receiver.deliveries):
            assert time.monotonic() < deadline, "a callback did not come"
            time.sleep(0.005)
        arrived = next(d["at"] for d in receiver.deliveries
                       if d["headers"].get("X-Detection-Job") == sid)
        ended = (server.uploads / f"{sid}.json").stat().st_mtime
        delays.append((arrived - ended) * 1000)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--callbacks", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    receiver = CallbackReceiver(SECRET)
    ini = write_config(WORK, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       callback_hosts="127.0.0.1:*", callback_private="true",
                       callback_secret=SECRET, max_upload_bytes=200_000_000,
                       max_video_frames=10_000, max_batch_images=1000, device=args.device)
    server = LiveServer(ini).start(timeout=60)
    try:
        warm = server.upload((SHARED_PHOTOS / "dog.jpg").read_bytes()).json()["sid"]
        server.wait_until_finished(warm)
        videos = [(fps, video_numbers(server, fps, args.seconds, args.device))
                  for fps in args.fps]
        delays = callback_delays(server, receiver, args.callbacks)
        batch = batch_numbers(server, args.batch)
    finally:
        server.stop()
        server.kill_worker()
        server.remove_metrics()
        receiver.stop()
    where = "this machine's CPU" if args.device == "cpu" else f"{args.device} (gpu_batch_size 8)"
    lines = [f"YOLOX-Nano (the real checkpoint) on {where}, one job at a time.", "",
             f"**Video**: a {args.seconds:g} s 1280 × 720 clip at 30 frames a second, H.264; "
             "detected with tracking at the rate shown. Service: from the upload's start to the "
             "job's end (upload, probe, queue, decode, detect, track, draw, encode the MP4). "
             "Model alone: mmdet's `inference_detector` in a fresh process on the same frames, "
             "decoded beforehand (the goal: the service within 1.3×). The service's worker of "
             "the long lane is warm (it stays `long_lane_idle_seconds` after a job, 60); cold: "
             "the daemon started afresh, that worker started and its model loaded for the "
             "clip.", "",
             "| fps | frames | service, s | frames/s | model alone, s | frames/s | service ÷ "
             "model | cold, s (÷ model) | worker's ms: read, inference, track, draw, encode |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fps, v in videos:
        t = v["timings"]
        steps = ", ".join(f"{t.get(k, 0):.0f}" for k in ("read_ms", "inference_ms", "track_ms",
                                                          "draw_ms", "encode_ms"))
        lines.append(f"| {fps:g} | {v['frames']} | {v['service_s']:.1f} | "
                     f"{v['frames'] / v['service_s']:.1f} | {v['alone_s']:.1f} | "
                     f"{v['frames'] / v['alone_s']:.1f} | {v['service_s'] / v['alone_s']:.2f} | "
                     f"{v['cold_s']:.1f} ({v['cold_s'] / v['alone_s']:.2f}) | {steps} |")
    lines += ["", f"**Callbacks**: {len(delays)} detections one at a time, each with a callback "
              "to a receiver on 127.0.0.1; from the job's result written to the receiver "
              f"reading the delivery: p50 **{statistics.median(delays):.0f} ms**, max "
              f"{max(delays):.0f} ms."]
    t = batch["timings"]
    lines += ["", f"**Batch**: {batch['count']} photos (dog.jpg, 768 × 576) as one zip, from the "
              "upload's start to the job's end, against the same photos uploaded one at a time "
              "(each upload, then its result long-polled, as a script would):", "",
              "| | seconds | images/s |", "|---|---|---|",
              f"| batch, warm | {batch['batch_s']:.1f} | {batch['count'] / batch['batch_s']:.1f} |",
              f"| batch, its worker started for it | {batch['cold_s']:.1f} | "
              f"{batch['count'] / batch['cold_s']:.1f} |",
              f"| single uploads | {batch['single_s']:.1f} | "
              f"{batch['count'] / batch['single_s']:.1f} |", "",
              "The batch's worker, ms in all: " + ", ".join(
                  f"{k.removesuffix('_ms')} {v:.0f}" for k, v in t.items()) + "."]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        args.output.write_text("# Long jobs and push\n\nMade by `bench/long_jobs.py`.\n\n"
                               + table)


if __name__ == "__main__":
    main()
