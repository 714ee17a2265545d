"""Video jobs through the live service with the real YOLOX-Nano: a photo of a dog panned across
a clip is one dog track from start to end; the drawing is an H.264 MP4 of the detected frames,
the JSON lines hold each frame, the summary its tracks and counts; progress is reported while
it runs; a video over a limit its container hid, or whose frames change size, fails with the
reason and leaves no half-made file."""
import io
import json

import av
import pytest
import requests

from tests.clips import panned_photo, resized_midway
from tests.support import SHARED_CHECKPOINT, LiveServer, write_config

pytestmark = [
    pytest.mark.slow, pytest.mark.real_weights,
    pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                       reason=f"the real YOLOX-Nano checkpoint is not at {SHARED_CHECKPOINT}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ini = write_config(tmp_path_factory.mktemp("videos"), {"yolox_nano": SHARED_CHECKPOINT},
                       default_model="yolox_nano")
    live = LiveServer(ini).start()
    yield live
    live.stop()
    live.kill_worker()


def test_a_panned_dog_is_one_track_drawn_in_an_mp4_with_its_frames_as_json_lines(server):
    accepted = requests.post(server.url + "/upload", files={"image": ("dog.mp4", panned_photo(
        seconds=4, fps=10))}, data={"threshold": "0.4", "fps": "5"}, timeout=30).json()
    status = server.wait_until_finished(accepted["sid"])
    assert status["state"] == "done" and status["progress"] == 1.0, status
    assert status["frames"] == 20 and status["video"]["width"] == 640
    dogs = [t for t in status["tracks"] if t["label"] == "dog"]
    assert len(dogs) == 1 and dogs[0]["frames"] >= 18  # one dog, followed nearly throughout
    assert dogs[0]["first_seen"] == 0.0 and dogs[0]["last_seen"] >= 3.6
    assert status["counts"]["dog"] == 1
    lines = requests.get(server.url + status["frames_url"], timeout=10).text.splitlines()
    frames = [json.loads(line) for line in lines]
    assert [f["frame"] for f in frames] == list(range(20))
    assert [f["time"] for f in frames] == [round(i * 0.2, 3) for i in range(20)]
    tracked = [d for f in frames for d in f["detections"] if d["label"] == "dog"]
    assert {d["track_id"] for d in tracked} == {dogs[0]["id"]}
    xs = [d["bbox"][0] for f in frames for d in f["detections"] if d["label"] == "dog"]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 200  # it moves left to right
    answer = requests.get(server.url + status["result_url"], timeout=10)
    assert answer.headers["Content-Type"] == "video/mp4"
    with av.open(io.BytesIO(answer.content)) as drawn:
        stream = drawn.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (640, 360)
        assert sum(1 for _ in drawn.decode(stream)) == 20
    assert answer.content.find(b"moov") < answer.content.find(b"mdat")  # plays as it loads


def test_a_video_whose_frames_change_size_midway_fails_and_leaves_no_half_made_file(server):
    sid = requests.post(server.url + "/upload", files={"image": ("spliced.webm", resized_midway())},
                        data={"fps": "10"}, timeout=30).json()["sid"]
    status = server.wait_until_finished(sid)
    assert status["state"] == "failed", status
    assert "its frame size changes at 1.0 s, from 320x240 to 640x480" in status["error"]
    left = sorted(path.name for path in server.uploads.iterdir() if sid in path.name)
    assert left == [f"{sid}.error.json", f"{sid}.video"]  # no drawing, frames or temporary file


def test_a_video_over_a_limit_its_container_hid_fails_with_the_reason(tmp_path):
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       max_video_frames=5)
    live = LiveServer(ini).start()
    try:  # a clip with no duration in its header (WebM written live has none): caught later
        clip = panned_photo(seconds=3, fps=10, container="webm", codec="libvpx-vp9", live=True)
        sid = requests.post(live.url + "/upload", files={"image": ("c.webm", clip)},
                            data={"fps": "10"}, timeout=30).json()["sid"]
        status = live.wait_until_finished(sid)
        assert status["state"] == "failed" and "more than 5 frames" in status["error"]
    finally:
        live.stop()
        live.kill_worker()
