"""Fine-tuning a model of models.toml: checks, training with mmengine's ``Runner``, and what it
leaves (weights and config in ``checkpoints/``, a table in models.toml)."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


from ..jobs.atomic import atomic_path, write_atomically
from ..jobs.job import NAME  # a file name in checkpoints/, a URL segment
from ..jobs.locks import FileLock, holder_pid
from ..models import ModelSpec, load_registry
from ..settings import Settings
from .dataset import Dataset, FinetuneError, check_dataset, training_files
from .models_toml import ModelsFileError, add_table
from .report import Trained
from .schedule import Schedule
from .versions import Versions

WORK_PREFIX = "finetune-"  # training's own folder in checkpoints/, removed after


def finetune(settings: Settings, name: str, base_name: str, train_json: Path,
             val_json: Path | None, epochs: int | None = None, image_size: int = 320,
             seed: int = 0, time_budget: float | None = None) -> Trained:
    """Train ``name`` from ``base_name`` on the dataset (``epochs``, or as many as the
    dataset's size asks for: ``schedule.py``; within ``time_budget`` seconds if given); register
    it; return what was measured (``Trained``)."""
    check_options(epochs, image_size, seed, time_budget)
    if not NAME.fullmatch(name):
        raise FinetuneError(f"{name!r} cannot name a model: use letters, digits, _ and - "
                            "(at most 64)")
    with one_at_a_time(settings):
        base = _base_model(settings, name, base_name)
        checkpoint, config = _outputs(settings, name)
        outcome = train_model(settings, name, base, train_json, val_json, checkpoint, config,
                              epochs, image_size, seed, time_budget)
    scores = ", ".join(f"{kind} mAP@0.5 {value:.2f}" for kind, value in outcome.map50.items())
    register(settings.models_file, name, {
        "config": str(config), "checkpoint": str(checkpoint), "classes": list(outcome.classes),
        "masks": outcome.masks, "validation_map50": outcome.map50,
        "hint": f"fine-tuned from {base.name} on {outcome.images} images: {scores}",
        **({"timeout_seconds": base.timeout_seconds} if base.timeout_seconds else {})})
    return outcome


def check_options(epochs: int | None, image_size: int, seed: int,
                  time_budget: float | None) -> None:
    if (epochs is not None and not 1 <= epochs <= 1000) or not 64 <= image_size <= 2048 \
            or not 0 <= seed < 2**32 or (time_budget is not None and not time_budget > 0):
        raise FinetuneError("epochs must be 1 to 1000, the image size 64 to 2048 pixels, the "
                            "seed 0 to 4294967295, and the time budget more than 0 s")


@contextmanager
def one_at_a_time(settings: Settings) -> Iterator[None]:
    """One fine-tuning at a time per checkpoints folder: training takes the machine. What a
    killed one left (its work folders, a version it was making) goes first."""
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(settings.checkpoints_dir / ".finetune.lock")
    if not lock.acquire(attempts=1):
        raise FinetuneError(f"another fine-tuning is running (pid "
                            f"{holder_pid(lock.path)}); one at a time")
    try:
        for stale in settings.checkpoints_dir.glob(f"{WORK_PREFIX}*"):  # of a killed run
            shutil.rmtree(stale, ignore_errors=True)
        Versions(settings.checkpoints_dir, settings.models_file).forget_unfinished()
        yield
    finally:
        lock.release()


def train_model(settings: Settings, name: str, base: ModelSpec, train_json: Path,
                val_json: Path | None, checkpoint: Path, config: Path,
                epochs: int | None = None, image_size: int = 320, seed: int = 0,
                time_budget: float | None = None,
                progress: Callable[[float, str, dict], None] | None = None,
                cancelled: Callable[[], str | None] = lambda: None,
                shared: bool = False) -> Trained:
    """Train from ``base`` on the annotation files, and write the weights (the best
    validation's) to ``checkpoint`` and the served config to ``config``, each whole or not at
    all; ``progress(fraction, stage, details)`` is told how far it is, and ``cancelled()``
    asked whether to stop (``JobCancelled``). ``shared``: it shares the machine with
    detection, and its time budget counts the CPU it got (``hooks.cpu_clock``), not the wall
    clock (at most 3 times it; on a GPU, the wall clock). The caller holds
    ``one_at_a_time``."""
    _choose_device(settings.device)
    from mmengine.config import Config

    from .config import learns_masks
    cfg = Config.fromfile(str(base.config))
    masks = learns_masks(cfg)
    train = check_dataset(train_json, masks)
    val = check_dataset(val_json, masks) if val_json else None
    outcome = _train(settings, name, base, cfg, masks, train, val, epochs, image_size, seed,
                     time_budget, checkpoint, config, progress, cancelled, shared)
    outcome.plot(checkpoint.with_suffix(".curve.png"))
    return outcome


def _base_model(settings: Settings, name: str, base_name: str) -> ModelSpec:
    """The base model, once ``name`` is known to be new."""
    registry = load_registry(settings.models_file, settings.checkpoints_dir)
    if name in registry:
        raise FinetuneError(f"a model named {name!r} exists already; choose another name")
    taken = [path for path in _outputs(settings, name) if path.exists()]
    if taken:
        raise FinetuneError(f"{taken[0]} exists already (another model's?); choose another name")
    if base_name not in registry or registry[base_name].backend != "mmdet":
        raise FinetuneError(f"no mmdet model {base_name!r}; choose one of "
                            f"{sorted(n for n, s in registry.items() if s.backend == 'mmdet')}")
    base = registry[base_name]
    if not base.available:
        raise FinetuneError(f"the base model {base_name} has no weights at {base.checkpoint} "
                            f"(run: python mmdetectionl.py download {base_name})")
    return base


def _outputs(settings: Settings, name: str) -> tuple[Path, Path]:
    """The model's weights and config."""
    return settings.checkpoints_dir / f"{name}.pth", settings.checkpoints_dir / f"{name}.py"


def _choose_device(setting: str) -> None:
    """mmengine trains on the first GPU it sees, or on the CPU when it sees none (decided when
    it is imported): it sees only the one the ``device`` setting names (``cuda:N``: the Nth of
    those CUDA_VISIBLE_DEVICES lists, as torch counts them)."""
    if setting == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif setting.startswith("cuda:"):
        index = setting.removeprefix("cuda:")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible and index.isdigit() and int(index) < len(visible.split(",")):
            index = visible.split(",")[int(index)]
        os.environ["CUDA_VISIBLE_DEVICES"] = index


def _train(settings: Settings, name: str, base: ModelSpec, cfg, masks: bool, train: Dataset,
           val: Dataset | None, epochs: int | None, image_size: int, seed: int,
           time_budget: float | None, checkpoint: Path, config: Path,
           progress: Callable[[float, str, dict], None] | None,
           cancelled: Callable[[], str | None], shared: bool) -> Trained:
    import torch  # (before mmengine's runner: its optional imports want it)
    from mmdet.utils import register_all_modules
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import Runner

    from .config import build_config, served_config
    from .hooks import ProgressReport, TimeBudget, ValidationCurve, cpu_clock
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{name.replace('@', '-v')}-",
                                     dir=settings.checkpoints_dir))
    try:
        train_path, val_path, trained_on = training_files(train, val, work_dir)
        schedule = Schedule.plan(trained_on, epochs, time_budget)
        register_all_modules()
        build_config(cfg, train.classes, masks, train_path, val_path, schedule, image_size,
                     seed, base.require_checkpoint(), work_dir)
        started = time.monotonic()
        runner = Runner.from_cfg(cfg)
        curve = ValidationCurve()
        runner.register_hook(curve)
        on_cpu = not torch.cuda.is_available()  # (a GPU's training takes one core)
        clock = cpu_clock() if shared and on_cpu else None  # None: the wall clock
        budget = TimeBudget(schedule.time_budget, clock) if schedule.time_budget else None
        if budget:
            runner.register_hook(budget)
        if progress is not None:
            runner.register_hook(ProgressReport(progress, schedule.time_budget, cancelled,
                                                clock, curve))
        runner.train()
        if curve.last_epoch != runner.epoch:  # stopped between validations: where it ended too
            runner.val_loop.run()
        seconds = time.monotonic() - started
        best = next(hook for hook in runner.hooks if isinstance(hook, CheckpointHook))
        if best.best_ckpt_path is None:  # no validation found anything: the last weights
            runner.save_checkpoint(str(work_dir), "last.pth", save_optimizer=False,
                                   save_param_scheduler=False)
        save_weights(Path(best.best_ckpt_path or work_dir / "last.pth"), checkpoint)
        write_atomically(config, served_config(cfg, train.classes).pretty_text.encode(),
                         durable=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return Trained.of(name, train.classes, masks, curve.points, seconds, trained_on,
                      (runner.epoch, schedule.epochs), budget is not None and budget.spent)


def save_weights(trained: Path, checkpoint: Path) -> None:
    """The weights and the class names of a training checkpoint, as the zoo's are (the rest,
    optimizer and log history, is pickled objects a weights-only load refuses)."""
    import torch
    state = torch.load(trained, map_location="cpu", weights_only=False)  # ours, just written
    with atomic_path(checkpoint, durable=True) as temp:
        torch.save({"state_dict": state["state_dict"],
                    "meta": {"dataset_meta": state["meta"]["dataset_meta"]}}, temp)


def register(models_file: Path, name: str, table: dict) -> None:
    """Add ``[name]`` to models.toml (the running service reads it again)."""
    try:
        add_table(models_file, name, table)
    except ModelsFileError as error:  # added by hand while it trained
        raise FinetuneError(f"{error}: the trained model is in checkpoints/; add its table "
                            "by hand") from None


def evaluate(settings: Settings, config: Path, checkpoint: Path, annotations: Path,
             classes: tuple[str, ...]) -> dict[str, float]:
    """A trained model's (its served config and weights) bbox mAP@0.5, mAP and AP per class on
    the images of a COCO annotation file, by mmdet's CocoMetric: how a new version and the
    served one are compared on the same held-out images."""
    _choose_device(settings.device)
    import torch  # noqa: F401  (before mmengine's runner: its optional imports want it)
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.runner import Runner
    register_all_modules()
    cfg = Config.fromfile(str(config))
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}evaluate-",
                                     dir=settings.checkpoints_dir))
    try:
        cfg.test_dataloader = dict(
            batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dict(type="CocoDataset", data_root=str(annotations.parent),
                         ann_file=annotations.name, data_prefix=dict(img=""),
                         metainfo=dict(classes=classes), pipeline=cfg.test_pipeline,
                         test_mode=True))
        cfg.test_evaluator = dict(type="CocoMetric", ann_file=str(annotations), metric="bbox",
                                  classwise=True)
        cfg.test_cfg = dict(type="TestLoop")
        cfg.load_from = str(checkpoint)
        cfg.work_dir = str(work_dir)
        cfg.experiment_name = work_dir.name  # its own logger and visualizer (config.py)
        metrics = Runner.from_cfg(cfg).test()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"bbox_map50": round(float(metrics.get("coco/bbox_mAP_50", 0.0)), 3),
            "bbox_map": round(float(metrics.get("coco/bbox_mAP", 0.0)), 3),
            # None: no held-out box of that class (CocoMetric says nan, which JSON has not)
            "per_class": {c: _finite(metrics[f"coco/{c}_precision"]) for c in classes
                          if f"coco/{c}_precision" in metrics}}


def _finite(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(float(value)) else None
