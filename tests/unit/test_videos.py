"""Reading a video's frames within limits: sampled by their times (a varying frame rate keeps
its clock), and stopped as soon as the frames break a limit the container did not tell."""
import itertools

import pytest

from detection.videos import BadVideo, VideoLimits, VideoTooLarge, is_video, sampled_frames
from tests.clips import encode, grey, panned_photo, resized_midway

LIMITS = VideoLimits(max_seconds=60, max_frame_pixels=10**7, max_frames=1000)


def test_frames_are_sampled_by_their_times_at_a_varying_rate():
    data = panned_photo(times=[0.0, 0.05, 0.5, 0.55, 1.5, 2.0])
    assert [round(at, 2) for at, _ in sampled_frames(data, LIMITS, fps=5)] == [0.0, 0.5, 1.5, 2.0]
    assert len(list(sampled_frames(data, LIMITS, fps=100))) == 6


@pytest.mark.parametrize("limits, reason", [
    (VideoLimits(60, 10**7, max_frames=3), "more than 3 frames"),
    (VideoLimits(1, 10**7, 1000), "runs past 1 s"),
    (VideoLimits(60, 640 * 360 - 1, 1000), "cannot be decoded"),  # FFmpeg's decoder refuses
])
def test_frames_past_a_limit_stop_the_reading(limits, reason):
    frames = sampled_frames(panned_photo(seconds=2, fps=10), limits, fps=10)
    with pytest.raises((VideoTooLarge, BadVideo), match=reason):
        for _ in frames:
            pass


@pytest.mark.parametrize("limits, reason", [
    (LIMITS, "its frame size changes at 1.0 s, from 320x240 to 640x480"),
    (VideoLimits(60, 320 * 240, 1000), "cannot be decoded after 10 frames"),  # FFmpeg refuses
])
def test_a_frame_size_that_changes_midway_stops_the_reading(limits, reason):
    frames = sampled_frames(resized_midway(), limits, fps=10)
    assert [rgb.shape for _, rgb in itertools.islice(frames, 10)] == [(240, 320, 3)] * 10
    with pytest.raises((VideoTooLarge, BadVideo), match=reason):
        next(frames)


def test_videos_are_told_from_images_by_their_first_bytes():
    assert is_video(panned_photo(seconds=0.5)) and is_video(
        panned_photo(seconds=0.5, container="webm", codec="libvpx-vp9"))
    assert not is_video(b"\x89PNG\r\n\x1a\n" + bytes(20)) and not is_video(b"\xff\xd8\xff\xe0")


def test_the_tracker_follows_a_moving_box_and_skips_boxes_with_no_area():
    from detection.worker.detectors import Detection
    from detection.worker.tracking import Tracker
    tracker = Tracker(threshold=0.3)
    ids = []
    for frame in range(6):
        x = 10.0 + 8 * frame
        found = tracker.follow(frame, [Detection("dog", 16, 0.9, (x, 20.0, x + 50, 90.0)),
                                       Detection("cat", 15, 0.9, (5.0, 5.0, 5.0, 40.0))])
        assert all(d.label == "dog" for d in found)
        ids += [d.track_id for d in found]
    assert len(ids) >= 5 and len(set(ids)) == 1


def test_a_frame_is_turned_upright_as_its_display_matrix_says():
    sideways = grey(64, 48)
    sideways[:, :8] = 255  # a white band on the left, as recorded
    data = encode([(0.0, sideways), (0.1, sideways)], rotation=90)
    (_, upright), *_ = sampled_frames(data, LIMITS, fps=10)
    assert upright.shape == (64, 48, 3)  # shown a quarter turn counterclockwise
    assert upright[-8:].min() > 240 and upright[:-8].max() < 140  # the band now at the bottom


def test_a_clip_that_starts_late_is_timed_from_its_first_frame():
    data = encode([(1000.0, grey(64, 48)), (1000.5, grey(64, 48)), (1001.0, grey(64, 48))])
    assert [at for at, _ in sampled_frames(data, LIMITS, fps=2)] == [0.0, 0.5, 1.0]

