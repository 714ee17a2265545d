"""What a fine-tuning reports, for its user to judge the model by: the best validation's mAP and
per-class AP, the validation curve (printed, and plotted beside the weights), and a warning with
what to try when the result is weak."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..jobs.atomic import atomic_path
from .schedule import MONITOR

WEAK_MAP50 = 0.5  # below this bbox mAP@0.5 on the validation images, the result is weak
SHORT_OF_SCHEDULE = 0.5  # a time budget that stopped it under this share of its epochs


@dataclass(frozen=True)
class Trained:
    name: str
    classes: tuple[str, ...]
    seconds: float
    images: int  # trained on
    epochs: tuple[int, int]  # trained, planned
    best_epoch: int  # the weights kept: its validation was the best
    map50: dict[str, float]  # bbox (and segm) mAP@0.5 at the best validation
    map: float  # its bbox mAP@[0.5:0.95]
    per_class: dict[str, float]  # its AP@[0.5:0.95] per class (segm's for a mask model)
    curve: tuple[tuple[int, float, float], ...]  # each validation: epoch, mAP@0.5, mAP
    budget_spent: bool = False  # its time budget stopped it (not its schedule, not patience)

    @classmethod
    def of(cls, name: str, classes: tuple[str, ...], masks: bool,
           points: list[tuple[int, dict]], seconds: float, images: int,
           epochs: tuple[int, int], budget_spent: bool = False) -> Trained:
        """From the validations' ``points`` (epoch, metrics), the best the first of the best,
        as the checkpoint hook keeps it."""
        best_epoch, best = max(points, key=lambda point: point[1].get(MONITOR, -1.0))
        return cls(
            name=name, classes=classes, seconds=seconds, images=images, epochs=epochs,
            best_epoch=best_epoch,
            map50={kind: round(best.get(f"coco/{kind}_mAP_50", 0.0), 3)  # none: no detections
                   for kind in (("bbox", "segm") if masks else ("bbox",))},
            map=round(best.get("coco/bbox_mAP", 0.0), 3),
            per_class={c: best[f"coco/{c}_precision"] for c in classes
                       if f"coco/{c}_precision" in best},
            curve=tuple((epoch, metrics.get(MONITOR, 0.0), metrics.get("coco/bbox_mAP", 0.0))
                        for epoch, metrics in points),
            budget_spent=budget_spent)

    @property
    def masks(self) -> bool:
        return "segm" in self.map50

    @property
    def warning(self) -> str | None:
        """What to try, when the model finds too little of its validation images, or its time
        budget stopped it far short of its schedule."""
        return " ".join(filter(None, (self._short_warning(), self._weak_warning()))) or None

    def _short_warning(self) -> str | None:
        trained, planned = self.epochs
        if not self.budget_spent or trained >= SHORT_OF_SCHEDULE * planned:
            return None
        return (f"cut short: its time budget stopped it after {trained} of {planned} epochs "
                "(the machine was busy, or the budget is small for this dataset); give it a "
                "longer time budget.")

    def _weak_warning(self) -> str | None:
        score = self.map50.get("bbox", 0.0)
        if score >= WEAK_MAP50:
            return None
        weakest = sorted(self.per_class, key=self.per_class.get)[:2]
        return (f"weak result: bbox mAP@0.5 {score:.2f} on the validation images (below "
                f"{WEAK_MAP50}); the model will miss or mislabel much. Try: more images (at "
                "least 30 per class, as varied as what it will see)"
                + (f", above all of {', '.join(weakest)}" if weakest else "")
                + ", more epochs (--epochs) or a longer --time-budget, or another --base "
                "(e.g. rtmdet_tiny).")

    def lines(self) -> list[str]:
        """The report, as the command prints it (its last line the summary)."""
        out = ["validation: epoch  mAP@0.5  mAP"]
        out += [f"  {epoch:>5}  {map50:7.3f}  {overall:5.3f}"
                + ("  <- kept" if epoch == self.best_epoch else "")
                for epoch, map50, overall in self.curve]
        if self.per_class:
            out.append("AP per class: " + ", ".join(f"{c} {ap:.3f}"
                                                    for c, ap in self.per_class.items()))
        if self.warning:
            out.append(f"warning: {self.warning}")
        scores = ", ".join(f"{kind} mAP@0.5 {value:.3f}" for kind, value in self.map50.items())
        trained, planned = self.epochs
        out.append(f"{self.name}: classes {', '.join(self.classes)}; trained on {self.images} "
                   f"images in {self.seconds:.0f} s ({trained} of {planned} epochs, the best "
                   f"at {self.best_epoch} kept); {scores}, bbox mAP {self.map:.3f} on the "
                   f"validation images. Served now as model {self.name} (also "
                   f"/v1/vision/custom/{self.name}).")
        return out

    def plot(self, path: Path) -> None:
        """The validation curve as a PNG (written whole or not at all)."""
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
        figure = Figure(figsize=(6, 3.5), dpi=100)
        axes = figure.add_subplot()
        epochs = [point[0] for point in self.curve]
        axes.plot(epochs, [point[1] for point in self.curve], marker="o", label="mAP@0.5")
        axes.plot(epochs, [point[2] for point in self.curve], marker="o", label="mAP")
        axes.axvline(self.best_epoch, color="grey", linestyle=":", label="kept")
        axes.set(xlabel="epoch", ylabel="validation (bbox)", ylim=(0, 1),
                 title=f"{self.name}: {self.images} training images")
        axes.legend(loc="lower right")
        figure.tight_layout()
        with atomic_path(path, durable=True) as temp:
            figure.savefig(temp, format="png")
