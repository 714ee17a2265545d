"""The mmdet config a fine-tuning trains with, and the one its model is served with, both built
from the base model's config."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
    """Training (plain resize and flip: Mosaic and big jitter suit 300 epochs of COCO, not a
    few of 200 photos), validation and test pipelines."""
    resize = dict(type="Resize", scale=(image_size, image_size), keep_ratio=True)
    load = dict(type="LoadAnnotations", with_bbox=True, with_mask=masks)
    train = [dict(type="LoadImageFromFile"), load, resize, dict(type="RandomFlip", prob=0.5),
             PAD, dict(type="PackDetInputs")]
    val = [dict(type="LoadImageFromFile"), resize, PAD, load,
           dict(type="PackDetInputs", meta_keys=META_KEYS)]
    test = [dict(type="LoadImageFromFile"), resize, PAD,
            dict(type="PackDetInputs", meta_keys=META_KEYS)]
    return train, val, test


def build_config(cfg: Config, classes: tuple[str, ...], masks: bool, train: Path, val: Path,
                 epochs: int, image_size: int, seed: int, load_from: Path, work_dir: Path) -> None:
    """Make the base model's config ``cfg`` train on ``classes`` (and with ``masks``, their
    masks) from the annotation files ``train`` and ``val``: AdamW with a short warm-up and
    cosine decay, validation once at the end, weights from ``load_from``, randomness from
    ``seed``."""
    _adapt_model(cfg.model, len(classes))
    cfg.model.data_preprocessor.pop("batch_augments", None)  # YOLOX's multi-scale resizing
    pipelines = _pipelines(image_size, masks)

    def loader(annotations: Path, pipeline: list, shuffle: bool) -> dict:
        return dict(batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
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
        type="CocoMetric", ann_file=str(val), metric=["bbox", "segm"] if masks else "bbox")
    # The loop validates at its last epoch unless told to begin later: validated once, after.
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_begin=epochs + 1)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
        dict(type="CosineAnnealingLR", eta_min=1e-4, begin=0, end=epochs, T_max=epochs,
             by_epoch=True)]
    cfg.optim_wrapper = dict(type="OptimWrapper",
                             optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.05))
    cfg.custom_hooks = []  # the base's (EMA, Mosaic switches) are for 300 epochs of COCO
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=5)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=epochs)
    cfg.load_from = str(load_from)
    cfg.work_dir = str(work_dir)
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
