"""The scripts that make the published tables and plots (scripts/), on a run and a report made here."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open

from conftest import ROOT
from fer_core import build_report, save_report
from fer_core.runs import RunStore

SCRIPTS = ROOT / "scripts"


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with three epochs of metrics, the best at epoch 2."""
    run = RunStore(tmp_path / "runs").create({"model": "resnet18", "img_size": 64, "epochs": 5}, "cmp")
    rows = [(1.9, 0.30, 0.20, False, 100.0), (1.2, 0.60, 0.55, True, 120.0), (1.1, 0.58, 0.56, False, 110.0)]
    with open(run.metrics_path, "w") as f:
        for epoch, (loss, acc, f1, best, seconds) in enumerate(rows, start=1):
            f.write(json.dumps({"epoch": epoch, "val_loss": loss, "val_acc": acc, "val_macro_f1": f1, "best": best,
                                "seconds": seconds, "images_per_s": 28709 / seconds}) + "\n")
    return run.path


def run_script(name: str, *args) -> str:
    out = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_compare_runs_reports_the_best_checkpoints_epoch(run_dir):
    lines = run_script("compare_runs.py", run_dir).strip().splitlines()
    assert len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["cmp", "resnet18", "64 px", "3/5", "2", "0.6000", "0.5500", "1.2000", "1.1000", "110", "261"]


def test_compare_runs_at_epochs_shows_each_runs_scores_there(run_dir):
    lines = run_script("compare_runs.py", run_dir, "--at-epochs", "1,3,5").strip().splitlines()[-5:]
    assert lines[0] == "| epoch | cmp |"
    assert lines[2:] == ["| 1 | 0.3000 / 0.2000 |", "| 3 | 0.5800 / 0.5600 |", "| 5 | - |"]


def test_report_tables_prints_headline_per_class_and_confusion(tmp_path):
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    report = {**build_report(np.array([0, 1, 1, 1]), probs, ["happy", "sad"]), "split": "PrivateTest",
              "tta": "flip"}
    save_report(report, tmp_path / "m.PrivateTest.json")
    text = run_script("report_tables.py", tmp_path / "m.PrivateTest.json")
    assert "| m.PrivateTest.json | PrivateTest | flip | 4 | 75.00% |" in text
    assert "| sad | 1.000 | 0.667 | 0.800 | 3 |" in text     # 2 of 3 sad found, every sad answer right
    assert "| happy | 1 | 0 |" in text and "| sad | 1 | 2 |" in text


def test_plot_training_writes_a_png(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(run_dir / "metrics.jsonl", "w") as f:   # the plot also needs the train curves
        for r in rows:
            f.write(json.dumps({**r, "train_loss": r["val_loss"] + 0.3, "train_acc": r["val_acc"] - 0.1}) + "\n")
    out = tmp_path / "curves.png"
    run_script("plot_training.py", run_dir, "--out", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_ablation_trains_one_run_per_variant_and_resumes_nothing_twice(tmp_path, monkeypatch):
    from conftest import make_folder_dataset

    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path / "cache"))
    data = make_folder_dataset(tmp_path / "fer", per_class=10)   # one batch of 64
    runs = tmp_path / "runs"
    common = ["--data", data, "--out", runs, "--epochs", 1, "--threads", 1]
    table = run_script("ablation.py", *common, "--only", "recipe", "no-mixup")
    store = RunStore(runs)
    configs = {r.run_id: r.read_config() for r in store.list()}
    assert set(configs) == {"ablation-recipe", "ablation-no-mixup"}
    assert configs["ablation-recipe"]["mixup_alpha"] > 0 and configs["ablation-no-mixup"]["mixup_alpha"] == 0
    assert all(c["epochs"] == 1 and c["clean_epochs"] == 0 for c in configs.values())
    assert "| ablation-recipe |" in table and "| ablation-no-mixup |" in table
    rows_before = (runs / "ablation-recipe" / "metrics.jsonl").read_text()

    table = run_script("ablation.py", *common, "--only", "recipe", "--model", "resnet18")
    resnet = store.get(runs / "ablation-recipe-resnet18")
    assert resnet.read_config()["model"] == "resnet18" and resnet.status()["state"] == "finished"
    assert {k: v for k, v in resnet.read_config().items() if k not in ("model", "seed")} == \
        {k: v for k, v in configs["ablation-recipe"].items() if k not in ("model", "seed")}
    assert (runs / "ablation-recipe" / "metrics.jsonl").read_text() == rows_before   # finished: not trained again
    assert "| ablation-recipe-resnet18 | resnet18 |" in table


def test_average_checkpoints_writes_the_mean_and_refuses_unlike_models(tiny_checkpoint, tmp_path):
    import torch

    from fer_core.checkpoint import FerClassifier, read_tensors, save_checkpoint
    from fer_core.storage import read_metadata

    state, _ = read_tensors(tiny_checkpoint)
    meta = read_metadata(tiny_checkpoint)
    with safe_open(str(tiny_checkpoint), "np") as f:
        raw = f.metadata()   # the stored strings
    shifted = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other.safetensors"   # raw weights shifted by 1, EMA weights shifted by 3
    save_checkpoint(other, shifted, raw, train_state={f"ema.{k}": v + 3.0 if v.is_floating_point() else v
                                                     for k, v in state.items()})
    out = tmp_path / "soup.safetensors"
    run_script("average_checkpoints.py", out, tiny_checkpoint, other, f"{other}#ema")
    soup, _ = read_tensors(out)
    for k, v in state.items():
        expected = v.float() + 4.0 / 3 if v.is_floating_point() else v   # (0 + 1 + 3) / 3
        assert torch.allclose(soup[k], expected, atol=1e-5), k
    soup_meta = read_metadata(out)
    assert soup_meta["class_names"] == meta["class_names"] and soup_meta["img_size"] == meta["img_size"]
    assert json.loads(soup_meta["averaged_from"]) == [str(tiny_checkpoint), str(other), f"{other}#ema"]
    FerClassifier.from_checkpoint(out).predict_proba(np.zeros((2, 48, 48), np.uint8))   # a usable model

    unlike = tmp_path / "unlike.safetensors"
    save_checkpoint(unlike, state, {**raw, "class_names": json.dumps(meta["class_names"][::-1])})
    for bad, message in [(unlike, "differs from .* in class_names"),
                         (f"{tiny_checkpoint}#ema", "keeps no EMA weights")]:
        failed = subprocess.run([sys.executable, str(SCRIPTS / "average_checkpoints.py"), str(tmp_path / "x.st"),
                                 str(other), str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert failed.returncode != 0 and re.search(message, failed.stderr), failed.stderr
        assert not (tmp_path / "x.st").exists()


def _headroom_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ensemble_headroom", SCRIPTS / "ensemble_headroom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ensemble_headroom_finds_the_pair_that_corrects_each_other(tmp_path):
    # 3 classes, 8 faces: model a is sure and right on the first half, unsure and wrong on the second;
    # model b the other way round. Alone each scores 50%; their mean log-probability is right on all.
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    sure = lambda c: np.eye(3)[c] * 0.88 + 0.04            # noqa: E731
    unsure_wrong = lambda c: np.eye(3)[(c + 1) % 3] * 0.15 + np.eye(3)[c] * 0.10 + 0.25   # noqa: E731
    a = np.array([sure(c) if i < 4 else unsure_wrong(c) for i, c in enumerate(y)])
    b = np.array([unsure_wrong(c) if i < 4 else sure(c) for i, c in enumerate(y)])
    names = ["angry", "fear", "happy"]
    for name, probs in (("a", a), ("b", b)):
        save_report({**build_report(y, probs, names), "split": "PublicTest", "tta": "none"},
                    tmp_path / f"{name}.PublicTest.json")
    text = run_script("ensemble_headroom.py", tmp_path / "a.PublicTest.json", f"bee={tmp_path / 'b.PublicTest.json'}")
    assert "| a | 50.00% |" in text and "| bee | 50.00% |" in text
    assert "| best of 2: a + bee | 100.00% | 1.0000 |" in text
    assert "headroom over the best single model: +0." in text
    assert "| a / bee | 0.00% | 100.00% | -1.000 |" in text       # each wrong exactly where the other is right

    # a report on other images is refused with the reason
    save_report({**build_report(y[:6], a[:6], names), "split": "PublicTest", "tta": "none"}, tmp_path / "c.json")
    failed = subprocess.run([sys.executable, str(SCRIPTS / "ensemble_headroom.py"), str(tmp_path / "a.PublicTest.json"),
                             str(tmp_path / "c.json")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "differs from" in failed.stderr and "ids" in failed.stderr


def test_ensemble_headroom_bias_cv_recovers_a_shifted_threshold_and_finds_none_where_there_is_none():
    headroom = _headroom_module()
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), y] += 2.0
    grid = np.round(np.arange(-1.5, 1.51, 0.1), 2)
    fair = headroom.bias_cv(logits, y, 1, grid, repeats=5)
    assert abs(fair["gain"]) < 0.02 and abs(fair["median_bias"]) <= 0.5
    shifted = logits.copy()
    shifted[:, 1] -= 1.2            # class 1 is under-predicted
    moved = headroom.bias_cv(shifted, y, 1, grid, repeats=5)
    assert moved["gain"] > 0.05 and 0.7 <= moved["median_bias"] <= 1.5
    assert moved["f1"] < fair["f1"] and moved["best_f1_in_sample"] > moved["f1"]


def test_cpu_bf16_bench_times_both_precisions_of_each_model(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_bf16.py"), "--data", str(tmp_path / "absent"),
                          "--models", "resnet18", "--steps", "1", "--warmup", "0", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"native bfloat16: (yes|no)", out.stdout)
    row = re.search(r"^resnet18\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.M)
    assert row, out.stdout
    fp32, bf16, ratio = map(float, row.groups())
    assert fp32 > 0 and bf16 > 0 and ratio == pytest.approx(bf16 / fp32, abs=0.01)
