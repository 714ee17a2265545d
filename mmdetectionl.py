"""The detection side of the service.

    python mmdetectionl.py SID [THRESHOLD]   detect one stored upload in the foreground (the
                                             original signature; same as `detect SID THRESHOLD`)
    python mmdetectionl.py worker [--daemon] run the detection daemon (web.py starts it with
                                             --daemon); with queue = rq, an RQ worker
    python mmdetectionl.py download NAME     fetch a model's checkpoint from mmdet's zoo
    python mmdetectionl.py list              the configured models and whether they are installed
"""
from __future__ import annotations

import warnings

# Pyramid 2.0 still imports pkg_resources; setuptools warns about it on every start.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from detection.finetune.schedule import DEFAULT_TIME_BUDGET
from detection.jobs.job import Job
from detection.jobs.layout import SID_PATTERN
from detection.jobs.records import JobRecords
from detection.models import ModelsFile, load_registry
from detection.settings import Settings, load_settings

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "production.ini"
COMMANDS = ("detect", "worker", "download", "list", "finetune", "dataset", "train", "promote")


def detect(settings: Settings, sid: str, threshold: float | None, model: str | None) -> int:
    from detection.images import limit_decoding, read_png
    from detection.worker.handlers import Work, handler_for
    from detection.worker.model_cache import ModelCache
    if not SID_PATTERN.fullmatch(sid):
        sys.exit(f"not a job id: {sid!r} (32 hex digits)")
    records = JobRecords(settings.uploads_dir)
    if not records.input_path(sid).is_file():
        sys.exit(f"no stored upload {records.input_path(sid)}")
    limit_decoding(settings.max_pixels)
    job = Job.detect(sid, model or settings.default_model,
                     settings.default_threshold if threshold is None else threshold)
    models = ModelCache(ModelsFile(settings.models_file, settings.checkpoints_dir), settings)
    work = Work(models, read_input=lambda job: read_png(records.input_path(job.sid)))
    [outcome] = handler_for(job.kind).run([job], work)
    if outcome.error is not None:  # said, not recorded: the upload may be a queued job's
        sys.exit(f"{sid}: {outcome.error}")
    records.record(job, outcome, durable=True)
    print(json.dumps(outcome.result, indent=2))
    return 0


def download(settings: Settings, name: str, force: bool) -> int:
    from detection.zoo import DownloadError, install
    registry = load_registry(settings.models_file, settings.checkpoints_dir)
    if name not in registry:
        sys.exit(f"unknown model {name!r}; configured: {', '.join(registry)}")
    spec = registry[name]
    if spec.backend != "mmdet":
        if not spec.available:
            sys.exit(f"{name}: its weights come with facenet-pytorch; run the install command")
        print(f"{name}: nothing to download (its weights are at {spec.checkpoint})")
        return 0
    if spec.available and not force:
        print(f"{name}: already installed at {spec.checkpoint}")
        return 0
    if not spec.weights_url:
        sys.exit(f"mmdet's zoo publishes no checkpoint for {spec.config.name}; "
                 f"put one at {spec.checkpoint}")
    try:
        install(spec.weights_url, spec.checkpoint)  # with a progress bar
    except DownloadError as error:
        sys.exit(str(error))
    print(f"{name}: saved {spec.checkpoint}")
    return 0


def list_models(settings: Settings) -> int:
    registry = load_registry(settings.models_file, settings.checkpoints_dir)
    for spec in registry.values():
        default = " (default)" if spec.name == settings.default_model else ""
        state = "installed" if spec.available else "missing: run download"
        ap = f"box AP {spec.box_ap}" if spec.box_ap else "box AP ?"
        print(f"{spec.name:18} {ap:12} {state:22} {spec.hint}{default}")
    return 0


def dataset_command(settings: Settings, arguments: argparse.Namespace) -> int:
    from detection.datasets.annotations import BadAnnotation
    from detection.datasets.archive import ArchiveLimits
    from detection.datasets.coco_files import export_coco, import_coco, import_zip
    from detection.datasets.store import DatasetLimits, DatasetStore
    from detection.finetune import FinetuneError
    from detection.image_checks import BadImage
    store = DatasetStore(settings.datasets_dir, DatasetLimits.of(settings))
    try:
        if arguments.action == "import":
            if arguments.path.suffix.lower() == ".zip":
                with open(arguments.path, "rb") as body:
                    added = import_zip(store, arguments.name, body, ArchiveLimits.of(settings),
                                       settings.max_pixels)
            else:
                added = import_coco(store, arguments.name, arguments.path.resolve(),
                                    settings.max_pixels)
            print(f"{arguments.name}: {added} images added")
        elif arguments.action == "export":
            print(export_coco(store, arguments.name, arguments.path))
        else:
            for name in store.names():
                summary = store.summary(name)
                print(f"{name:24} {summary['images']:6} images  classes: "
                      f"{', '.join(summary['classes'])}")
    except (FinetuneError, BadAnnotation, BadImage, LookupError, ValueError, OSError) as error:
        sys.exit(f"dataset {arguments.action}: {error}")
    return 0


def train_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """A training job run in the foreground (no queue): the version it makes, as JSON."""
    from detection.jobs.job import BadJob, JobKind, TrainOptions, new_sid
    from detection.worker.handlers import Work, handler_for
    from detection.worker.model_cache import ModelCache
    logging.basicConfig(level=logging.WARNING)
    try:
        options = TrainOptions.from_fields({
            "dataset": arguments.dataset, "name": arguments.name, "epochs": arguments.epochs,
            "time_budget": arguments.time_budget, "seed": arguments.seed})
    except BadJob as error:
        sys.exit(f"train: {str(error).replace('its ', 'the ', 1)}")
    job = Job.train(new_sid(), arguments.base, options)
    models = ModelCache(ModelsFile(settings.models_file, settings.checkpoints_dir), settings)
    work = Work(models, read_input=lambda job: None,
                report_progress=lambda job, progress: print(
                    f"{progress.fraction:4.0%} {progress.stage}", file=sys.stderr, flush=True))
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the result's; mmengine talks
        [outcome] = handler_for(JobKind.TRAIN).run([job], work)
    if outcome.error is not None:
        sys.exit(f"train: {outcome.error}")
    print(json.dumps(outcome.result, indent=2))
    return 0


def promote_command(settings: Settings, name: str, number: int) -> int:
    from detection.finetune.versions import NotTaught, UnknownVersion, Versions
    versions = Versions(settings.checkpoints_dir, settings.models_file)
    try:
        base = load_registry(settings.models_file, settings.checkpoints_dir).get(
            versions.info(name, number).get("base", ""))
        versions.promote(name, number, base)
    except (UnknownVersion, NotTaught) as error:
        sys.exit(f"promote: {name}@{number}: {error}")
    print(f"{name}: serving {name}@{number}")
    return 0


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    first = 2 if argv[:1] == ["--config"] else 1 if argv[:1] and argv[0].startswith("--config=") else 0
    rest = argv[first:]
    if rest and not rest[0].startswith("-") and rest[0] not in COMMANDS:
        argv = [*argv[:first], "detect", *rest]  # the original `mmdetectionl.py SID THRESHOLD`
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="the service's .ini settings (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("detect", help="detect one stored upload in the foreground")
    one.add_argument("sid", help="the job id (uploads/<sid>.png)")
    one.add_argument("threshold", nargs="?", type=float, help="score threshold (default: settings)")
    one.add_argument("--model", help="model name (default: settings)")
    worker = commands.add_parser("worker", help="run the detection daemon (with queue = rq: "
                                 "an RQ worker)")
    worker.add_argument("--daemon", action="store_true", help="detach with python-daemon")
    worker.add_argument("--lane", choices=("detect", "long"), help="queue = rq: take only this "
                        "lane's jobs (detections, or long jobs such as downloads); default both, "
                        "detections first")
    fetch = commands.add_parser("download", help="download a model's checkpoint")
    fetch.add_argument("name")
    fetch.add_argument("--force", action="store_true", help="download even if present")
    commands.add_parser("list", help="list the configured models")
    tune = commands.add_parser("finetune", help="train a model for your classes (COCO JSON)")
    tune.add_argument("name", help="the new model's name")
    tune.add_argument("--base", required=True, help="the model to start from (e.g. yolox_nano)")
    tune.add_argument("--train", required=True, type=Path, help="COCO annotations (boxes; "
                      "masks for a mask model); image paths relative to the file")
    tune.add_argument("--val", type=Path, help="validation annotations (default: a quarter of "
                      "the training images)")
    tune.add_argument("--epochs", type=int, help="default: enough for 400 batches of 8 "
                      "images (12 to 300), stopped early when validation stops improving")
    tune.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET,
                      metavar="SECONDS",
                      help=f"stop training after this long (default {DEFAULT_TIME_BUDGET:.0f}; "
                      "0: no limit)")
    tune.add_argument("--image-size", type=int, default=320, help="training and serving size")
    tune.add_argument("--seed", type=int, default=0, help="the same seed and data train the "
                      "same model; another seed, another try")
    data = commands.add_parser("dataset", help="the service's datasets: import or export "
                               "COCO files, list them")
    data.add_argument("action", choices=("import", "export", "list"))
    data.add_argument("name", nargs="?", help="the dataset (import creates it if needed)")
    data.add_argument("path", nargs="?", type=Path, help="import: a COCO annotation file, or "
                      "a zip of one and its images; export: a folder for annotations.json and "
                      "images/")
    teach = commands.add_parser("train", help="train a dataset into a new version NAME@K of a "
                                "model (in the foreground; the API queues it as a job)")
    teach.add_argument("name", help="the taught model (new, or one taught before)")
    teach.add_argument("--dataset", required=True)
    teach.add_argument("--base", required=True, help="the model to start from")
    teach.add_argument("--epochs", type=int, help="default: from the dataset's size")
    teach.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET,
                       metavar="SECONDS", help=f"default {DEFAULT_TIME_BUDGET:.0f}; 0: no limit")
    teach.add_argument("--seed", type=int, default=0)
    promote = commands.add_parser("promote", help="serve version VERSION of a taught model")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    arguments = parser.parse_args(argv)
    if arguments.command == "dataset" and arguments.action != "list" and (
            not arguments.name or (arguments.path is None)):
        parser.error(f"dataset {arguments.action} needs a NAME and a PATH")
    return arguments


def finetune(settings: Settings, arguments: argparse.Namespace) -> int:
    from detection.finetune import FinetuneError
    from detection.finetune import finetune as train
    logging.basicConfig(level=logging.INFO)
    try:
        outcome = train(settings, arguments.name, arguments.base, arguments.train.resolve(),
                        arguments.val.resolve() if arguments.val else None, arguments.epochs,
                        arguments.image_size, arguments.seed, arguments.time_budget or None)
    except FinetuneError as error:
        sys.exit(f"finetune: {error}")
    print("\n".join(outcome.lines()))
    return 0


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    settings = load_settings(arguments.config)
    if arguments.command == "detect":
        logging.basicConfig(level=logging.WARNING)
        return detect(settings, arguments.sid, arguments.threshold, arguments.model)
    if arguments.command == "worker":
        from detection.telemetry import count_into
        count_into(settings.metrics_dir)  # before the worker's modules import the metrics
        from detection.jobs.locks import FileLock
        from detection.worker.daemon import run_daemon, supervise
        if arguments.daemon:
            run_daemon(settings)
            return 0
        if settings.queue == "rq":  # one of any number of workers, on any host that sees Redis
            from detection.logs import format_handlers
            from detection.worker.rq_worker import run
            logging.basicConfig(level=logging.INFO, stream=sys.stderr)
            format_handlers(settings.log_format)
            run(settings, lanes=(arguments.lane,) if arguments.lane else ("detect", "long"))
            return 0
        with FileLock(settings.daemon_lock_file) as lock:  # in the foreground (e.g. systemd)
            supervise(settings, lock, logging.StreamHandler(sys.stderr))
        return 0
    if arguments.command == "download":
        return download(settings, arguments.name, arguments.force)
    if arguments.command == "finetune":
        return finetune(settings, arguments)
    if arguments.command == "dataset":
        return dataset_command(settings, arguments)
    if arguments.command == "train":
        return train_command(settings, arguments)
    if arguments.command == "promote":
        return promote_command(settings, arguments.name, arguments.version)
    return list_models(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
