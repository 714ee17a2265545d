"""``mmdetectionl.py finetune`` with one choice of its defaults changed, to measure what each
choice pays (``bench/finetune_suite.py --ablate CHOICE`` runs it on the suite):

    python bench/finetune_ablation.py CHOICE [mmdetectionl.py arguments...]

no-ema: no average of the weights; no-jitter: the training images only resized and flipped
(no scale, crop or colour jitter); no-early-stop: every epoch of the schedule (within the time
budget); mosaic: YOLOX's Mosaic and random affine, off for the last fifth of the epochs (as
YOLOXModeSwitchHook does for its last 15 of 300); lr-1e-3, lr-4e-3: another learning rate;
half-iterations: 200 batches, not 400.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detection.finetune import config as finetune_config  # noqa: E402
from detection.finetune import schedule  # noqa: E402

JITTER = {"RandomResize", "RandomCrop", "YOLOXHSVRandomAug"}


def no_ema(cfg) -> None:
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "EMAHook"]


def no_early_stop(cfg) -> None:
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "EarlyStoppingHook"]


def no_jitter(cfg) -> None:
    pipeline = [step for step in cfg.train_dataloader.dataset.pipeline
                if step["type"] not in JITTER]
    side = next(step for step in pipeline if step["type"] == "Pad")["size"][0]
    pipeline.insert(2, dict(type="Resize", scale=(side, side), keep_ratio=True))
    cfg.train_dataloader.dataset.pipeline = pipeline


def mosaic(cfg) -> None:
    inner = cfg.train_dataloader.dataset
    steps = inner.pipeline
    side = next(step for step in steps if step["type"] == "Pad")["size"][0]
    inner.pipeline = steps[:2]  # loading the image and its boxes
    cfg.train_dataloader.dataset = dict(
        type="MultiImageMixDataset", dataset=inner, pipeline=[
            dict(type="Mosaic", img_scale=(side, side), pad_val=114.0),
            dict(type="RandomAffine", scaling_ratio_range=(0.5, 1.5),
                 border=(-side // 2, -side // 2)),
            dict(type="YOLOXHSVRandomAug"), dict(type="RandomFlip", prob=0.5),
            dict(type="Resize", scale=(side, side), keep_ratio=True), *steps[-3:]])
    cfg.custom_hooks.append(dict(type="YOLOXModeSwitchHook",
                                 num_last_epochs=max(1, cfg.train_cfg["max_epochs"] // 5),
                                 priority=48))


def learning_rate(value: float):
    def change(cfg) -> None:
        cfg.optim_wrapper["optimizer"]["lr"] = value
    return change


CHOICES = {"no-ema": no_ema, "no-jitter": no_jitter, "no-early-stop": no_early_stop,
           "mosaic": mosaic, "lr-1e-3": learning_rate(1e-3), "lr-4e-3": learning_rate(4e-3),
           "half-iterations": None}


def main(choice: str, argv: list[str]) -> int:
    change = CHOICES[choice]
    if choice == "half-iterations":
        schedule.MIN_ITERATIONS //= 2
    else:
        build = finetune_config.build_config

        def build_changed(cfg, *args, **kwargs) -> None:
            build(cfg, *args, **kwargs)
            change(cfg)
        finetune_config.build_config = build_changed
    import mmdetectionl
    return mmdetectionl.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
