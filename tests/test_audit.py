"""Suspect labels (fer_core.audit and ``python -m fer_core audit``) on probabilities and reports made here."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from conftest import ROOT, heavy_libraries_loaded_by, make_folder_dataset
from fer_core import cli
from fer_core.audit import AuditError, CSV_COLUMNS, audit_report, find_suspects, pair_counts, suspects_of_pair
from fer_core.storage import BUNDLED_CHECKPOINT, temporaries_of

CLASSES = ["angry", "fear", "happy", "sad"]
BUNDLED = BUNDLED_CHECKPOINT


def planted(n: int = 400, flips: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities of a good model (most mass on the true class, a few honest mistakes) and labels with
    ``flips`` of them changed to another class: (given labels, probabilities, indices of the flipped)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), true] += rng.uniform(1.5, 5, n)   # from unsure to sure; some argmax elsewhere
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sure = np.flatnonzero(probs[np.arange(n), true] > 0.9)
    flipped = rng.choice(sure, flips, replace=False)   # a flip the model contradicts confidently
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, len(CLASSES), flips)) % len(CLASSES)
    return given, probs, flipped


def report_of(given, probs, split: str = "PublicTest") -> dict:
    from fer_core.evaluation import build_report

    report = build_report(given, probs, CLASSES, [f"img{i:04d}.png" for i in range(len(given))])
    report.update(split=split, tta="none")
    return report


def test_planted_label_flips_are_found_and_ranked_first():
    given, probs, flipped = planted()
    audit = find_suspects(given, probs, CLASSES)
    found = [int(s["id"]) for s in audit["suspects"]]
    assert set(flipped) <= set(found)
    # the confident contradictions outrank the model's honest, unsure mistakes
    assert set(found[:len(flipped)]) == set(flipped.tolist())
    quality = [s["quality"] for s in audit["suspects"]]
    assert quality == sorted(quality)
    for s in audit["suspects"]:
        i = int(s["id"])
        assert s["given"] == CLASSES[given[i]] and s["predicted"] == CLASSES[probs[i].argmax()]
        assert s["given_probability"] == pytest.approx(probs[i, given[i]])
        assert s["confidence"] == pytest.approx(probs[i].max())


def test_counts_add_up_and_the_figures_without_the_flagged_stand_beside_the_full_ones():
    given, probs, _ = planted(seed=1)
    report = report_of(given, probs)
    audit = audit_report(report)
    flagged = {s["id"] for s in audit["suspects"]}
    assert sum(r["flagged"] for r in audit["per_class"].values()) == audit["num_flagged"] == len(flagged)
    assert sum(r["images"] for r in audit["per_class"].values()) == audit["num_images"] == len(given)
    assert sum(n for _, n in pair_counts(audit)) == audit["num_flagged"]
    assert sum(len(suspects_of_pair(audit, g)) for g in CLASSES) == audit["num_flagged"]
    # the full figures are the report's own (same macro rule), the others those of the images kept
    assert audit["all_images"]["accuracy"] == pytest.approx(report["accuracy"])
    assert audit["all_images"]["macro_f1"] == pytest.approx(report["macro"]["f1"])
    kept = [p for p in report["predictions"] if p["id"] not in flagged]
    assert audit["without_flagged"]["images"] == len(kept) == len(given) - len(flagged)
    assert audit["without_flagged"]["accuracy"] == pytest.approx(np.mean([p["true"] == p["predicted"] for p in kept]))


def test_cli_writes_the_csv_most_suspect_first(tmp_path, capsys):
    given, probs, flipped = planted(seed=2)
    report = tmp_path / "r.json"
    report.write_text(json.dumps(report_of(given, probs)))
    out = tmp_path / "out" / "suspects.csv"
    assert cli.main(["audit", "--report", str(report), "--split", "PublicTest", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {f"img{i:04d}.png" for i in flipped} <= {r["id"] for r in rows}
    assert [float(r["label_quality"]) for r in rows] == sorted(float(r["label_quality"]) for r in rows)
    assert f"{len(rows):,} of {len(given):,} images flagged" in printed and "without the" in printed
    assert not temporaries_of(out)


def test_cli_audits_a_fresh_evaluation(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "fer", per_class=2)
    out = tmp_path / "s.csv"
    assert cli.main(["audit", "--checkpoint", str(BUNDLED), "--data", str(data), "--split", "PrivateTest",
                     "--runtime", "torch", "--csv", str(out)]) == 0
    ids = {r["id"] for r in csv.DictReader(out.open())}
    assert ids <= {str(p.relative_to(data)) for p in data.glob("test/*/PrivateTest_*")}
    assert "of 14 images flagged" in capsys.readouterr().out


def test_the_training_split_is_refused_unless_cross_validated(tmp_path, capsys):
    given, probs, flipped = planted(seed=3)
    report = report_of(given, probs, split="Training")
    with pytest.raises(AuditError, match="not out-of-sample"):
        audit_report(report)
    found = {s["id"] for s in audit_report(report, cross_validated=True)["suspects"]}
    assert {f"img{i:04d}.png" for i in flipped} <= found
    assert audit_report({**report, "cross_validated": True})["num_flagged"] > 0
    # refused before any data is read or model evaluated: the data path does not exist
    assert cli.main(["audit", "--data", str(tmp_path / "absent"), "--split", "Training",
                     "--csv", str(tmp_path / "s.csv")]) == 2
    assert "not out-of-sample" in capsys.readouterr().err
    assert cli.main(["audit", "--data", str(tmp_path / "absent"), "--split", "Training", "--cross-validated",
                     "--csv", str(tmp_path / "s.csv")]) == 2   # a fresh evaluation on Training never is
    assert "--cross-validated describes a --report" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    path = tmp_path / "cv.json"
    path.write_text(json.dumps(report))
    assert cli.main(["audit", "--report", str(path), "--csv", str(tmp_path / "s.csv")]) == 2
    assert cli.main(["audit", "--report", str(path), "--cross-validated", "--csv", str(tmp_path / "s.csv")]) == 0
    assert {f"img{i:04d}.png" for i in flipped} <= {r["id"] for r in csv.DictReader((tmp_path / "s.csv").open())}


SECRET = "do-not-echo-this"


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("predictions"), "no per-image predictions"),
    (lambda r: r.update(predictions=[]), "no per-image predictions"),
    (lambda r: r["predictions"][5].update(probabilities=[0.5, 0.5]), "prediction 5 .* no row of 4 probabilities"),
    (lambda r: r["predictions"][3].update(probabilities=[SECRET] * 4), "prediction 3 .* no row of 4"),
    (lambda r: r["predictions"][2].update(probabilities=[0.9, 0.9, 0.1, 0.1]), "prediction 2 .* summing to 1"),
    (lambda r: r["predictions"][7].update(true=SECRET), "prediction 7 .* no true label"),
    (lambda r: r["predictions"][1].pop("id"), "prediction 1 .* no id"),
    (lambda r: r.update(class_names=SECRET), "no list of class names"),
])
def test_a_report_with_missing_or_malformed_predictions_is_a_clear_error(tmp_path, capsys, breakage, message):
    given, probs, _ = planted(n=40, flips=2, seed=4)
    report = report_of(given, probs)
    breakage(report)
    with pytest.raises(AuditError, match=message):
        audit_report(report)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert cli.main(["audit", "--report", str(path), "--csv", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and SECRET not in err
    assert not (tmp_path / "s.csv").exists()


def test_a_file_that_is_not_a_report_is_a_clear_error(tmp_path, capsys):
    for name, content in (("text.json", f"{SECRET}\n".encode()), ("list.json", b"[1, 2]"),
                          ("binary.json", b"\xff\xfe" + SECRET.encode())):
        path = tmp_path / name
        path.write_bytes(content)
        assert cli.main(["audit", "--report", str(path), "--csv", str(tmp_path / "s.csv")]) == 2
        err = capsys.readouterr().err
        assert f"{path} is not a JSON report" in err and SECRET not in err
    assert cli.main(["audit", "--report", str(tmp_path / "none.json"), "--csv", str(tmp_path / "s.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_report_on_another_split_is_refused(tmp_path, capsys):
    given, probs, _ = planted(n=40, flips=2, seed=5)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report_of(given, probs, split="PrivateTest")))
    assert cli.main(["audit", "--report", str(path), "--split", "PublicTest", "--csv", str(tmp_path / "s.csv")]) == 2
    assert "another split" in capsys.readouterr().err


def script(name: str):
    """A script of scripts/ as a module (its main called in-process: no interpreter start)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suspect_grid_draws_the_most_suspect_faces_and_reads_only_inside_the_data_set(tmp_path, capsys):
    import cv2

    suspect_grid = script("suspect_grid")

    data = make_folder_dataset(tmp_path / "fer", per_class={c: 6 for c in CLASSES})
    files = sorted(data.glob("test/*/PublicTest_*"))
    cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((48, 48), np.uint8))
    ids = ["../outside.png"] + [str(f.relative_to(data)) for f in files]
    given = np.array([0] + [CLASSES.index(f.parent.name) for f in files])
    probs = np.full((len(ids), len(CLASSES)), 0.02)
    probs[np.arange(len(ids)), given] = 0.94
    contradicted = [0, 1, 2, 3, 4, 5]   # the model is sure of another class: the outside file and five faces
    probs[contradicted] = np.roll(probs[contradicted], 1, axis=1)
    report = {**report_of(given, probs), "predictions": [
        {"id": i, "true": CLASSES[g], "predicted": CLASSES[p.argmax()], "probabilities": p.tolist()}
        for i, g, p in zip(ids, given, probs)]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    out = tmp_path / "grid.png"
    assert suspect_grid.main(["--report", str(path), "--data", str(data), "--out", str(out), "--count", "4",
                              "--columns", "2"]) == 0
    assert "the 4 most suspect of 6 flagged" in capsys.readouterr().out
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    tile_h = suspect_grid.TILE + suspect_grid.TEXT_ROWS * suspect_grid.ROW_HEIGHT + 4
    assert image.shape == (2 * (tile_h + 4) + 4, 2 * (suspect_grid.TILE + 4) + 4)
    assert suspect_grid.face_from(data, "../outside.png") is None and suspect_grid.face_from(data, ids[1]) is not None


def test_auditing_a_saved_report_imports_no_pytorch(tmp_path):
    given, probs, _ = planted(n=60, flips=2, seed=8)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report_of(given, probs)))
    code = f"from fer_core.audit import audit_report, read_report\naudit_report(read_report({str(path)!r}))"
    assert heavy_libraries_loaded_by(code, libraries=("torch", "streamlit")) == []
