"""Objects followed across a video's frames with mmdet's ``ByteTracker`` (ByteTrack, with its
Kalman filter; ``lap`` solves its assignments): each frame's detections in, the ones it follows
out, each with the id of its track."""
from __future__ import annotations

from dataclasses import replace

from .detectors import Detection

LOW_SCORE = 0.1  # ByteTrack's second association takes detections down to this score
MIN_SIDE = 1.0  # pixels: a box narrower or lower is not followed


class Tracker:
    """One video's tracks; ``threshold``: the job's, the score a detection needs to start a
    track or to be matched first."""

    def __init__(self, threshold: float):
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        high = max(threshold, 0.3)
        self.tracker = MODELS.build(dict(
            type="ByteTracker", motion=dict(type="KalmanFilter"),
            obj_score_thrs=dict(high=high, low=LOW_SCORE), init_track_thr=high,
            weight_iou_with_det_scores=True,
            match_iou_thrs=dict(high=0.1, low=0.5, tentative=0.3), num_frames_retain=30))
        self.threshold = threshold

    def follow(self, frame: int, detections: list[Detection]) -> list[Detection]:
        """Frame ``frame``'s tracked detections (scoring at least the threshold), best first,
        each with its ``track_id``; ``detections``: all of the frame's down to ``LOW_SCORE``."""
        import torch
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        # A box of no width or height has no shape for the Kalman filter to follow
        detections = [d for d in detections if d.bbox[2] - d.bbox[0] >= MIN_SIDE
                      and d.bbox[3] - d.bbox[1] >= MIN_SIDE]
        sample = DetDataSample(metainfo={"frame_id": frame})
        instances = InstanceData()
        instances.bboxes = torch.tensor([d.bbox for d in detections],
                                        dtype=torch.float32).reshape(-1, 4)
        instances.scores = torch.tensor([d.score for d in detections], dtype=torch.float32)
        instances.labels = torch.tensor([d.class_id for d in detections], dtype=torch.long)
        sample.pred_instances = instances
        tracked = self.tracker.track(sample)
        by_class = {d.class_id: d.label for d in detections}
        followed = [
            Detection(by_class[int(label)], int(label), float(score),
                      tuple(float(v) for v in box), track_id=int(track))
            for box, score, label, track in zip(tracked.bboxes.tolist(), tracked.scores.tolist(),
                                                tracked.labels.tolist(),
                                                tracked.instances_id.tolist())
            if score >= self.threshold]
        return sorted(followed, key=lambda d: -d.score)


def untracked(detections: list[Detection], threshold: float) -> list[Detection]:
    """A frame's detections when tracking is off: those at the threshold, without ids."""
    return [replace(d, track_id=None) for d in detections if d.score >= threshold]
