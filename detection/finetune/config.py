"""The mmdet config a fine-tuning trains with, and the one its model is served with, both built
from the base model's config."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .schedule import BATCH_SIZE, MIN_GAIN, MONITOR, PATIENCE, Schedule

if TYPE_CHECKING:  # imported by the functions: the device is chosen before mmengine loads
    from mmengine.config import Config

# The test pipelines of YOLOX and RTMDet pad with grey; every size a multiple of 32 (their
# feature pyramids join maps of 1/8, 1/16 and 1/32 of it).
PAD = dict(type="Pad", size_divisor=32, pad_val=dict(img=(114, 114, 114)))
META_KEYS = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")


def learns_masks(cfg: Config) -> bool:
    """Whether a model config's own training loads masks (Mask R-CNN, RTMDet-Ins)."""
    pipeline = cfg.get("train_pipeline") or cfg.train_dataloader.dataset.get("pipeline", ())
    return any(step.get("with_mask") for step in pipeline if step["type"] == "LoadAnnotations")


def _adapt_model(node, count: int) -> None:
    """Every head of the model (bbox, mask, roi) detects ``count`` classes, and no part of it
    downloads pretrained weights (``load_from`` replaces them all)."""
    if isinstance(node, dict):
        if isinstance(node.get("init_cfg"), dict) and node["init_cfg"].get("type") == "Pretrained":
            del node["init_cfg"]
        for key, value in node.items():
            if key == "num_classes":
                node[key] = count
            else:
                _adapt_model(value, count)
    elif isinstance(node, list):
        for value in node:
            _adapt_model(value, count)


def _pipelines(image_size: int, masks: bool) -> tuple[list, list, list]:
    """Training (scale jitter, crop, colour jitter and flips: what a few hundred batches of a
    small dataset can use; Mosaic suits 300 epochs of COCO), validation and test pipelines."""
    resize = dict(type="Resize", scale=(image_size, image_size), keep_ratio=True)
    load = dict(type="LoadAnnotations", with_bbox=True, with_mask=masks)
    side = -(-image_size // 32) * 32  # a multiple of 32, as PAD makes them
    train = [dict(type="LoadImageFromFile"), load,
             dict(type="RandomResize", scale=(image_size, image_size), ratio_range=(0.6, 1.4),
                  keep_ratio=True),
             dict(type="RandomCrop", crop_size=(image_size, image_size),
                  allow_negative_crop=True),
             dict(type="YOLOXHSVRandomAug"), dict(type="RandomFlip", prob=0.5),
             dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False),
             # every image (and its masks) one size: a batch's masks are stacked as they are
             dict(type="Pad", size=(side, side), pad_val=dict(img=(114, 114, 114))),
             dict(type="PackDetInputs")]
    val = [dict(type="LoadImageFromFile"), resize, PAD, load,
           dict(type="PackDetInputs", meta_keys=META_KEYS)]
    test = [dict(type="LoadImageFromFile"), resize, PAD,
            dict(type="PackDetInputs", meta_keys=META_KEYS)]
    return train, val, test


def build_config(cfg: Config, classes: tuple[str, ...], masks: bool, train: Path, val: Path,
                 schedule: Schedule, image_size: int, seed: int, load_from: Path,
                 work_dir: Path) -> None:
    """Make the base model's config ``cfg`` train on ``classes`` (and with ``masks``, their
    masks) from the annotation files ``train`` and ``val``: AdamW with a short warm-up and
    cosine decay, an average of the weights (EMA), validated every few epochs and the best
    validation kept, stopped early when it stops improving; weights from ``load_from``,
    randomness from ``seed``."""
    _adapt_model(cfg.model, len(classes))
    cfg.model.data_preprocessor.pop("batch_augments", None)  # YOLOX's multi-scale resizing
    pipelines = _pipelines(image_size, masks)

    def loader(annotations: Path, pipeline: list, shuffle: bool) -> dict:
        return dict(batch_size=BATCH_SIZE, num_workers=0, persistent_workers=False, drop_last=False,
                    sampler=dict(type="DefaultSampler", shuffle=shuffle),
                    dataset=dict(type="CocoDataset", data_root=str(annotations.parent),
                                 ann_file=annotations.name, data_prefix=dict(img=""),
                                 metainfo=dict(classes=classes), pipeline=pipeline,
                                 filter_cfg=dict(filter_empty_gt=False)))
    cfg.train_dataloader = loader(train, pipelines[0], shuffle=True)
    cfg.val_dataloader = loader(val, pipelines[1], shuffle=False)
    cfg.test_dataloader = loader(val, pipelines[2], shuffle=False)
    cfg.test_pipeline = pipelines[2]
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type="CocoMetric", ann_file=str(val), metric=["bbox", "segm"] if masks else "bbox",
        classwise=True)
    epochs = schedule.epochs
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                         val_interval=schedule.validate_every)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
        dict(type="CosineAnnealingLR", eta_min=1e-4, begin=0, end=epochs, T_max=epochs,
             by_epoch=True)]
    cfg.optim_wrapper = dict(type="OptimWrapper",
                             optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.05))
    # Not the base's hooks (an EMA and Mosaic switches made for 300 epochs of COCO): YOLOX's
    # EMA, that follows the weights closely at first, made to average over about the last 100
    # batches after a few hundred; and a stop after PATIENCE validations without gain.
    cfg.custom_hooks = [
        dict(type="EMAHook", ema_type="ExpMomentumEMA", momentum=0.01, gamma=100,
             update_buffers=True, priority=49),
        dict(type="EarlyStoppingHook", monitor=MONITOR, rule="greater", min_delta=MIN_GAIN,
             patience=PATIENCE)]
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=5)
    cfg.default_hooks.checkpoint = dict(  # the best validation's weights (EMA), only
        type="CheckpointHook", interval=-1, save_last=False, save_best=MONITOR, rule="greater",
        save_optimizer=False, save_param_scheduler=False)
    cfg.load_from = str(load_from)
    cfg.work_dir = str(work_dir)
    # mmengine keeps a visualizer and a logger per name for the life of the process: names of
    # this run's own, or a second training in one process (a worker's) would write to the
    # first one's (deleted) folder.
    cfg.experiment_name = work_dir.name
    if "visualizer" in cfg:
        cfg.visualizer.name = work_dir.name
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=64)
    # Shuffling, flips and the new heads' first weights: the same data and options train the
    # same model on the same machine, so that a result can be reproduced and compared.
    cfg.randomness = dict(seed=seed)


def served_config(cfg: Config, classes: tuple[str, ...]) -> Config:
    """What serving the trained model needs of ``cfg``: the model and its test pipeline (not the
    training's data, schedule or temporary folders)."""
    from mmengine.config import Config
    served = dict(default_scope=cfg.get("default_scope", "mmdet"), model=cfg.model,
                  test_pipeline=cfg.test_pipeline,
                  test_dataloader=dict(dataset=dict(
                      type="CocoDataset", metainfo=dict(classes=classes),
                      pipeline=cfg.test_pipeline)))
    if "custom_imports" in cfg:  # modules that register the model's parts
        served["custom_imports"] = cfg.custom_imports
    return Config(served)
