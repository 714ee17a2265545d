"""Fine-tuning's schedule, time budget and report, without training."""
from types import SimpleNamespace

import pytest
from PIL import Image

from detection.finetune import hooks
from detection.finetune.report import WEAK_MAP50, Trained
from detection.finetune.schedule import MAX_EPOCHS, MIN_EPOCHS, MIN_ITERATIONS, Schedule


@pytest.mark.parametrize("images", [8, 30, 50, 200, 1000, 100_000])
def test_epochs_follow_the_datasets_size_in_batches(images):
    schedule = Schedule.plan(images)
    batches = schedule.epochs * -(-images // 8)
    assert MIN_EPOCHS <= schedule.epochs <= MAX_EPOCHS
    assert batches >= MIN_ITERATIONS or schedule.epochs == MAX_EPOCHS
    assert batches < MIN_ITERATIONS + -(-images // 8) or schedule.epochs == MIN_EPOCHS
    assert 8 <= schedule.epochs / schedule.validate_every <= 12  # about ten validations


def test_given_epochs_and_budget_are_kept():
    assert Schedule.plan(50, epochs=3, time_budget=60) == Schedule(3, 1, 60)


def runner(epoch: int, max_epochs: int = 10):
    return SimpleNamespace(epoch=epoch, max_epochs=max_epochs,
                           train_loop=SimpleNamespace(stop_training=False))


def test_the_time_budget_stops_before_an_epoch_that_would_end_past_it(monkeypatch):
    clock = iter([0.0, 25.0, 52.0])
    monkeypatch.setattr(hooks.time, "monotonic", lambda: next(clock))
    budget = hooks.TimeBudget(75)
    budget.before_train(runner(0))
    first = runner(0)  # the loop counts an epoch after its hooks: one done
    budget.after_train_epoch(first)
    assert not first.train_loop.stop_training  # 25 s an epoch: a second ends at 50
    second = runner(1)
    budget.after_train_epoch(second)
    assert second.train_loop.stop_training and budget.spent  # a third would end at 78


def test_the_last_epoch_is_never_stopped_by_the_budget(monkeypatch):
    monkeypatch.setattr(hooks.time, "monotonic", iter([0.0, 100.0]).__next__)
    budget = hooks.TimeBudget(10)
    budget.before_train(runner(0))
    last = runner(9)
    budget.after_train_epoch(last)
    assert not last.train_loop.stop_training and not budget.spent


def metrics(map50: float, overall: float, **per_class: float) -> dict:
    return {"coco/bbox_mAP_50": map50, "coco/bbox_mAP": overall,
            **{f"coco/{c}_precision": ap for c, ap in per_class.items()}}


def trained(points, masks=False) -> Trained:
    return Trained.of("mine", ("star", "ring"), masks, points, 61.0, 50, (40, 58))


def test_the_report_keeps_the_first_best_validation_and_its_per_class_ap(tmp_path):
    outcome = trained([(6, metrics(0.4, 0.2, star=0.3, ring=0.1)),
                       (12, metrics(0.8, 0.5, star=0.6, ring=0.4)),
                       (18, metrics(0.8, 0.6, star=0.7, ring=0.5)),
                       (24, metrics(0.7, 0.5, star=0.6, ring=0.4))])
    assert outcome.best_epoch == 12 and outcome.map50 == {"bbox": 0.8} and outcome.map == 0.5
    assert outcome.per_class == {"star": 0.6, "ring": 0.4} and outcome.warning is None
    lines = outcome.lines()
    assert lines[0].startswith("validation:") and "<- kept" in lines[2]
    assert lines[-2] == "AP per class: star 0.600, ring 0.400"
    assert "(40 of 58 epochs, the best at 12 kept)" in lines[-1]
    assert "bbox mAP@0.5 0.800, bbox mAP 0.500" in lines[-1]
    outcome.plot(tmp_path / "mine.curve.png")
    with Image.open(tmp_path / "mine.curve.png") as plot:
        assert plot.format == "PNG" and plot.size == (600, 350)


def test_a_weak_result_is_told_with_what_to_try():
    outcome = trained([(6, metrics(WEAK_MAP50 - 0.01, 0.2, star=0.3, ring=0.05))])
    assert outcome.warning.startswith(f"weak result: bbox mAP@0.5 {WEAK_MAP50 - 0.01:.2f}")
    assert "above all of ring, star" in outcome.warning and "--time-budget" in outcome.warning
    assert outcome.lines()[-2] == f"warning: {outcome.warning}"


def test_validations_that_found_nothing_report_zero_and_warn():
    outcome = trained([(6, {}), (12, {})], masks=True)
    assert outcome.best_epoch == 6 and outcome.map50 == {"bbox": 0.0, "segm": 0.0}
    assert outcome.warning and "bbox mAP@0.5 0.000, segm mAP@0.5 0.000" in outcome.lines()[-1]


def test_a_budget_counted_in_cpu_seconds_runs_on_while_other_work_takes_the_cores():
    """A shared training's clock is its CPU time over its threads: a process that sleeps (as
    one starved by detection jobs waits) spends none of it; one that computes does."""
    import time

    import torch
    clock = hooks.cpu_clock(most_stretch=1e9)
    start = clock()
    time.sleep(0.3)
    assert clock() - start < 0.05
    computed, deadline = time.process_time(), time.monotonic() + 30
    while time.process_time() - computed < 0.3 and time.monotonic() < deadline:
        pass  # 0.3 s of CPU, however long a busy machine takes to give it
    assert clock() - start >= 0.3 / torch.get_num_threads() - 0.01
    budget = hooks.TimeBudget(1.0, clock)
    budget.before_train(runner(0))
    time.sleep(1.2)  # a second of wall time, no CPU: not spent
    stopped = runner(0)
    budget.after_train_epoch(stopped)
    assert not stopped.train_loop.stop_training and not budget.spent


def test_a_cpu_budget_stretches_at_most_so_many_times_the_wall_clock():
    import time
    clock = hooks.cpu_clock(most_stretch=2.0)
    start = clock()
    time.sleep(0.4)  # no CPU, but the wall clock over 2 moves on
    assert 0.19 <= clock() - start < 0.4


def test_a_budget_that_cut_the_schedule_short_is_told():
    points = [(4, metrics(0.9, 0.6, star=0.7, ring=0.5))]
    short = Trained.of("mine", ("star", "ring"), False, points, 61.0, 50, (4, 58),
                       budget_spent=True)
    assert short.warning.startswith("cut short: its time budget stopped it after 4 of 58")
    assert "weak" not in short.warning
    assert Trained.of("mine", ("star", "ring"), False, points, 61.0, 50, (30, 58),
                      budget_spent=True).warning is None  # past half its schedule
    assert Trained.of("mine", ("star", "ring"), False, points, 61.0, 50, (4, 58)).warning \
        is None  # stopped early by patience, not by the budget
    weak = Trained.of("mine", ("star", "ring"), False, [(4, metrics(0.1, 0.0))], 61.0, 50,
                      (4, 58), budget_spent=True)
    assert weak.warning.startswith("cut short") and "weak result" in weak.warning
