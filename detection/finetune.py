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
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .jobs.atomic import atomic_path, write_atomically
from .jobs.locks import FileLock, holder_pid
from .models import ModelSpec, load_registry
from .settings import Settings

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a file name in checkpoints/, a URL segment


class FinetuneError(ValueError):
    """Fine-tuning cannot start (bad dataset, name or base model); the message says why."""


@dataclass(frozen=True)
class Dataset:
    """A checked COCO annotation file: its classes, in category-id order, and its images."""
    path: Path
    classes: tuple[str, ...]
    images: int


def check_dataset(path: Path, masks: bool = False) -> Dataset:
    """Read and check a COCO annotation file: images on disk (relative to it), categories, boxes
    inside their images, and with ``masks`` a polygon or RLE segmentation for each box."""
    try:
        document = json.loads(path.read_bytes())
        images = {image["id"]: image for image in document["images"]}
        categories = sorted(document["categories"], key=lambda c: c["id"])
        annotations = document.get("annotations", [])
    except FileNotFoundError:
        raise FinetuneError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError) as error:
        raise FinetuneError(f"{path} is not a COCO annotation file ({type(error).__name__}: "
                           f"{error})") from None
    if not categories:
        raise FinetuneError(f"{path} has no categories")
    if not images:
        raise FinetuneError(f"{path} has no images")
    missing = [image["file_name"] for image in images.values()
               if not (path.parent / image["file_name"]).is_file()]
    if missing:
        raise FinetuneError(f"{len(missing)} images of {path} are missing (relative to its folder),"
                           f" e.g. {missing[0]}")
    for annotation in annotations:
        image = images.get(annotation.get("image_id"))
        x, y, width, height = annotation.get("bbox", (0, 0, 0, 0))
        if image is None or width <= 0 or height <= 0 or x < 0 or y < 0 \
                or x + width > image["width"] + 1 or y + height > image["height"] + 1:
            box = (x, y, width, height)
            raise FinetuneError(f"annotation {annotation.get('id')} of {path}: its box {box} "
                               "is empty or outside its image")
        if masks:
            problem = _segmentation_problem(annotation.get("segmentation"), image)
            if problem:
                raise FinetuneError(f"annotation {annotation.get('id')} of {path}: {problem} (the "
                                   "base model learns masks: each box needs its polygons or RLE)")
    return Dataset(path, tuple(str(c["name"]) for c in categories), len(images))


def _segmentation_problem(segmentation, image: dict) -> str | None:
    """What is wrong with a COCO segmentation (polygons or RLE) of ``image``, if anything."""
    if isinstance(segmentation, dict):  # RLE
        if list(segmentation.get("size", ())) != [image["height"], image["width"]] \
                or not isinstance(segmentation.get("counts"), (str, list)):
            return "its RLE mask needs counts and the image's size [height, width]"
        return None
    if not isinstance(segmentation, list) or not segmentation:
        return "it has no segmentation"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2 \
                or not all(isinstance(v, (int, float)) for v in polygon):
            return "a polygon needs 3 or more x, y points"
        if min(polygon) < 0 or max(polygon[0::2]) > image["width"] + 1 \
                or max(polygon[1::2]) > image["height"] + 1:
            return "a polygon goes outside its image"
    return None


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


def learns_masks(cfg) -> bool:
    """Whether a model config's own training loads masks (Mask R-CNN, RTMDet-Ins)."""
    return any(step.get("with_mask") for step in cfg.get("train_pipeline", ())
               if step["type"] == "LoadAnnotations")


def build_config(cfg, base: ModelSpec, classes: tuple[str, ...], train: Path, val: Path,
                 epochs: int, image_size: int, device: str, work_dir: Path):
    """The base model's config ``cfg`` (changed in place), for ``classes`` and small data (see
    the module's docstring)."""
    masks = learns_masks(cfg)
    _adapt_model(cfg.model, len(classes))
    cfg.model.data_preprocessor.pop("batch_augments", None)
    scale = (image_size, image_size)
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
    measured (mAP, training seconds, classes). One fine-tuning at a time per checkpoints
    folder: training takes the machine, and models.toml has one writer."""
    if not 1 <= epochs <= 1000 or not 64 <= image_size <= 2048:
        raise FinetuneError("epochs must be 1 to 1000, and the image size 64 to 2048 pixels")
    if not NAME.fullmatch(name):
        raise FinetuneError(f"{name!r} cannot name a model: use letters, digits, _ and - "
                            "(at most 64)")
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(settings.checkpoints_dir / ".finetune.lock")
    if not lock.acquire(attempts=1):
        raise FinetuneError(f"another fine-tuning is running (pid "
                            f"{holder_pid(lock.path)}); one at a time")
    try:
        base, cfg = _base_model(settings, name, base_name)
        masks = learns_masks(cfg)
        train = check_dataset(train_json, masks)
        val = check_dataset(val_json, masks) if val_json else None
        if val and val.classes != train.classes:
            raise FinetuneError("the validation set's categories differ from the training "
                                "set's")
        return _train(settings, name, base, cfg, train, val, epochs, image_size)
    finally:
        lock.release()


def _base_model(settings: Settings, name: str, base_name: str):
    """The base model's spec and mmdet config, once ``name`` is known to be new."""
    from mmengine.config import Config
    registry = load_registry(settings.models_file, settings.checkpoints_dir)
    if name in registry:
        raise FinetuneError(f"a model named {name!r} exists already; choose another name")
    if base_name not in registry or registry[base_name].backend != "mmdet":
        raise FinetuneError(f"no mmdet model {base_name!r}; choose one of "
                            f"{sorted(n for n, s in registry.items() if s.backend == 'mmdet')}")
    base = registry[base_name]
    if not base.available:
        raise FinetuneError(f"the base model {base_name} has no weights at {base.checkpoint} "
                            f"(run: python mmdetectionl.py download {base_name})")
    return base, Config.fromfile(str(base.config))


def _train(settings: Settings, name: str, base: ModelSpec, cfg, train: Dataset,
           val: Dataset | None, epochs: int, image_size: int) -> dict:
    import torch  # noqa: F401  (before mmengine: its optional imports want it)
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from .worker.detector import resolve_device
    work_dir = Path(tempfile.mkdtemp(prefix=f"finetune-{name}-", dir=settings.checkpoints_dir))
    try:
        train_path, val_path = (train.path, val.path) if val else \
            split_off_validation(train, work_dir)
        register_all_modules()
        build_config(cfg, base, train.classes, train_path, val_path, epochs, image_size,
                     resolve_device(settings.device), work_dir)
        started = time.monotonic()
        runner = Runner.from_cfg(cfg)
        runner.train()
        seconds = time.monotonic() - started
        metrics = runner.val_loop.run()
        checkpoint = settings.checkpoints_dir / f"{name}.pth"
        config = settings.checkpoints_dir / f"{name}.py"
        save_weights(work_dir / f"epoch_{epochs}.pth", checkpoint)
        write_atomically(config, cfg.pretty_text.encode(), durable=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    measured = {key: float(metrics[f"coco/{key}"])
                for key in ("bbox_mAP_50", "segm_mAP_50") if f"coco/{key}" in metrics}
    register(settings.models_file, name, config, checkpoint, train.classes,
             f"fine-tuned from {base.name} on {train.images} images: " + ", ".join(
                 f"{key[:4]} mAP@0.5 {value:.2f}" for key, value in measured.items()),
             base.timeout_seconds)
    return {"name": name, "classes": train.classes, "seconds": seconds, **measured,
            "metrics": dict(metrics)}


def save_weights(trained: Path, checkpoint: Path) -> None:
    """The weights and the class names of a training checkpoint, as the zoo's are (the rest,
    optimizer and log history, is pickled objects a weights-only load refuses)."""
    import torch
    state = torch.load(trained, map_location="cpu", weights_only=False)  # ours, just written
    with atomic_path(checkpoint, durable=True) as temp:
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
    write_atomically(models_file, models_file.read_bytes() + ("\n".join(table) + "\n").encode(),
                     durable=True)
