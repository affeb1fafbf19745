"""Training, evaluation, resume and the command line, on real BreastMNIST."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import write_synthetic
from hqcnn_qiskit.checkpoint import load_checkpoint, save_checkpoint
from hqcnn_qiskit.cli import main
from hqcnn_qiskit.data import DatasetSpec
from hqcnn_qiskit.errors import CheckpointError
from hqcnn_qiskit.train import TrainConfig, train

SMALL = ["--limit-train", "64", "--limit-eval", "32", "--batch-size", "32", "--no-progress"]


def run_cli(*args):
    """The installed console script, as a user runs it."""
    return subprocess.run(["hqcnn-qiskit", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", "--dataset", "breastmnist", "--backend", "aer_ideal", "--epochs", 2,
                     "--seed", 1, "--data-root", data_root, "--out", out, *SMALL)
    assert result.returncode == 0, result.stderr
    return out, result


def test_cli_train_writes_run_folder(trained):
    out, result = trained
    for name in ("best.pt", "last.pt", "metrics.json"):
        assert (out / name).is_file()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # training curves
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2)
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["acc"] <= 1.0 and 0.0 <= metrics[split]["auc"] <= 1.0
    assert len(metrics["history"]) == 2
    assert metrics["parameters"]["quantum"] == 22
    assert "22 quantum" in result.stderr  # parameter counts reported at the start


def test_cli_evaluate_json(trained, data_root):
    out, _ = trained
    result = run_cli("evaluate", "--checkpoint", out / "best.pt", "--split", "test",
                     "--data-root", data_root, "--limit", 32, "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"acc", "auc", "n", "split", "backend"}
    assert report["n"] == 32 and report["split"] == "test" and report["backend"] == "aer_ideal"
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-9)
    # 95% intervals from these images, around the reported number
    for metric in ("acc", "auc"):
        low, high = report[f"{metric}_95"]
        assert 0.0 < low < report[metric] < high < 1.0
    assert report["bootstrap"] == 0  # binary: exact ACC and score AUC intervals need none


def test_cli_evaluate_prints_intervals(trained, data_root):
    out, _ = trained
    args = ["evaluate", "--checkpoint", out / "best.pt", "--data-root", data_root, "--limit", 40,
            "--no-progress"]
    result = run_cli(*args, "--bootstrap", 300)
    assert result.returncode == 0, result.stderr
    assert ("[95% intervals from these 40 images alone (ACC: exact binomial; AUC: score "
            "interval)" in result.stdout)
    plain = run_cli(*args, "--bootstrap", 0)
    assert "95%" not in plain.stdout and "acc " in plain.stdout
    # 10 images: too few for the bootstrap, but the exact ACC interval needs no resamples
    few = run_cli(*args[:-3], "--limit", 10, "--no-progress")
    assert few.returncode == 0, few.stderr
    assert "[95% intervals from these 10 images alone (ACC: exact binomial" in few.stdout
    assert "no 95% interval for ACC" not in few.stderr
    few_json = json.loads(run_cli(*args[:-3], "--limit", 10, "--no-progress", "--json").stdout)
    low, high = few_json["acc_95"]
    assert low <= few_json["acc"] <= high and few_json["bootstrap"] == 0  # none drawn


def test_checkpoint_is_safe_and_complete(trained):
    out, _ = trained
    payload = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "backend_rng", "shuffle_rng", "train_config",
            "model_config"} <= set(payload)
    assert payload["train_config"]["dataset"]["flag"] == "breastmnist"


@pytest.mark.parametrize("augment, backend", [(False, "aer_ideal"), (True, "aer_ideal"),
                                              (False, "aer_noisy"),
                                              (False, "aer_noisy_mitigated")])
def test_resume_is_exact(tmp_path, data_root, augment, backend):
    """Shot-based backends: the shot and twirl streams, and the readout calibration already
    drawn from them (aer_noisy_mitigated), are saved with the checkpoint, so the resumed epochs
    draw the same shots as the straight run."""
    spec = DatasetSpec("breastmnist")
    config = TrainConfig(dataset=spec, epochs=2, seed=5, batch_size=32, limit_train=64,
                         limit_eval=24, augment=augment, backend=backend)
    straight = train(config, tmp_path / "a", data_root=data_root, progress=False, log=lambda m: None)
    first = TrainConfig(**{**config.__dict__, "epochs": 1})
    train(first, tmp_path / "b", data_root=data_root, progress=False, log=lambda m: None)
    resumed = train(config, tmp_path / "b", data_root=data_root, resume=True, progress=False,
                    log=lambda m: None)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]
    assert resumed["test"] == straight["test"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="already trained 2 epochs, more than the 1"):
        train(first, tmp_path / "a", data_root=data_root, resume=True, progress=False,
              log=lambda m: None)
    if augment:  # the augmented run really saw other images than the plain one
        plain = TrainConfig(**{**config.__dict__, "augment": False})
        other = train(plain, tmp_path / "c", data_root=data_root, progress=False,
                      log=lambda m: None)
        assert other["history"][0]["train_loss"] != straight["history"][0]["train_loss"]


class _Crash(Exception):
    pass


def test_step_schedule_resumes_exactly_after_a_crash(tmp_path, data_root):
    """MedMNIST v2's schedule: the rate drops at half and three quarters of the epochs, and a
    run killed after an epoch resumes bit-identically (the rate is a function of the epoch)."""
    config = TrainConfig(dataset=DatasetSpec("breastmnist"), epochs=4, seed=3, batch_size=32,
                         limit_train=64, limit_eval=24, lr_schedule="step")
    straight = train(config, tmp_path / "a", data_root=data_root, progress=False,
                     log=lambda m: None)
    assert [h["lr"] for h in straight["history"]] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])

    def crash_after_epoch_2(msg):
        if msg.startswith("epoch 2/4"):
            raise _Crash
    with pytest.raises(_Crash):
        train(config, tmp_path / "b", data_root=data_root, progress=False, log=crash_after_epoch_2)
    resumed = train(config, tmp_path / "b", data_root=data_root, resume=True, progress=False,
                    log=lambda m: None)
    assert resumed["history"] == [{**h, "seconds": r["seconds"]}
                                  for h, r in zip(straight["history"], resumed["history"])]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    # the milestones move with the total, so a step-schedule run cannot be extended
    longer = TrainConfig(**{**config.__dict__, "epochs": 6})
    with pytest.raises(CheckpointError, match="epochs=4"):
        train(longer, tmp_path / "a", data_root=data_root, resume=True, progress=False,
              log=lambda m: None)


def test_training_on_the_device_path_says_it_is_slow(tmp_path, data_root):
    config = TrainConfig(dataset=DatasetSpec("breastmnist"), backend="fake_brisbane", epochs=1,
                         batch_size=2, limit_train=2, limit_eval=2)
    notes = []

    def stop_at_first_step(msg):  # the note comes before any circuit runs; stop there
        if msg.startswith("circuit on"):
            raise _Crash
        notes.append(msg)
    with pytest.raises(_Crash):
        train(config, tmp_path, data_root=data_root, progress=False, log=stop_at_first_step)
    assert any("note: training on fake_brisbane runs every parameter-shift circuit" in n
               for n in notes)


def test_cli_lr_schedule_choices_match_the_table():
    from hqcnn_qiskit.cli import build_parser
    from hqcnn_qiskit.train import LR_SCHEDULES

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    action = next(a for a in train_parser._actions if a.dest == "lr_schedule")
    assert tuple(action.choices) == tuple(LR_SCHEDULES)


def test_progress_bars_only_on_a_terminal(tmp_path, data_root, monkeypatch):
    """In a pipe or a log file the bars' redraws would pile up as carriage returns; the epoch
    lines say the same there."""
    import argparse
    import io

    from hqcnn_qiskit.cli import show_progress

    result = run_cli("train", "--dataset", "breastmnist", "--epochs", "1", "--limit-train", "64",
                     "--limit-eval", "32", "--batch-size", "16", "--data-root", data_root,
                     "--out", tmp_path / "run")  # no --no-progress; stderr is a pipe
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "epoch 1/1: loss" in result.stderr

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_progress(argparse.Namespace(no_progress=False))
    assert not show_progress(argparse.Namespace(no_progress=True))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not show_progress(argparse.Namespace(no_progress=False))


def test_classical_twin_trains(tmp_path, data_root, capsys):
    code = main(["train", "--dataset", "breastmnist", "--model", "classical", "--epochs", "1",
                 "--augment", "--weight-decay", "1e-4", "--backend", "aer_noisy",
                 "--data-root", str(data_root), "--out", str(tmp_path), *SMALL])
    assert code == 0
    assert "the classical twin has no circuit; --backend aer_noisy is not used" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parameters"]["quantum"] == 0 and metrics["parameters"]["classical"] > 0
    assert metrics["config"]["augment"] is True and metrics["config"]["weight_decay"] == 1e-4


@pytest.mark.parametrize(
    "args, needle, code",
    [
        (["train", "--dataset", "breastmnist", "--out", "X", "--bogus"],
         "hqcnn-qiskit train: error: unrecognized arguments: --bogus", 2),
        (["train", "--dataset", "nosuchmnist", "--out", "X"], "unknown dataset", 1),
        (["train", "--dataset", "breastmnist", "--backend", "nosuch", "--out", "X"], "unknown backend", 1),
        (["train", "--dataset", "breastmnist", "--epochs", "0", "--out", "X"], "positive", 2),
        (["evaluate", "--checkpoint", "X", "--split", "dev"], "invalid choice", 2),
        (["evaluate", "--checkpoint", "X", "--bootstrap", "-5"],
         "expected zero or a positive number, got -5", 2),
        (["evaluate", "--checkpoint", "X", "--bootstrap", "50"],
         "expected 0 (no intervals) or at least 100, got 50", 2),
        (["evaluate", "--checkpoint", "nowhere.pt"], "does not exist", 1),
        (["evaluate", "--checkpoint", "X"], "is a folder; pass a checkpoint in it", 1),
        (["train", "--dataset", "breastmnist", "--weight-decay", "-1", "--out", "X"],
         "expected zero or a positive number, got -1", 2),
        (["train", "--dataset", "breastmnist", "--batch-size", "1", "--out", "X"],
         "--batch-size: expected at least 2, got 1", 2),
        (["train", "--dataset", "breastmnist", "--limit-train", "1", "--out", "X"],
         "--limit-train: expected at least 2, got 1", 2),
        (["train", "--dataset", "breastmnist", "--limit-eval", "1", "--out", "X"],
         "--limit-eval: expected at least 2, got 1", 2),
        (["train", "--dataset", "breastmnist", "--model", "classical", "--backend", "aer_nosiy",
          "--out", "X"], "unknown backend", 1),  # a typo is caught even where it is not used
    ],
)
def test_user_errors_are_one_line(args, needle, code, tmp_path):
    """One line each; exit status 2 where argparse rejects the command line, 1 otherwise."""
    (tmp_path / "run").mkdir()
    args = [str(tmp_path / "run") if a == "X" else a for a in args]
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_draws_roc_and_confusion_matrix(trained, data_root, tmp_path):
    out, _ = trained
    plot = tmp_path / "roc.png"
    result = run_cli("evaluate", "--checkpoint", out / "best.pt", "--data-root", data_root,
                     "--limit", 32, "--no-progress", "--json", "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 32  # stdout stays one JSON object
    assert f"wrote {plot}" in result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a bad --plot is refused before any work, in one line
    (tmp_path / "dir.png").mkdir()
    for bad, needle in ((tmp_path / "roc.pdf", "must end in .png"),
                        (tmp_path / "missing" / "roc.png", "is not an existing folder"),
                        (tmp_path / "dir.png", "is a folder, not a file")):
        result = run_cli("evaluate", "--checkpoint", out / "best.pt", "--plot", bad)
        assert result.returncode == 2 and needle in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_npz_and_unwritable_folder(tmp_path, data_root):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "breastmnist.npz").write_bytes(b"not a zip file at all")
    result = run_cli("train", "--dataset", "breastmnist", "--data-root", tmp_path / "data",
                     "--no-verify", "--out", tmp_path / "run", *SMALL)
    assert result.returncode == 1 and "not a readable MedMNIST file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("train", "--dataset", "breastmnist", "--data-root", data_root,
                     "--out", blocker / "run", *SMALL)
    assert result.returncode == 1 and "cannot write to run folder" in result.stderr
    result = run_cli("train", "--dataset", "breastmnist", "--data-root", data_root,
                     "--out", blocker, *SMALL)
    assert result.returncode == 1 and f"the run folder {blocker} is a file" in result.stderr


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, data_root):
    result = run_cli("train", "--dataset", "breastmnist", "--backend", "ibm_brisbane",
                     "--data-root", data_root, "--out", tmp_path / "nest" / "a" / "run", *SMALL)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even the parents the write test made


def test_checkpoint_from_another_model_or_task(trained, tmp_path, data_root):
    out, _ = trained
    result = run_cli("train", "--dataset", "breastmnist", "--model", "classical", "--epochs", 3,
                     "--seed", 1, "--data-root", data_root, "--out", out, "--resume", *SMALL)
    assert result.returncode == 1 and "model='hqcnn'" in result.stderr
    write_synthetic(tmp_path, "retinamnist")
    result = run_cli("train", "--dataset", "retinamnist", "--epochs", 3, "--seed", 1,
                     "--data-root", tmp_path, "--no-verify", "--out", out, "--resume", *SMALL)
    assert result.returncode == 1 and ("was trained with dataset=breastmnist (28px), this run "
                                       "asks for dataset=retinamnist (28px)") in result.stderr
    # weights of one architecture loaded as another: a one-line error, not a traceback
    payload = torch.load(out / "best.pt", weights_only=True)
    payload["model_config"]["attention"] = False
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in payload.items() if k != "format"})
    result = run_cli("evaluate", "--checkpoint", tmp_path / "other.pt", "--data-root", data_root)
    assert result.returncode == 1 and "do not fit" in result.stderr


def test_a_finished_run_is_not_overwritten_by_mistake(trained, data_root):
    out, _ = trained
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = run_cli("train", "--dataset", "breastmnist", "--epochs", 2, "--seed", 1,
                     "--data-root", data_root, "--out", out, *SMALL)
    assert result.returncode == 1 and "already holds a run (last.pt): resume it (--resume" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # --resume on the finished run trains nothing and says so
    result = run_cli("train", "--dataset", "breastmnist", "--epochs", 2, "--seed", 1,
                     "--data-root", data_root, "--out", out, "--resume", *SMALL)
    assert result.returncode == 0 and "has trained all 2 epochs" in result.stderr
    assert (out / "last.pt").stat().st_mtime_ns == before["last.pt"]


def test_uneven_batches_never_leave_one_image(tmp_path, data_root):
    from hqcnn_qiskit.train import _batches

    for n, size in [(546, 109), (546, 5), (65, 64), (4708, 3), (100, 10), (7, 7), (2, 128)]:
        sizes = [b.stop - b.start for b in _batches(n, size)]
        assert sum(sizes) == n and min(sizes) >= 2 and max(sizes) <= size + 1
    # 65 images in batches of 64: the 65th joins the first batch instead of crashing BatchNorm
    result = run_cli("train", "--dataset", "breastmnist", "--epochs", 1, "--limit-train", 65,
                     "--limit-eval", 32, "--batch-size", 64, "--no-progress",
                     "--data-root", data_root, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr


def test_metrics_need_two_images_and_say_when_auc_is_undefined(trained, data_root):
    import warnings

    from hqcnn_qiskit.errors import DataError
    from hqcnn_qiskit.evaluate import compute_metrics

    spec = DatasetSpec("breastmnist")
    with pytest.raises(DataError, match="at least 2 images"):
        compute_metrics(spec, torch.tensor([1]), torch.tensor([[0.2, 0.8]]).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warning leaks to the user
        one_class = compute_metrics(spec, torch.tensor([1, 1]),
                                    torch.tensor([[0.2, 0.8], [0.6, 0.4]]).numpy())
    assert one_class["acc"] == 0.5 and one_class["auc"] != one_class["auc"]  # nan
    out, _ = trained
    result = run_cli("evaluate", "--checkpoint", out / "best.pt", "--limit", 1,
                     "--data-root", data_root, "--no-progress")
    assert result.returncode == 2 and "--limit: expected at least 2, got 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["classical", "hqcnn"])
def test_batch_size_does_not_change_predictions(model):
    from hqcnn_qiskit.evaluate import predict
    from hqcnn_qiskit.model import HQCNN, ModelConfig

    net = HQCNN(config=ModelConfig(model=model), backend="aer_ideal",
                generator=torch.Generator().manual_seed(0))
    images = torch.rand(37, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.train()(images[:16])  # BatchNorm running statistics away from their initial values
    data = torch.utils.data.TensorDataset(images, torch.zeros(37, dtype=torch.long))
    big = predict(net.train(), data, batch_size=256)  # predict switches to eval mode itself
    small = predict(net.train(), data, batch_size=5)
    assert big.shape == small.shape == (37, 2)
    np.testing.assert_allclose(small, big, rtol=0, atol=1e-6)
    from hqcnn_qiskit.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size must be at least 1, got 0"):
        predict(net, data, batch_size=0)


def test_progress_bar_counts_images(monkeypatch):
    from tqdm import tqdm as real_tqdm

    from hqcnn_qiskit import evaluate
    from hqcnn_qiskit.model import HQCNN, ModelConfig

    bars = []

    class Recording(real_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps = []
            bars.append(self)

        def update(self, n=1):
            self.steps.append(n)
            return super().update(n)

    monkeypatch.setattr(evaluate, "tqdm", Recording)
    net = HQCNN(config=ModelConfig(model="classical"))
    data = torch.utils.data.TensorDataset(torch.rand(37, 1, 28, 28), torch.zeros(37))
    evaluate.predict(net, data, batch_size=5, progress=True)
    (bar,) = bars
    assert bar.total == 37 and bar.unit == "image"
    assert bar.steps == [5] * 7 + [2] and bar.n == 37


def test_evaluate_uses_small_batches_on_slow_backends(trained, data_root, monkeypatch):
    """fake_brisbane takes ~0.5 s per image plus ~3 s per forward pass: 256-image passes would
    leave the progress bar still for minutes."""
    from hqcnn_qiskit import evaluate

    seen = {}

    def fake_predict(model, dataset, *, batch_size, **kwargs):  # records, runs no circuit
        seen[model.quantum.backend.name] = batch_size
        return np.full((len(dataset.tensors[0]), 2), 0.5)

    monkeypatch.setattr(evaluate, "predict", fake_predict)
    out, _ = trained
    for backend in ("aer_ideal", "aer_noisy", "fake_brisbane"):
        evaluate.evaluate_checkpoint(out / "best.pt", backend=backend, data_root=data_root,
                                     limit=4, progress=False)
    assert seen["aer_ideal"] == seen["aer_noisy"] == 256
    assert seen["fake_brisbane"] == 32
    evaluate.evaluate_checkpoint(out / "best.pt", backend="fake_brisbane", data_root=data_root,
                                 limit=4, progress=False, batch_size=3)
    assert seen["fake_brisbane"] == 3  # an explicit batch size wins


def test_training_evaluates_in_the_backend_kinds_batches(tmp_path, data_root, monkeypatch):
    """train's validation and final test passes use the same per-kind batch size as evaluate
    (on fake_brisbane 32 images, so the test bar moves)."""
    from hqcnn_qiskit import profiles, train as train_module

    monkeypatch.setitem(profiles.EVAL_BATCH_SIZES, "exact", 3)
    calls = []
    real = train_module.evaluate_model

    def recording(model, spec, dataset, **kwargs):
        calls.append((len(dataset.tensors[0]), kwargs.get("batch_size")))
        return real(model, spec, dataset, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_model", recording)
    config = TrainConfig(dataset=DatasetSpec("breastmnist"), epochs=1, batch_size=4,
                         limit_train=8, limit_eval=7)
    train(config, tmp_path, data_root=data_root, progress=False, log=lambda m: None)
    assert calls == [(7, 3), (7, 3)]  # validation, then test


def test_a_diverging_run_is_a_one_line_error(tmp_path, data_root):
    """--lr 1e6 overflows the network: a hint to lower the rate, not sklearn's 'Input contains
    NaN' traceback."""
    result = run_cli("train", "--dataset", "breastmnist", "--lr", "1e6", "--epochs", 2,
                     "--data-root", data_root, "--out", tmp_path / "run", *SMALL)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"error: training diverged in epoch 1: the (weights|validation scores) are "
                     r"(no longer )?(not )?finite; no epoch was saved\. Train again with a "
                     r"smaller learning rate \(--lr; this run: 1e\+06\) into another run "
                     r"folder \(--out\)", result.stderr), \
        result.stderr


def test_non_finite_scores_are_refused():
    from hqcnn_qiskit.errors import DivergedError
    from hqcnn_qiskit.evaluate import compute_metrics

    scores = np.full((4, 2), 0.5)
    scores[2, 1] = np.nan
    with pytest.raises(DivergedError, match="not finite .* on 1 of 4 images"):
        compute_metrics(DatasetSpec("breastmnist"), torch.tensor([0, 1, 0, 1]), scores)


def test_ctrl_c_says_what_each_command_leaves_behind(trained, monkeypatch, capsys):
    from hqcnn_qiskit import cli, evaluate

    def interrupted(*args, **kwargs):  # what Ctrl-C raises in the middle of the evaluation
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", interrupted)
    out, _ = trained
    assert cli.main(["evaluate", "--checkpoint", str(out / "best.pt")]) == 130
    message = capsys.readouterr().err
    assert "evaluate: interrupted (nothing was written)" in message and "resume" not in message

    from hqcnn_qiskit import train as train_module

    monkeypatch.setattr(train_module, "train", interrupted)
    args = ["train", "--dataset", "breastmnist", "--out"]
    assert cli.main([*args, str(out)]) == 130  # a run with epochs saved
    assert "checkpoints so far are kept; `train --resume` continues" in capsys.readouterr().err
    assert cli.main([*args, str(out / "fresh")]) == 130  # stopped before any epoch ended
    message = capsys.readouterr().err
    assert "nothing to resume: train again without --resume" in message


def test_unreadable_checkpoints_never_suggest_unsafe_loading(trained, tmp_path):
    out, _ = trained
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((out / "best.pt").read_bytes()[:5000])
    for path in (truncated, out / "metrics.json"):
        result = run_cli("evaluate", "--checkpoint", path)
        assert result.returncode == 1 and "is not a readable checkpoint (damaged" in result.stderr
        assert "weights_only" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})  # cannot be pickled
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_help_on_every_command():
    for command in ([], ["train"], ["evaluate"], ["backends"], ["datasets"]):
        result = subprocess.run([sys.executable, "-m", "hqcnn_qiskit.cli", *command, "--help"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_package_import_is_light_and_lazy_names_work():
    code = ("import sys, hqcnn_qiskit; light = 'qiskit' not in sys.modules; "
            "from hqcnn_qiskit import HQCNN, list_models; print(light, HQCNN.__name__, list_models())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["True", "HQCNN", "['hqcnn',", "'classical']"], result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import hqcnn_qiskit

        hqcnn_qiskit.nothing  # noqa: B018


def test_building_the_parser_loads_no_heavy_module():
    """``hqcnn-qiskit --help`` builds the whole parser (``infer`` and ``jobs`` included)."""
    code = ("import sys, hqcnn_qiskit.cli as c; c.build_parser(); "
            "print(*(m in sys.modules for m in ('torch', 'numpy', 'qiskit')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["False", "False", "False"], result.stdout + result.stderr
    help_all = subprocess.run([sys.executable, "-m", "hqcnn_qiskit.cli", "jobs", "--help"],
                              capture_output=True, text=True, timeout=120)
    assert help_all.returncode == 0 and "fetch" in help_all.stdout


def test_installed_package_ships_every_profile():
    from conftest import REPO

    result = run_cli("backends", "--json")
    assert result.returncode == 0, result.stderr
    names = {p["name"] for p in json.loads(result.stdout)}
    assert names == {p.stem for p in (REPO / "backends").glob("*.toml")}
    assert {"aer_ideal", "aer_noisy", "aer_noisy_mitigated", "fake_brisbane", "ibm_brisbane",
            "ibm_least_busy"} <= names


def test_json_reports_are_strict_json_with_every_key(capsys):
    """NaN is not JSON (strict parsers reject it): an undefined AUC is null. The interval keys
    are always there, null when there is no interval, and ``bootstrap`` counts the resamples
    behind the intervals given."""
    from hqcnn_qiskit.cli import report_metrics

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    scores = rng.dirichlet(np.ones(3), size=60)
    base = {"n": 60, "split": "test", "backend": "aer_ideal", "dataset": "organamnist (28px)",
            "task": "multi-class", "labels": labels, "scores": scores, "acc": 0.4, "auc": 0.6}
    report_metrics(base, resamples=300, as_json=True, on="aer_ideal")
    multi = json.loads(capsys.readouterr().out)
    assert multi["bootstrap"] == 300 and multi["acc_95"] and multi["auc_95"]  # AUC: bootstrap
    report_metrics(base, resamples=0, as_json=True, on="aer_ideal")
    none = json.loads(capsys.readouterr().out)
    assert none["acc_95"] is None and none["auc_95"] is None and none["bootstrap"] == 0
    one_class = {**base, "task": "binary-class", "labels": np.ones(60, dtype=int),
                 "scores": np.column_stack([1 - scores[:, 0], scores[:, 0]]), "auc": float("nan")}
    report_metrics(one_class, resamples=300, as_json=True, on="aer_ideal")
    text = capsys.readouterr().out
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))
    assert strict["auc"] is None and strict["auc_95"] is None and strict["bootstrap"] == 0
    report_metrics(one_class, resamples=300, as_json=False, on="aer_ideal")
    line = capsys.readouterr().out
    assert "(ACC: exact binomial); another" in line  # no AUC interval, so no AUC method


def test_ctrl_c_ends_the_program_without_waiting_for_worker_threads():
    """After Ctrl-C the console script exits at once (130), although a simulation is still
    running on a pool thread (qiskit's primitive jobs run there, and the interpreter would
    join the pool at exit: 10-20 s on fake_brisbane)."""
    probe = (
        "import sys, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from hqcnn_qiskit import cli\n"
        "ThreadPoolExecutor(1).submit(time.sleep, 600)  # a long simulation in flight\n"
        "def interrupted(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli._datasets = interrupted\n"
        "sys.argv = ['hqcnn-qiskit', 'datasets']\n"
        "cli.console_main()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "hqcnn-qiskit datasets: interrupted"


def test_train_or_reuse_reuses_trains_on_or_moves_aside(tmp_path, data_root):
    """What notebooks run again need: the same run is reused, a shorter one trained on, and a
    run with other settings left alone (the new one goes beside it)."""
    from dataclasses import replace

    from hqcnn_qiskit.train import train_or_reuse

    lines: list[str] = []
    options = {"data_root": data_root, "progress": False, "log": lines.append}
    config = TrainConfig(dataset=DatasetSpec("breastmnist"), model="classical", epochs=2,
                         limit_train=32, limit_eval=16, batch_size=16)
    out = tmp_path / "run"
    first, folder = train_or_reuse(config, out, **options)
    assert folder == out and len(first["history"]) == 2
    again, folder = train_or_reuse(replace(config, epochs=1), out, **options)
    assert folder == out and again == first
    assert lines[-1].startswith(f"reusing {out}: it has trained 2 epochs (this run asks for 1)")
    longer, folder = train_or_reuse(replace(config, epochs=3), out, **options)
    assert folder == out and len(longer["history"]) == 3
    other, folder = train_or_reuse(replace(config, seed=1), out, **options)
    assert folder == tmp_path / "run-2" and len(other["history"]) == 2
    assert (f"{out} holds a run with other settings ({out / 'last.pt'} was trained with "
            "seed=0, this run asks for seed=1); using run-2 instead") in lines
    assert int(load_checkpoint(out / "last.pt")["epoch"]) + 1 == 3  # the old run, untouched
    # with a step schedule the epochs are part of the run: more of them is another run
    step = replace(config, lr_schedule="step", epochs=2)
    train_or_reuse(step, tmp_path / "step", **options)
    _, folder = train_or_reuse(replace(step, epochs=3), tmp_path / "step", **options)
    assert folder == tmp_path / "step-2" and any("asks for epochs=3" in line for line in lines)


def test_evaluate_in_a_log_file_reports_progress_of_long_work(trained, data_root, capsys,
                                                               monkeypatch):
    """No bar off a terminal, but a line every LOG_EVERY_SECONDS (here: every batch) on long
    work, so that a log does not sit silent for minutes; --no-progress silences it."""
    from hqcnn_qiskit import evaluate

    monkeypatch.setattr(evaluate, "LOG_EVERY_SECONDS", 0.0)
    out, _ = trained
    args = ["evaluate", "--checkpoint", str(out / "best.pt"), "--data-root", str(data_root),
            "--limit", "40"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "test: 40/40 images, " in err  # one batch of 40 (stderr is not a terminal here)
    assert main([*args, "--no-progress"]) == 0
    assert "images, " not in capsys.readouterr().err
