"""``mmdetectionl.py finetune``: a detector for your own classes, from a COCO-format dataset.

The base model's mmdet config, with the dataset's classes, a pipeline and schedule for small
data (no Mosaic: plain resize and flip; AdamW, a short warm-up, cosine decay) and the base
checkpoint as ``load_from``, trained by mmengine's ``Runner`` and evaluated by mmdet's
``CocoMetric``. The result is a checkpoint and a config in ``checkpoints/``, and a table in
models.toml: the running service offers it at once (web and workers read models.toml again
when it changes).
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .jobs.atomic import atomic_path, write_atomically
from .models import ModelSpec, load_registry
from .settings import Settings


class DatasetError(ValueError):
    """The dataset cannot be trained on; the message says why (nothing was trained)."""


@dataclass(frozen=True)
class Dataset:
    """A checked COCO annotation file: its classes, in category-id order, and its images."""
    path: Path
    classes: tuple[str, ...]
    images: int


def check_dataset(path: Path) -> Dataset:
    """Read and check a COCO annotation file: images on disk (relative to it), categories, boxes
    inside their images."""
    try:
        document = json.loads(path.read_bytes())
        images = {image["id"]: image for image in document["images"]}
        categories = sorted(document["categories"], key=lambda c: c["id"])
        annotations = document.get("annotations", [])
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is not a COCO annotation file ({type(error).__name__}: "
                           f"{error})") from None
    if not categories:
        raise DatasetError(f"{path} has no categories")
    if not images:
        raise DatasetError(f"{path} has no images")
    missing = [image["file_name"] for image in images.values()
               if not (path.parent / image["file_name"]).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images of {path} are missing (relative to its folder),"
                           f" e.g. {missing[0]}")
    for annotation in annotations:
        image = images.get(annotation.get("image_id"))
        x, y, width, height = annotation.get("bbox", (0, 0, 0, 0))
        if image is None or width <= 0 or height <= 0 or x < 0 or y < 0 \
                or x + width > image["width"] + 1 or y + height > image["height"] + 1:
            box = (x, y, width, height)
            raise DatasetError(f"annotation {annotation.get('id')} of {path}: its box {box} "
                               "is empty or outside its image")
    return Dataset(path, tuple(str(c["name"]) for c in categories), len(images))


def split_off_validation(train: Dataset, directory: Path,
                         share: float = 0.25) -> tuple[Path, Path]:
    """Two annotation files beside the training one's images: ``share`` of them for
    validation (seeded, so that runs compare)."""
    document = json.loads(train.path.read_bytes())
    images = sorted(document["images"], key=lambda image: image["id"])
    random.Random(0).shuffle(images)
    cut = max(1, round(len(images) * share))
    parts = {"val": images[:cut], "train": images[cut:]}
    paths = []
    for name, chosen in (("train", parts["train"]), ("val", parts["val"])):
        ids = {image["id"] for image in chosen}
        part = {**document, "images": [{**image, "file_name": str(
                    (train.path.parent / image["file_name"]).resolve())} for image in chosen],
                "annotations": [a for a in document.get("annotations", [])
                                if a["image_id"] in ids]}
        paths.append(directory / f"{name}.json")
        paths[-1].write_text(json.dumps(part))
    return paths[0], paths[1]


def _set_num_classes(node, count: int) -> None:
    """Every head of the model (bbox, mask, roi) detects ``count`` classes."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "num_classes":
                node[key] = count
            else:
                _set_num_classes(value, count)
    elif isinstance(node, list):
        for value in node:
            _set_num_classes(value, count)


def build_config(base: ModelSpec, classes: tuple[str, ...], train: Path, val: Path,
                 epochs: int, image_size: int, device: str, work_dir: Path):
    """The base model's config, for ``classes`` and small data (see the module's docstring)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(base.config))
    _set_num_classes(cfg.model, len(classes))
    cfg.model.data_preprocessor.pop("batch_augments", None)
    scale = (image_size, image_size)
    masks = any(step.get("with_mask") for step in cfg.get("train_pipeline", ())
                if step["type"] == "LoadAnnotations")  # the base model learns masks
    load = dict(type="LoadAnnotations", with_bbox=True, with_mask=masks)
    meta = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")
    train_pipeline = [dict(type="LoadImageFromFile"), load,
                      dict(type="Resize", scale=scale, keep_ratio=True),
                      dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
    val_pipeline = [dict(type="LoadImageFromFile"),
                    dict(type="Resize", scale=scale, keep_ratio=True), load,
                    dict(type="PackDetInputs", meta_keys=meta)]
    test_pipeline = [dict(type="LoadImageFromFile"),
                     dict(type="Resize", scale=scale, keep_ratio=True),
                     dict(type="PackDetInputs", meta_keys=meta)]

    def dataset(annotations: Path, pipeline: list) -> dict:
        return dict(type="CocoDataset", data_root=str(annotations.parent),
                    ann_file=annotations.name, data_prefix=dict(img=""),
                    metainfo=dict(classes=classes), pipeline=pipeline,
                    filter_cfg=dict(filter_empty_gt=False))

    def loader(annotations: Path, pipeline: list, shuffle: bool) -> dict:
        return dict(batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
                    sampler=dict(type="DefaultSampler", shuffle=shuffle),
                    dataset=dataset(annotations, pipeline))
    cfg.train_dataloader = loader(train, train_pipeline, shuffle=True)
    cfg.val_dataloader = loader(val, val_pipeline, shuffle=False)
    cfg.test_dataloader = loader(val, test_pipeline, shuffle=False)
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type="CocoMetric", ann_file=str(val), metric=["bbox", "segm"] if masks else "bbox")
    # Validated once, after training (below), not by the loop as well.
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                         val_interval=epochs + 1)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
        dict(type="CosineAnnealingLR", eta_min=1e-4, begin=0, end=epochs, T_max=epochs,
             by_epoch=True)]
    cfg.optim_wrapper = dict(type="OptimWrapper",
                             optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.05))
    cfg.custom_hooks = []  # the base's (EMA, Mosaic switches) are for 300 epochs of COCO
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=5)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=epochs)
    cfg.load_from = str(base.require_checkpoint())
    cfg.work_dir = str(work_dir)
    cfg.device = device
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=64)
    return cfg


def finetune(settings: Settings, name: str, base_name: str, train_json: Path,
             val_json: Path | None, epochs: int, image_size: int) -> dict:
    """Train ``name`` from ``base_name`` on the dataset; register it; return what was
    measured (mAP, training seconds, classes)."""
    import torch  # noqa: F401  (before mmengine: its optional imports want it)
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    registry = load_registry(settings.models_file, settings.checkpoints_dir)
    if name in registry:
        raise DatasetError(f"a model named {name!r} exists already; choose another name")
    if base_name not in registry or registry[base_name].backend != "mmdet":
        raise DatasetError(f"no mmdet model {base_name!r}; choose one of "
                           f"{sorted(n for n, s in registry.items() if s.backend == 'mmdet')}")
    base = registry[base_name]
    if not base.available:
        raise DatasetError(f"the base model {base_name} has no weights at {base.checkpoint} "
                           f"(run: python mmdetectionl.py download {base_name})")
    train = check_dataset(train_json)
    work_dir = Path(tempfile.mkdtemp(prefix=f"finetune-{name}-", dir=settings.checkpoints_dir))
    try:
        if val_json is None:
            train_path, val_path = split_off_validation(train, work_dir)
        else:
            val = check_dataset(val_json)
            if val.classes != train.classes:
                raise DatasetError("the validation set's categories differ from the training "
                                   "set's")
            train_path, val_path = train.path, val.path
        from .worker.detector import resolve_device
        register_all_modules()
        cfg = build_config(base, train.classes, train_path, val_path, epochs, image_size,
                           resolve_device(settings.device), work_dir)
        started = time.monotonic()
        runner = Runner.from_cfg(cfg)
        runner.train()
        seconds = time.monotonic() - started
        metrics = runner.val_loop.run() if runner.val_loop else {}
        checkpoint = settings.checkpoints_dir / f"{name}.pth"
        config = settings.checkpoints_dir / f"{name}.py"
        save_weights(work_dir / f"epoch_{epochs}.pth", checkpoint)
        cfg.dump(str(config))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    box_map = float(metrics.get("coco/bbox_mAP_50", 0.0))
    register(settings.models_file, name, config, checkpoint, train.classes,
             f"fine-tuned from {base_name} on {train.images} images: bbox mAP@0.5 "
             f"{box_map:.2f}", base.timeout_seconds)
    return {"name": name, "classes": train.classes, "seconds": seconds,
            "bbox_mAP_50": box_map, "metrics": dict(metrics)}


def save_weights(trained: Path, checkpoint: Path) -> None:
    """The weights and the class names of a training checkpoint, as the zoo's are (the rest,
    optimizer and log history, is pickled objects a weights-only load refuses)."""
    import torch
    state = torch.load(trained, map_location="cpu", weights_only=False)  # ours, just written
    with atomic_path(checkpoint) as temp:
        torch.save({"state_dict": state["state_dict"],
                    "meta": {"dataset_meta": state["meta"]["dataset_meta"]}}, temp)


def register(models_file: Path, name: str, config: Path, checkpoint: Path,
             classes: tuple[str, ...], hint: str, timeout_seconds: float | None) -> None:
    """Add the model's table to models.toml (atomically: web and workers read it again)."""
    table = [f"\n[{name}]", f"config = {json.dumps(str(config))}",
             f"checkpoint = {json.dumps(str(checkpoint))}",
             f"classes = {json.dumps(list(classes))}", f"hint = {json.dumps(hint)}"]
    if timeout_seconds:
        table.append(f"timeout_seconds = {timeout_seconds}")
    write_atomically(models_file, models_file.read_bytes() + ("\n".join(table) + "\n").encode())
