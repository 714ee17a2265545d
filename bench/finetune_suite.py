"""Fine-tuning's defaults on data the project was not made on: each dataset of
``bench/synthetic.py``'s suite trained from YOLOX-Nano (the real COCO checkpoint in ../shared)
with ``mmdetectionl.py finetune`` as a user runs it, then the served model tried on a new image
with one clear object.

    .venv/bin/python bench/finetune_suite.py --label new                  (the defaults)
    .venv/bin/python bench/finetune_suite.py --label old -- --epochs 20   (options passed on)
    .venv/bin/python bench/finetune_suite.py --ablate no-ema    (bench/finetune_ablation.py)

Each run adds its rows to artifacts/finetune-suite/results.json; ``--output`` writes them all
as a table into docs/finetuning.md (between its suite markers).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune_ablation import CHOICES  # noqa: E402
from bench.synthetic import SUITE, clear_photo, make_suite_dataset  # noqa: E402
from tests.support import SHARED_CHECKPOINT, write_config  # noqa: E402

WORK = ROOT / "artifacts" / "finetune-suite"
BEGIN, END = "<!-- suite: begin -->", "<!-- suite: end -->"


def clear_object_score(ini: Path, name: str, photo: bytes, label: str) -> float:
    """The served model's best score for ``label`` on ``photo`` (0: not found)."""
    import io

    from PIL import Image

    from detection.models import load_registry
    from detection.settings import load_settings
    from detection.worker.detectors.mmdet_detector import MMDetDetector
    settings = load_settings(ini)
    spec = load_registry(settings.models_file, settings.checkpoints_dir)[name]
    detector = MMDetDetector(spec, "cpu")
    image = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    return max((d.score for d in detector.detect(image, 0.05) if d.label == label), default=0.0)


def run_finetune(ini: Path, name: str, train: Path, val: Path, options: list[str],
                 ablate: str | None) -> subprocess.CompletedProcess:
    """``mmdetectionl.py finetune`` as a user runs it (or with one choice changed)."""
    program = ["bench/finetune_ablation.py", ablate] if ablate else ["mmdetectionl.py"]
    return subprocess.run([sys.executable, *program, "--config", str(ini), "finetune", name,
                           "--base", "yolox_nano", "--train", str(train), "--val", str(val),
                           *options], cwd=ROOT, capture_output=True, text=True, timeout=900)


def run(name: str, label: str, options: list[str], ablate: str | None) -> dict:
    data = WORK / "data" / name
    if not (data / "val" / "annotations.json").exists():
        make_suite_dataset(name, data)
    directory = WORK / "runs" / label / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    ini = write_config(directory, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    started = time.monotonic()
    done = run_finetune(ini, name.replace("-", "_"), data / "train" / "annotations.json",
                        data / "val" / "annotations.json", options, ablate)
    seconds = time.monotonic() - started
    if done.returncode:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        done.check_returncode()
    print(done.stdout.strip().splitlines()[-1], flush=True)
    found = re.search(r"bbox mAP@0.5 ([\d.]+)", done.stdout)
    overall = re.search(r"bbox mAP ([\d.]+)", done.stdout)
    photo, cls = clear_photo(name)
    changed = [f"ablate {ablate}"] if ablate else []
    return {"dataset": name, "label": label,
            "options": " ".join(changed + options) or "(defaults)",
            "train": SUITE[name].train, "seconds": round(seconds),
            "map50": float(found.group(1)) if found else 0.0,
            "map": float(overall.group(1)) if overall else None,
            "clear_score": round(clear_object_score(ini, name.replace("-", "_"), photo, cls), 2)}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | images (train) | options | mAP@0.5 | mAP | command, s | clear object's "
             "score |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (list(SUITE).index(r["dataset"]), r["label"])):
        overall = "" if r["map"] is None else f"{r['map']:.3f}"
        lines.append(f"| {r['dataset']} | {r['train']} | {r['label']}: `{r['options']}` | "
                     f"{r['map50']:.3f} | {overall} | {r['seconds']} | {r['clear_score']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", help="the row's name (old, new, ...; default: the ablation)")
    parser.add_argument("--ablate", choices=CHOICES, help="one choice of the defaults changed")
    parser.add_argument("--datasets", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--output", type=Path, help="write the table into this markdown file")
    parser.add_argument("options", nargs="*", help="finetune options (after --)")
    args = parser.parse_args()
    label = args.label or args.ablate or parser.error("give --label or --ablate")
    if not SHARED_CHECKPOINT.is_file():
        sys.exit(f"needs the real YOLOX-Nano checkpoint at {SHARED_CHECKPOINT}")
    results_file = WORK / "results.json"
    WORK.mkdir(parents=True, exist_ok=True)
    rows = json.loads(results_file.read_text()) if results_file.exists() else []
    for name in args.datasets:
        row = run(name, label, args.options, args.ablate)
        rows = [r for r in rows if (r["dataset"], r["label"]) != (name, label)] + [row]
        results_file.write_text(json.dumps(rows, indent=1))
    report = table(rows)
    print(report)
    if args.output:
        text = args.output.read_text()
        block = f"{BEGIN}\n{report}{END}"
        text = (re.sub(f"{re.escape(BEGIN)}.*{re.escape(END)}", lambda _: block, text, flags=re.S)
                if BEGIN in text else text + "\n" + block + "\n")
        args.output.write_text(text)


if __name__ == "__main__":
    main()
