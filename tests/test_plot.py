"""``zoo plot`` / ``zoo.plotting``: training curves of run folders, and TensorBoard logs of their records.

The runs are synthetic ``metrics.jsonl`` files in the formats the training loop writes (fine-tuning, pretraining
with an eval corpus, records from before ``split`` existed, a line cut short by a crash, a run still going); each
test checks that what is drawn is what the file holds, read back from the figure's lines or the written file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import run

from zoo.errors import DataError, NotFoundError, UsageError
from zoo.plotting import (
    MARKER,
    TensorBoardSink,
    dev_metric,
    draw,
    plot_runs,
    read_metrics,
    run_names,
    scalars,
    write_tensorboard,
)

matplotlib = pytest.importorskip("matplotlib")


def write_run(folder: Path, records: list[dict[str, Any]], *, tail: str = "", receipt: dict[str, Any] | None = None,
              marker: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (folder / "metrics.jsonl").write_text(text, encoding="utf-8")
    if receipt is not None:
        (folder / "receipt.json").write_text(json.dumps({"kind": "finetuning", "settings": receipt}), encoding="utf-8")
    if marker is not None:
        (folder / "run.json").write_text(json.dumps({"run_version": 2, "settings": marker}), encoding="utf-8")
    return folder


def train(step: int, loss: float, **more: Any) -> dict[str, Any]:
    return {"step": step, "split": "train", "loss": loss, "lr": 1e-4, "grad_norm": 0.5, "steps": 10,
            "tokens_per_s": 900.0, "examples_per_s": 30.0, "time": 1.7e9 + step, **more}


def finetuning_run(folder: Path, *, f1: tuple[float, ...] = (0.5, 0.8, 0.7), **settings: Any) -> Path:
    records: list[dict[str, Any]] = []
    for i, value in enumerate(f1):
        step = 20 * (i + 1)
        records += [train(step - 10, 2.0 / step), train(step, 1.5 / step, accuracy=0.9)]
        records.append({"step": step, "split": "dev", "loss": 1.0 / step, "f1": value, "precision": value + 0.01,
                        "recall": value - 0.01, "accuracy": 1 - value / 2,
                        "per_label": {"DISH": {"f1": value, "support": 12}}, "time": 1.7e9 + step})
    records.append({"step": 60, "split": "test", "loss": 0.3, "f1": 0.66, "time": 1.7e9 + 61})
    return write_run(folder, records, receipt={"task": "token-classification", "metric": "f1", **settings})


def pretraining_run(folder: Path) -> Path:
    records: list[dict[str, Any]] = []
    for step in (100, 200, 300, 400):
        records.append(train(step, 9.0 - step / 100, mlm_loss=8.0 - step / 100, sop_loss=0.6, mlm_accuracy=step / 1000,
                             sop_accuracy=0.6))
        if step % 200 == 0:
            records.append({"step": step, "split": "eval", "eval_loss": 9.5 - step / 100, "eval_mlm_loss": 8.9,
                            "eval_mlm_accuracy": step / 2000, "eval_sop_accuracy": 0.55, "eval_examples": 64,
                            "time": 1.7e9 + step})
    return write_run(folder, records)


def panel(figure: Any, title: str) -> Any:
    found = [axes for axes in figure.axes if axes.get_title() == title]
    assert len(found) == 1, [axes.get_title() for axes in figure.axes]
    return found[0]


def curves(axes: Any) -> dict[str, tuple[list[float], list[float]]]:
    """The panel's lines by legend label: (steps, values)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()
            if line.get_gid() != "best"}


def best_points(axes: Any) -> list[tuple[float, float]]:
    return [(line.get_xdata()[0], line.get_ydata()[0]) for line in axes.get_lines() if line.get_gid() == "best"]


# ------------------------------------------------------------------------------------------- reading
def test_read_metrics_skips_a_cut_line_and_gives_old_records_a_split(tmp_path: Path) -> None:
    old = [{"step": 10, "loss": 5.0, "mlm_loss": 4.0}, {"step": 20, "loss": 4.0, "mlm_loss": 3.5}]
    folder = write_run(tmp_path / "old", [*old, {"step": 20, "split": "eval", "eval_loss": 4.2}],
                       tail='{"step": 30, "split": "train", "lo')
    records = read_metrics(folder)
    assert [r["step"] for r in records] == [10, 20, 20]
    assert [r["split"] for r in records] == ["train", "train", "eval"]
    assert records[1]["loss"] == 4.0
    assert read_metrics(folder / "metrics.jsonl") == records  # the file itself names the run too


def test_read_metrics_skips_lines_that_are_no_records(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "r", [train(10, 1.0)], tail='\n[1, 2]\n{"step": "x"}\n{"step": true}\n\xff\n')
    assert [r["step"] for r in read_metrics(folder)] == [10]


def test_a_folder_without_metrics_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(NotFoundError, match="not a training run: no metrics.jsonl") as info:
        read_metrics(tmp_path / "model")
    assert str(tmp_path / "model") in info.value.message
    with pytest.raises(NotFoundError, match="no such directory"):
        read_metrics(tmp_path / "absent")


def test_dev_metric_follows_the_option_then_the_setting_then_the_defaults() -> None:
    dev = [{"step": 1, "split": "dev", "f1": 0.5, "accuracy": 0.7}]
    evaluation = [{"step": 1, "split": "eval", "eval_loss": 2.0, "eval_mlm_accuracy": 0.3}]
    assert dev_metric(dev, {}) == "f1"
    assert dev_metric(dev, {"metric": "accuracy"}) == "accuracy"
    assert dev_metric(dev, {"metric": "accuracy"}, "recall") == "recall"
    assert dev_metric([{"step": 1, "split": "dev", "accuracy": 0.7}], {}) == "accuracy"
    assert dev_metric(evaluation, {}) == "eval_mlm_accuracy"
    assert dev_metric([{"step": 1, "split": "train", "accuracy": 0.7}], {}) is None  # only evaluations count


def test_equal_folder_names_get_their_parents(tmp_path: Path) -> None:
    assert run_names([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c"]) == ["a/run", "b/run", "c"]
    assert run_names([tmp_path / "x" / "r", tmp_path / "y" / "x" / "r"]) == [f"{tmp_path.name}/x/r", "y/x/r"]
    assert run_names([tmp_path / "r", tmp_path / "r"]) == ["r", "r #2"]


# ------------------------------------------------------------------------------------------- drawing
def test_a_finetuning_run_draws_its_losses_and_dev_f1_with_the_best_marked(tmp_path: Path) -> None:
    folder = finetuning_run(tmp_path / "dish_tagger", f1=(0.5, 0.8, 0.7))
    figure = draw([folder])
    assert [axes.get_title() for axes in figure.axes] == ["training loss", "dev loss", "dev f1"]
    steps, losses = curves(panel(figure, "training loss"))["dish_tagger"]
    assert steps == [10, 20, 30, 40, 50, 60]
    assert losses == pytest.approx([2 / 20, 1.5 / 20, 2 / 40, 1.5 / 40, 2 / 60, 1.5 / 60])
    assert curves(panel(figure, "dev loss"))["dish_tagger"] == ([20, 40, 60], pytest.approx([1 / 20, 1 / 40, 1 / 60]))
    scores = panel(figure, "dev f1")
    assert curves(scores) == {"dish_tagger, best 0.8 at step 40": ([20, 40, 60], [0.5, 0.8, 0.7])}  # test split left out
    assert best_points(scores) == [(40, 0.8)]
    assert scores.get_ylabel() == "f1"


def test_a_pretraining_run_draws_eval_loss_and_eval_mlm_accuracy(tmp_path: Path) -> None:
    figure = draw([pretraining_run(tmp_path / "adapted")])
    assert [axes.get_title() for axes in figure.axes] == ["training loss", "eval loss", "eval mlm_accuracy"]
    assert curves(panel(figure, "training loss"))["adapted"] == ([100, 200, 300, 400], pytest.approx([8, 7, 6, 5]))
    assert curves(panel(figure, "eval loss"))["adapted"] == ([200, 400], pytest.approx([7.5, 5.5]))
    accuracy = panel(figure, "eval mlm_accuracy")
    assert list(curves(accuracy).values()) == [([200, 400], pytest.approx([0.1, 0.2]))]
    assert best_points(accuracy) == [(400, pytest.approx(0.2))]


def test_an_old_run_without_evaluations_draws_one_panel_and_says_why(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "old", [{"step": s, "loss": 10 - s, "mlm_loss": 9 - s} for s in (1, 2, 3)])
    figure = draw([folder])
    assert [axes.get_title() for axes in figure.axes] == ["training loss"]
    assert curves(figure.axes[0]) == {"old": ([1, 2, 3], [9.0, 8.0, 7.0])}
    assert figure.get_supxlabel() == "no dev loss, no dev metric in this run"


def test_a_run_in_progress_uses_its_run_json_and_a_crash_cut_line_is_skipped(tmp_path: Path) -> None:
    records = [train(10, 1.0), {"step": 10, "split": "dev", "loss": 0.9, "f1": 0.2, "accuracy": 0.6},
               train(20, 0.8), {"step": 20, "split": "dev", "loss": 0.7, "f1": 0.3, "accuracy": 0.5}]
    folder = write_run(tmp_path / "going", records, tail='{"step": 30, "split": "train", "loss": 0.', marker={
        "task": "text-classification", "metric": "accuracy"})
    figure = draw([folder])
    assert curves(panel(figure, "training loss"))["going"] == ([10, 20], [1.0, 0.8])
    scores = panel(figure, "dev accuracy")
    assert list(curves(scores).values()) == [([10, 20], [0.6, 0.5])] and best_points(scores) == [(10, 0.6)]


def test_a_receipt_overrides_run_json_and_metric_overrides_both(tmp_path: Path) -> None:
    folder = finetuning_run(tmp_path / "r", metric="precision")
    (folder / "run.json").write_text(json.dumps({"settings": {"metric": "recall"}}), encoding="utf-8")
    assert panel(draw([folder]), "dev precision")
    assert best_points(panel(draw([folder], metric="accuracy"), "dev accuracy")) == [(20, 0.75)]


def test_a_loss_metric_marks_the_lowest_dev_loss(tmp_path: Path) -> None:
    records = [train(10, 1.0), {"step": 10, "split": "dev", "loss": 0.5}, {"step": 20, "split": "dev", "loss": 0.4},
               {"step": 30, "split": "dev", "loss": 0.45}]
    figure = draw([write_run(tmp_path / "r", records, receipt={"metric": "loss"})])
    assert [axes.get_title() for axes in figure.axes] == ["training loss", "dev loss"]
    assert best_points(panel(figure, "dev loss")) == [(20, 0.4)]


def test_runs_side_by_side_share_panels_and_keep_their_colours(tmp_path: Path) -> None:
    tagger = finetuning_run(tmp_path / "a" / "dish_tagger", f1=(0.5, 0.8, 0.7))
    scratch = finetuning_run(tmp_path / "b" / "dish_tagger", f1=(0.4, 0.45, 0.6))
    pretrained = pretraining_run(tmp_path / "adapted")
    figure = draw([tagger, scratch, pretrained])
    assert [axes.get_title() for axes in figure.axes] == ["training loss", "dev/eval loss", "dev/eval metric"]
    losses = panel(figure, "training loss")
    assert set(curves(losses)) == {"a/dish_tagger", "b/dish_tagger", "adapted"}
    scores = panel(figure, "dev/eval metric")
    assert set(curves(scores)) == {"a/dish_tagger (f1), best 0.8 at step 40", "b/dish_tagger (f1), best 0.6 at step 60",
                                   "adapted (eval_mlm_accuracy), best 0.2 at step 400"}
    colour = {line.get_label().split()[0].rstrip(","): line.get_color() for line in scores.get_lines()
              if line.get_gid() != "best"}
    assert {line.get_label(): line.get_color() for line in losses.get_lines()} == colour
    assert len(set(colour.values())) == 3


def test_nothing_to_plot_is_a_data_error(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "new", [], tail='{"step": 1')
    with pytest.raises(DataError, match="nothing to plot"):
        draw([folder])


# -------------------------------------------------------------------------------------------- writing
def test_the_png_has_the_requested_size_and_default_sizes_follow_the_panels(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.image import imread

    monkeypatch.setitem(matplotlib.rcParams, "savefig.dpi", 300)  # a user's matplotlibrc changes nothing
    folder = finetuning_run(tmp_path / "r")
    written = plot_runs([folder], tmp_path / "out" / "curves.png", size=(640, 360))
    assert written == tmp_path / "out" / "curves.png"
    image = imread(written)
    assert image.shape[:2] == (360, 640)
    assert image.std() > 0.05  # something is drawn, not a blank canvas
    assert imread(plot_runs([folder], tmp_path / "default.png")).shape[:2] == (420, 3 * 500)
    old = write_run(tmp_path / "old", [train(1, 1.0), train(2, 0.5)])
    assert imread(plot_runs([old], tmp_path / "one.png")).shape[:2] == (420, 500)


@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".PNG", b"\x89PNG")])
def test_svg_and_pdf_by_suffix_and_a_plot_is_replaced_by_a_new_one(tmp_path: Path, suffix: str, magic: bytes) -> None:
    folder = finetuning_run(tmp_path / "r")
    out = tmp_path / f"curves{suffix}"
    plot_runs([folder], out)
    assert out.read_bytes().startswith(magic)
    finetuning_run(folder, f1=(0.1, 0.2, 0.99))
    before = out.read_bytes()
    plot_runs([folder], out)  # zoo drew it: replaced
    assert out.read_bytes() != before
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_zoo_did_not_draw_is_never_overwritten(tmp_path: Path) -> None:
    folder = finetuning_run(tmp_path / "r")
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG my photo")
    with pytest.raises(UsageError, match="already exists") as info:
        plot_runs([folder], mine)
    assert "replaces only a plot it drew" in (info.value.hint or "")
    assert mine.read_bytes() == b"\x89PNG my photo"
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        plot_runs([folder], tmp_path / "dir.png")
    with pytest.raises(UsageError, match="image format"):
        plot_runs([folder], tmp_path / "curves.jpeg")
    assert not (tmp_path / "curves.jpeg").exists()


# ------------------------------------------------------------------------------------------------ CLI
def test_zoo_plot_prints_the_image_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    a, b = finetuning_run(tmp_path / "dish_tagger"), finetuning_run(tmp_path / "dish_tagger_scratch")
    out = tmp_path / "curves.png"
    code, stdout, _ = run(capsys, "plot", str(a), str(b), "--out", str(out), "--size", "900x300")
    assert code == 0 and stdout == f"{out}\n"
    assert imread(out).shape[:2] == (300, 900)
    assert MARKER.encode() in out.read_bytes()
    code, _, err = run(capsys, "plot", str(a), "--out", str(out), "--size", "9x3")
    assert code == 2 and "WIDTHxHEIGHT" in err


def test_zoo_plot_errors_name_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "albert_base_zh").mkdir()
    code, out, err = run(capsys, "plot", str(tmp_path / "albert_base_zh"), "--out", str(tmp_path / "c.png"))
    assert code == 3 and out == ""
    assert f"{tmp_path / 'albert_base_zh'}: not a training run: no metrics.jsonl" in err
    assert "Traceback" not in err and not (tmp_path / "c.png").exists()
    code, _, err = run(capsys, "plot", str(finetuning_run(tmp_path / "r")))
    assert code == 2 and "--out FILE" in err
    code, _, err = run(capsys, "plot", str(write_run(tmp_path / "new", [])), "--out", str(tmp_path / "c.png"))
    assert code == 12 and "nothing to plot" in err


def test_zoo_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, out, err = run(capsys, "plot", str(finetuning_run(tmp_path / "r")), "--out", str(tmp_path / "c.png"))
    assert code == 2 and out == ""
    assert "zoo plot needs matplotlib" in err and "pip install 'zoo-checkpoints[plot]'" in err
    assert not (tmp_path / "c.png").exists()


def test_zoo_plot_needs_neither_torch_nor_matplotlib_to_start(tmp_path: Path) -> None:
    folder = finetuning_run(tmp_path / "r")
    code = f"""
import sys, zoo.cli
zoo.cli.build_parser()
assert "matplotlib" not in sys.modules and "zoo.plotting" not in sys.modules, "imported at start"
assert zoo.cli.main(["plot", {str(folder)!r}, "--out", {str(tmp_path / "c.png")!r}]) == 0
assert "torch" not in sys.modules, "torch imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").is_file()


# ---------------------------------------------------------------------------------------- TensorBoard
def test_scalars_are_tagged_by_split() -> None:
    record = {"step": 20, "split": "eval", "eval_loss": 2.5, "eval_mlm_accuracy": 0.25, "eval_examples": 64,
              "time": 1.7e9}
    assert scalars(record) == [("eval/loss", 2.5), ("eval/mlm_accuracy", 0.25), ("eval/examples", 64.0)]
    dev = {"step": 20, "split": "dev", "f1": 0.5, "per_label": {"DISH": {"f1": 0.4, "support": 3}}, "ok": True}
    assert scalars(dev) == [("dev/f1", 0.5), ("dev/per_label/DISH/f1", 0.4), ("dev/per_label/DISH/support", 3.0)]
    assert scalars({"step": 1, "loss": 3.0, "steps": 10})[0] == ("train/loss", 3.0)  # an old record: train


def _events(directory: Path) -> dict[str, list[tuple[int, float, float]]]:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_the_tensorboard_sink_writes_each_record_at_its_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with TensorBoardSink(tmp_path / "tb") as sink:
        sink(train(10, 2.0, mlm_accuracy=0.1))
        sink({"step": 20, "split": "dev", "loss": 1.5, "f1": 0.25, "time": 1.7e9 + 21})
        sink(train(20, 1.0, mlm_accuracy=0.2))
    events = _events(tmp_path / "tb")
    assert [(s, v) for s, v, _ in events["train/loss"]] == [(10, 2.0), (20, 1.0)]
    assert [(s, v) for s, v, _ in events["train/mlm_accuracy"]] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.2))]
    assert events["dev/f1"] == [(20, 0.25, pytest.approx(1.7e9 + 21))]
    assert "train/time" not in events and "train/steps" not in events


def test_tensorboard_missing_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match="tensorboard package") as info:
        TensorBoardSink(tmp_path / "tb")
    assert info.value.hint == "pip install tensorboard"
    assert not (tmp_path / "tb").exists()


def test_zoo_plot_tensorboard_replays_each_run_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    a, b = finetuning_run(tmp_path / "a" / "run"), pretraining_run(tmp_path / "b" / "run")
    code, out, _ = run(capsys, "plot", str(a), str(b), "--tensorboard", str(tmp_path / "tb"))
    assert code == 0 and out.splitlines() == [str(tmp_path / "tb" / "a" / "run"), str(tmp_path / "tb" / "b" / "run")]
    assert [(s, v) for s, v, _ in _events(tmp_path / "tb" / "a" / "run")["dev/f1"]] == [(20, 0.5), (40, pytest.approx(0.8)),
                                                                                   (60, pytest.approx(0.7))]
    assert [s for s, _, _ in _events(tmp_path / "tb" / "b" / "run")["eval/mlm_accuracy"]] == [200, 400]
    with pytest.raises(UsageError, match="already holds TensorBoard logs"):
        write_tensorboard([a], tmp_path / "tb" / "a")
    assert math.isclose(_events(tmp_path / "tb" / "a" / "run")["test/f1"][0][1], 0.66, rel_tol=1e-6)
