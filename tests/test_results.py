"""The results protocol script: recipe selection on validation only, resumable cells, report."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from conftest import REPO, write_synthetic

sys.path.insert(0, str(REPO / "benchmarks"))  # worker processes import the script by name
import results  # noqa: E402


def _fake_cell(out, dataset, recipe, seed, val_auc, test_auc):
    folder = results._cell(out, dataset, recipe, "hqcnn", seed)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "val": {"auc": val_auc, "acc": 0.8}, "test": {"auc": test_auc, "acc": 0.8},
    }))


def test_recipe_is_chosen_on_validation_auc_not_test(tmp_path):
    # "augment" has the better mean validation AUC, "plain" the better test AUC.
    for seed, (v, t) in enumerate([(0.90, 0.99), (0.92, 0.99)]):
        _fake_cell(tmp_path, "breastmnist", "plain", seed, v, t)
    for seed, (v, t) in enumerate([(0.95, 0.80), (0.93, 0.80)]):
        _fake_cell(tmp_path, "breastmnist", "augment", seed, v, t)
    assert results.choose_recipe(tmp_path, "breastmnist", ["plain", "augment"], [0, 1]) == "augment"
    # a recipe with no finished cell is never chosen over one with results
    assert results.choose_recipe(tmp_path, "breastmnist", ["augment_wd", "plain"], [0, 1]) == "plain"
    # nor is one whose validation AUC is undefined (a class missing from a small subset)
    for seed in (0, 1):
        _fake_cell(tmp_path, "breastmnist", "medmnist_v2", seed, float("nan"), 0.99)
    assert results.choose_recipe(tmp_path, "breastmnist", ["medmnist_v2", "plain"], [0, 1]) == "plain"


def test_one_seed_shows_no_spread_and_differences_stay_within_their_range():
    assert results._fmt([0.8125]) == "0.812" and results._fmt([0.8, 0.9]) == "0.850 ± 0.071"
    from hqcnn_qiskit.uncertainty import estimate

    wide = estimate(np.array([[0.9, -0.9], [0.1, -0.1], [0.5, 0.4]]).T, bounded=False)
    cut = results._within(wide, 1.0)
    assert -1.0 <= cut.low <= cut.mean <= cut.high <= 1.0 and cut.mean == wide.mean


def test_an_undefined_auc_written_as_null_reads_back_as_nan(tmp_path):
    """metrics.json is strict JSON (NaN is written as null); the script's means and tables
    expect NaN and used to crash on None."""
    import math

    from hqcnn_qiskit.checkpoint import write_json

    for seed in (0, 1):
        folder = results._cell(tmp_path, "breastmnist", "plain", "hqcnn", seed)
        folder.mkdir(parents=True)
        write_json(folder / "metrics.json", {"val": {"auc": 0.9 + seed / 100, "acc": 0.8},
                                             "test": {"auc": math.nan, "acc": 0.8}})
    runs = [results._load(results._cell(tmp_path, "breastmnist", "plain", "hqcnn", s))
            for s in (0, 1)]
    assert all(math.isnan(run["test"]["auc"]) for run in runs)
    assert results._fmt([run["test"]["auc"] for run in runs]) == "nan ± nan"
    assert results.choose_recipe(tmp_path, "breastmnist", ["plain"], [0, 1]) == "plain"


@pytest.mark.parametrize("flag", ["--noisy-train-epochs", "--noise-limit", "--jobs"])
def test_counts_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        results.main([flag, "0"])
    assert f"argument {flag}: expected a positive number, got 0" in capsys.readouterr().err


def test_cell_settings_and_old_cells(tmp_path):
    from hqcnn_qiskit.data import DatasetSpec
    from hqcnn_qiskit.train import TrainConfig

    # the medmnist_v2 recipe brings its own 100 epochs; the user's --epochs wins over it
    v2 = results.cell_config("breastmnist", "medmnist_v2", "classical")
    assert v2 == {"model": "classical", "epochs": 100, "lr_schedule": "step"}
    assert results.cell_config("breastmnist", "medmnist_v2", "hqcnn", epochs=3)["epochs"] == 3
    assert results.cell_config("breastmnist", "plain", "hqcnn_noattn") == {
        "model": "hqcnn", "attention": False, "epochs": 60}
    assert results.cell_config("octmnist", "augment", "hqcnn", limit_train=9) == {
        "model": "hqcnn", "augment": True, "epochs": 20, "limit_train": 9}

    def finished(config: dict, asked: dict) -> bool:
        folder = tmp_path / "cell"
        folder.mkdir(exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({"config": config}))
        return results._finished({"dataset": "breastmnist", "seed": 0, "config": asked,
                                  "folder": str(folder)})

    spec = DatasetSpec("breastmnist")
    old = TrainConfig(dataset=spec, epochs=60).to_dict()
    del old["lr_schedule"]  # written before the field existed: it means the default
    assert finished(old, {"epochs": 60})
    assert not finished(old, {"epochs": 70})  # a constant rate can be continued
    with pytest.raises(SystemExit, match="lr_schedule='constant', this run asks for 'step'"):
        finished(old, {"epochs": 60, "lr_schedule": "step"})
    step = TrainConfig(dataset=spec, epochs=100, lr_schedule="step").to_dict()
    with pytest.raises(SystemExit, match="step schedule, whose steps depend on the total"):
        finished(step, {"epochs": 120, "lr_schedule": "step"})


def test_recipe_table_shows_selected_epochs_and_every_rate_drop(tmp_path):
    for seed, best in enumerate([2, 4]):
        folder = results._cell(tmp_path, "breastmnist", "medmnist_v2", "hqcnn", seed)
        folder.mkdir(parents=True)
        history = [{"epoch": e, "lr": 1e-3 if e < 3 else 1e-4 if e < 4 else 1e-5}
                   for e in range(1, 5)]
        (folder / "metrics.json").write_text(json.dumps({
            "best_epoch": best, "val": {"auc": 0.9, "acc": 0.8}, "test": {"auc": 0.8, "acc": 0.7},
            "history": history, "config": {"lr": 1e-3, "epochs": 4}}))
    text = "\n".join(results._recipe_table(tmp_path, "breastmnist", ["plain", "medmnist_v2"],
                                           [0, 1], "medmnist_v2"))
    assert "| plain | — | not run |" in text
    # the epochs the runs had (here 4, as with --epochs), not the recipe's default of 100
    assert "| **medmnist_v2** | epochs=4, lr_schedule=step |" in text and "| 2 | 2, 4 |" in text
    assert "lowers the learning rate 2 times (×0.1 from epoch 3 on and ×0.1 from epoch 4 on); " \
           "before epoch 3" in text


def test_protocol_runs_resumes_and_writes_report(tmp_path, data_root, capsys):
    argv = ["--data-root", str(data_root), "--datasets", "breastmnist", "--seeds", "0", "0",
            "--epochs", "breastmnist=1", "--recipes", "plain", "augment", "--rows", "classical",
            "--jobs", "1", "--skip-noise", "--out", str(tmp_path / "runs"),
            "--docs", str(tmp_path / "docs")]
    assert results.main(argv) == 0
    first = capsys.readouterr().out
    assert "recipe selection: 2 cells, 0 done, 2 to run" in first  # the repeated seed once
    assert "ablations: 1 cells, 0 done, 1 to run" in first
    chosen = results.choose_recipe(tmp_path / "runs", "breastmnist", ["plain", "augment"], [0])
    metrics = tmp_path / "runs" / "breastmnist" / chosen / "classical" / "seed0" / "metrics.json"
    assert json.loads(metrics.read_text())["config"]["augment"] == (chosen == "augment")
    stamp = metrics.stat().st_mtime_ns

    assert results.main(argv) == 0  # a rerun trains nothing
    second = capsys.readouterr().out
    assert "recipe selection: 2 cells, 2 done, 0 to run" in second
    assert "ablations: 1 cells, 1 done, 0 to run" in second
    assert metrics.stat().st_mtime_ns == stamp

    report = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert f"Chosen: **{chosen}**" in report and "Recipe selection" in report
    assert "| Classical twin" in report and "ResNet-18 (28)" in report
    assert "Targets (HQCNN, mean of the seeds): AUC ≥ 0.90:" in report  # met or missed, stated
    assert "on these 156 test images one image is 0.6 points of ACC" in report
    assert (tmp_path / "docs" / "results_breastmnist.png").stat().st_size > 1000
    # test-split intervals, from scores that reproduce each cell's reported metrics
    assert "Uncertainty of these means" in report and "| HQCNN minus classical twin | AUC |" in report
    # one seed here: its intervals are said to hold the test split's error only, and no verdict
    assert "With one seed the training runs' error is not measured" in report
    assert "Verdict on test AUC against its classical twin: none" in report
    assert "Verdict on test ACC against its classical twin: none" in report
    twin_row = next(line for line in report.splitlines() if line.startswith("| Classical twin"))
    assert twin_row.count("not judged (one seed)") == 2  # the HQCNN-minus-row columns
    assert "| HQCNN paper claim (*quoted*, arXiv 2509.14277 abstract) | not in abstract | 0.8718 |" in report
    assert (tmp_path / "docs" / "uncertainty_breastmnist.png").stat().st_size > 1000
    scores = tmp_path / "runs" / "breastmnist" / chosen / "hqcnn" / "seed0" / "test_scores.json"
    assert len(json.loads(scores.read_text())["scores"]) == 156
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(scores.parent, copy)
    (copy / "test_scores.json").unlink()
    tampered = json.loads((copy / "metrics.json").read_text())
    tampered["test"]["acc"] += 0.01
    (copy / "metrics.json").write_text(json.dumps(tampered))
    with pytest.raises(SystemExit, match="its metrics.json says"):
        results._test_scores(copy, data_root)

    # more epochs continue the finished cells from last.pt; fewer are refused
    cell = tmp_path / "runs" / "breastmnist" / "plain" / "hqcnn" / "seed0" / "metrics.json"
    one_epoch = json.loads(cell.read_text())["history"]
    longer = [a if a != "breastmnist=1" else "breastmnist=2" for a in argv]
    assert results.main(longer) == 0
    assert "recipe selection: 2 cells, 0 done, 2 to run" in capsys.readouterr().out
    history = json.loads(cell.read_text())["history"]
    assert len(history) == 2 and history[0] == one_epoch[0]
    with pytest.raises(SystemExit, match="trained for 2 epochs, this run asks for 1"):
        results.main(argv)
    # another recipe's settings in a folder are refused, not silently reused
    folders = tmp_path / "runs" / "breastmnist"
    (folders / "augment").rename(tmp_path / "moved")
    (folders / "plain").rename(folders / "augment")
    with pytest.raises(SystemExit, match="augment=False, this run asks for True"):
        results.main(longer)


def test_protocol_on_another_multiclass_dataset(tmp_path, capsys):
    """Any MedMNIST set the user has runs by the same command (here a synthetic BloodMNIST
    file with the official split sizes, on subsets), noise study included."""
    write_synthetic(tmp_path / "data", "bloodmnist")
    argv = ["--data-root", str(tmp_path / "data"), "--datasets", "bloodmnist", "--seeds", "0",
            "--epochs", "bloodmnist=1", "--recipes", "plain", "--rows", "classical",
            "--jobs", "1", "--limit-train", "48", "--limit-eval", "32", "--no-verify",
            "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")]
    assert results.main(argv) == 0
    report = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "## bloodmnist" in report and "**Subset run** (train 48 images, val/test 32 images)" in report
    assert "Recipe: **plain**, fixed by `--recipes`: no choice was made in this run" in report
    # the quoted MedMNIST v2 baseline of this dataset; the paper's abstract states none for it
    assert "| ResNet-18 (28), MedMNIST v2 (*quoted*) | 0.998 | 0.958 |" in report
    assert "| ResNet-50 (28), MedMNIST v2 (*quoted*) | 0.997 | 0.956 |" in report
    # one of the paper's six datasets, for which its abstract states no number
    assert ("| HQCNN paper claim (*quoted*, arXiv 2509.14277 abstract) | not in abstract | "
            "not in abstract |" in report)
    assert "| `aer_noisy_mitigated` |" in report and "HQCNN trained on `aer_noisy`" in report
    assert "s (1 epoch) |" in report and "| 1 epoch, recipe `plain` |" in report
    assert "Mitigated noisy accuracy minus exact accuracy" in report
    gap_line = next(line for line in report.splitlines() if line.startswith("Mitigated noisy"))
    # paired per image, from the cached scores; one seed: the images' error only, no judgement
    assert "points on average (95% interval from the images alone, one seed: " in gap_line
    assert "95% interval lies" not in gap_line and "reaches beyond" not in gap_line
    cell = json.loads((tmp_path / "runs" / "bloodmnist" / "plain" / "hqcnn" / "seed0" /
                       "metrics.json").read_text())
    assert cell["test"]["n"] == 32 and cell["config"]["dataset"]["flag"] == "bloodmnist"
    # the noisy evaluations are cached, and redone when the image subset changes
    cache = tmp_path / "runs" / "bloodmnist" / "plain" / "noise_aer_noisy_seed0.json"
    stamp = cache.stat().st_mtime_ns
    assert results.main(argv) == 0
    assert cache.stat().st_mtime_ns == stamp
    assert results.main([*argv, "--noise-limit", "12"]) == 0
    cached = json.loads(cache.read_text())
    assert cached["n"] == 12 and len(cached["scores"]) == 12 and len(cached["scores"][0]) == 8
    # the same folders with other settings are refused, not silently reused
    with pytest.raises(SystemExit, match="limit_train=48"):
        results.main([*argv[:-4], "--limit-train", "40", "--out", str(tmp_path / "runs"),
                      "--docs", str(tmp_path / "docs")])
    # without --docs, a report on other datasets goes under --out, never over docs/RESULTS.md
    main_report = results.REPO / "docs" / "RESULTS.md"
    before = main_report.stat().st_mtime_ns
    assert results.main(argv[:-2]) == 0
    assert (tmp_path / "runs" / "report" / "RESULTS.md").is_file()
    assert main_report.stat().st_mtime_ns == before
    # nor are finished cells mixed with another file of the same name
    write_synthetic(tmp_path / "other", "bloodmnist", seed=1)
    with pytest.raises(SystemExit, match="were trained on another bloodmnist.npz"):
        results.main(["--data-root", str(tmp_path / "other"), *argv[2:]])


def test_report_wording_counts_multilabel_images_and_one_class_models():
    assert results._count(1, "epoch") == "1 epoch" and results._count(60, "epoch") == "60 epochs"
    assert (results._image_points("breastmnist", 156)
            == "on these 156 test images one image is 0.6 points of ACC")
    # ChestMNIST's ACC is a mean over its 14 labels: one image is not 100/n points of it
    chest = results._image_points("chestmnist", 100)
    assert "one image's decision on one of its 14 labels is 0.07 points" in chest
    assert chest.endswith("all of one image's labels up to 1.0")
    # a model that gives every image the same decision is named in the noise-gap sentence
    one_class = {"task": "binary-class", "scores": [[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]]}
    varied = {"task": "binary-class", "scores": [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]}
    assert results._constant_seeds([one_class, varied, one_class], [3, 4, 5]) == [3, 5]
    same_labels = {"task": "multi-label, binary-class", "scores": [[0.9, 0.1], [0.8, 0.3]]}
    other_labels = {"task": "multi-label, binary-class", "scores": [[0.9, 0.1], [0.8, 0.7]]}
    assert results._constant_seeds([same_labels, other_labels], [0, 1]) == [0]
    argmax = {"task": "multi-class", "scores": [[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]]}
    assert results._constant_seeds([argmax], [7]) == [7]


def test_an_undefined_auc_reads_nan_instead_of_crashing():
    assert results._fmt([float("nan"), 0.5]) == "nan ± nan"  # a one-class --limit-eval subset
    assert results._fmt([0.5, 0.7]) == "0.600 ± 0.141"


def test_verdict_follows_the_interval_of_the_difference():
    from hqcnn_qiskit.uncertainty import Estimate

    def diff(mean, low, high, seeds=3):
        return Estimate(mean, low, high, 0.01, 0.01, seeds, 2000)

    assert "beats its twin: the difference is +0.020 and its 95% interval, +0.010 to +0.030, lies above 0" in results._verdict(diff(0.02, 0.01, 0.03), "its twin")
    text = results._verdict(diff(-0.016, -0.04, 0.01), "its twin")
    # a lopsided interval is stated as it is, not as its larger end both ways
    assert "includes 0. These runs allow the HQCNN anything from 0.040 worse to 0.010 better" in text
    assert results._standing(diff(-0.016, -0.04, 0.01)) == "-0.016 [-0.040, +0.010] **not shown better** (0 inside)"
    assert results._standing(diff(0.02, 0.01, 0.03)).endswith("**better**")
    assert results._standing(diff(-0.05, -0.08, -0.01)).endswith("**worse**")
    assert results._standing(diff(0.02, 0.01, 0.03, seeds=1)) == "+0.020, not judged (one seed)"
    assert results._verdict(diff(0.02, 0.01, 0.03), "its twin", "ACC").startswith("Verdict on test ACC")
    assert "more than any number of seeds" in text  # (1.96 + 0.84) * SE split 0.01 > 0.016
    planned = results._verdict(Estimate(-0.016, -0.04, 0.01, 0.002, 0.01, 3, 2000), "its twin")
    assert re.search(r"excluding 0 with 80% power would take about \d+ seeds \(here 3;", planned)
    assert "which is better" in results._verdict(diff(-0.05, -0.08, -0.01), "its twin")
    # one seed does not measure the training runs: no verdict, whatever the interval says
    assert "none; the difference is +0.020, but one seed" in results._verdict(
        diff(0.02, 0.01, 0.03, seeds=1), "its twin")
