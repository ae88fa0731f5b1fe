"""The Metrics page (Streamlit's AppTest, no browser) and its figure builders in dashboard/charts.py."""
from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from conftest import ROOT, heavy_libraries_loaded_by, make_folder_dataset
from dashboard import charts, exploration
from fer_core import embedding, slices
from fer_core.checkpoint import FerClassifier
from fer_core.data import load_dataset
from fer_core.evaluation import build_report, evaluate
from fer_core.storage import save_report

PAGE = str(ROOT / "pages" / "2_Metrics.py")


# --- the page ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_checkpoint):
    """Two copies of the tiny checkpoint with saved test-split reports, and the synthetic data set they
    were made on, in which the happy test images are filed as sad (so there are mistakes to show)."""
    base = tmp_path_factory.mktemp("metrics-page")
    ckpts = base / "checkpoints"
    ckpts.mkdir()
    (base / "runs").mkdir()
    shutil.copy(tiny_checkpoint, ckpts / "tiny.safetensors")
    shutil.copy(tiny_checkpoint, ckpts / "other.safetensors")
    data = make_folder_dataset(base / "fer", per_class=3, seed=1)
    for f in sorted((data / "test" / "happy").iterdir()):
        f.rename(data / "test" / "sad" / f.name)
    ds = load_dataset(data, cache_dir=base / "cache")
    clf = FerClassifier.from_checkpoint(tiny_checkpoint)
    reports = {"tiny": evaluate(clf, ds.split("test"), "test", source=str(data)),
               "other": evaluate(clf, ds.split("test"), "test", tta="flip", source=str(data))}
    save_report(reports["tiny"], ckpts / "tiny.test.json")
    save_report(reports["other"], ckpts / "other.test.flip.json")
    return {"base": base, "checkpoints": ckpts, "runs": base / "runs", "data": data, "reports": reports}


def page(monkeypatch, studio, with_data: bool, checkpoints: Path | None = None) -> AppTest:
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(checkpoints or studio["checkpoints"]))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(studio["runs"]))
    monkeypatch.setenv("FER2013_PATH", str(studio["data"] if with_data else studio["base"] / "nowhere"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def select_checkpoint(at: AppTest, label: str) -> AppTest:
    at.selectbox(key="metrics_checkpoint").set_value(label).run()
    assert not at.exception, at.exception
    return at


def open_tab(at: AppTest, label: str) -> AppTest:
    at.session_state["metrics_section"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def figure_with(at: AppTest, trace_type: str) -> dict:
    return next(f for f in figures(at) if any(t["type"] == trace_type for t in f["data"]))


def test_headline_metrics_are_the_saved_reports_numbers_without_the_data_set(monkeypatch, studio):
    at = page(monkeypatch, studio, with_data=False)
    assert at.selectbox(key="metrics_checkpoint").value == "bundled: other"   # the first bundled one
    select_checkpoint(at, "bundled: tiny")
    rep = studio["reports"]["tiny"]
    shown = {m.label: m.value for m in at.metric}
    assert shown == {"Accuracy": f"{rep['accuracy']:.1%}", "Macro-F1": f"{rep['macro']['f1']:.3f}",
                     "ECE": f"{rep['ece']:.3f}", "Images": f"{rep['num_images']:,}"}
    assert any("tiny.test.json" in c.value for c in at.caption)
    # the test split has no happy faces (they were filed as sad): the macro figures say they leave it out
    assert rep["absent_classes"] == ["happy"]
    assert any("no images of happy" in w.value and "average the other 6 classes" in w.value for w in at.warning)
    # per-class bars carry the report's numbers
    bars = figure_with(at, "bar")
    f1 = next(t for t in bars["data"] if t["name"] == "F1")
    assert f1["y"] == pytest.approx([rep["per_class"][c]["f1"] for c in rep["class_names"]])
    open_tab(at, "Misclassified")
    assert any("The gallery needs the data set" in i.value for i in at.info)


def test_only_the_open_tab_runs(monkeypatch, studio):
    at = select_checkpoint(page(monkeypatch, studio, with_data=False), "bundled: tiny")
    assert [t.label for t in at.tabs] == ["Per class", "Bias and calibration", "Misclassified", "Suspect labels",
                                         "Embedding map", "Error slices", "Compare"]
    assert {t for f in figures(at) for t in (d["type"] for d in f["data"])} == {"bar", "heatmap"}
    open_tab(at, "Bias and calibration")
    kinds = [{d["type"] for d in f["data"]} for f in figures(at)]
    assert {"box"} in kinds and not any("heatmap" in k for k in kinds)   # confidence boxes, no confusion matrix
    assert at.radio(key="metrics_conf_kind") and not at.get("download_button")
    open_tab(at, "Compare")
    assert not figures(at) and at.multiselect(key="metrics_compare")


def test_confusion_toggle_switches_counts_and_row_shares(monkeypatch, studio):
    at = select_checkpoint(page(monkeypatch, studio, with_data=False), "bundled: tiny")
    cm = np.array(studio["reports"]["tiny"]["confusion_matrix"], dtype=float)
    rows = cm.sum(1, keepdims=True)
    heatmap = figure_with(at, "heatmap")   # row shares first, each with its count, the diagonal outlined
    assert np.allclose(heatmap["data"][0]["z"], np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0))
    assert heatmap["data"][0]["text"][0][0] == f"{cm[0, 0] / rows[0, 0]:.0%}<br>({int(cm[0, 0])})"
    assert len(heatmap["layout"]["shapes"]) == len(cm)
    assert "scaleanchor" not in heatmap["layout"]["yaxis"]   # the cells take the width, not a square
    at.radio(key="metrics_cm_mode").set_value("counts").run()
    assert not at.exception
    assert np.allclose(figure_with(at, "heatmap")["data"][0]["z"], cm)


def test_choosing_two_checkpoints_shows_a_comparison(monkeypatch, studio):
    at = open_tab(page(monkeypatch, studio, with_data=False), "Compare")
    compare = at.multiselect(key="metrics_compare")
    assert compare.value == ["bundled: other · test.flip"]   # the report on show
    assert any("two or more" in m.value for m in at.markdown)
    assert set(compare.options) == {"bundled: other · test.flip", "bundled: tiny · test"}
    compare.set_value(["bundled: tiny · test", "bundled: other · test.flip"]).run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["Report"]) == ["bundled: tiny · test", "bundled: other · test.flip"]
    first = studio["reports"]["tiny"]
    for (_, row), rep in zip(table.iterrows(), (first, studio["reports"]["other"])):
        assert row["Accuracy"] == f"{rep['accuracy']:.1%}"
        assert row["Macro-F1"] == f"{rep['macro']['f1']:.3f}"
        assert row["F1 sad"] == f"{rep['per_class']['sad']['f1']:.3f}" and row["F1 happy"] == "–"   # none in test
        assert row["Δ accuracy (points)"] == f"{100 * (rep['accuracy'] - first['accuracy']):+.1f}"
    f1_bars = figures(at)[-1]
    assert [t["name"] for t in f1_bars["data"]] == list(table["Report"])
    headline = figures(at)[-2]
    low, high = headline["layout"]["yaxis"]["range"]
    assert high - low < 0.5 or low > 0 or high < 1   # zoomed to the bars, not 0-1


def test_compare_starts_with_the_checkpoints_saved_reports(monkeypatch, studio, tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", ckpts / "tiny.safetensors")
    save_report(studio["reports"]["tiny"], ckpts / "tiny.test.json")
    save_report(studio["reports"]["other"], ckpts / "tiny.test.flip.json")
    at = open_tab(page(monkeypatch, studio, with_data=False, checkpoints=ckpts), "Compare")
    assert at.multiselect(key="metrics_compare").value == ["bundled: tiny · test", "bundled: tiny · test.flip"]
    table = at.dataframe[-1].value
    assert table["Δ accuracy (points)"].iloc[0] == "+0.0" and "Δ macro-F1 (points)" in table


def test_metrics_opens_on_the_bundled_model_not_the_newest_run(monkeypatch, studio, tmp_path):
    from fer_core.runs import RunStore

    runs = tmp_path / "runs"
    run = RunStore(runs).create({"model": "efficientnet_b0", "epochs": 1}, "quick-run")
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", run.best_checkpoint)
    monkeypatch.setenv("FER_STUDIO_RUNS", str(runs))
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(studio["checkpoints"]))
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="metrics_checkpoint")
    assert "run: quick-run" in picker.options and picker.value.startswith("bundled:")


def test_per_class_table_reads_as_people_read(monkeypatch, studio):
    at = select_checkpoint(page(monkeypatch, studio, with_data=False), "bundled: tiny")
    table = at.dataframe[0].value
    assert list(table.columns)[:5] == ["Class", "Precision", "Recall", "F1", "Images"]
    assert "Confidence when right" in table and not any("_" in c for c in table.columns)
    rep = studio["reports"]["tiny"]
    row = table.set_index("Class").loc["angry"]
    assert row["Recall"] == f"{rep['per_class']['angry']['recall']:.1%}"
    assert not table.isna().any().any() and not table.isin(["None", "nan"]).any().any()


def test_the_bias_caption_is_computed_from_the_chart(monkeypatch, studio):
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=False), "bundled: tiny"),
                  "Bias and calibration")
    finding = charts.frequency_recall_finding(studio["reports"]["tiny"])
    assert finding and any(c.value.startswith(finding) for c in at.caption)
    assert not any("tend to be recalled less" in c.value for c in at.caption)


def test_gallery_shows_mistakes_filtered_by_true_and_predicted_class(monkeypatch, studio):
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny"), "Misclassified")
    rep = studio["reports"]["tiny"]
    wrong = [p for p in rep["predictions"] if p["true"] != p["predicted"]]
    assert len(at.image) == 1 and len(at.image[0].captions) == min(len(wrong), 48) > 0
    # the happy faces filed under sad: true sad, predicted happy
    at.selectbox(key="metrics_gallery_true").set_value("sad").run()
    at.selectbox(key="metrics_gallery_pred").set_value("happy").run()
    assert not at.exception
    expected = [p for p in wrong if p["true"] == "sad" and p["predicted"] == "happy"]
    captions = at.image[0].captions
    assert len(captions) == len(expected) > 0 and all(c.startswith("sad → happy (") for c in captions)
    at.selectbox(key="metrics_gallery_true").set_value("happy").run()   # no happy test images are left
    assert not at.image and any("No misclassified images" in m.value for m in at.markdown)


def test_gallery_reads_the_data_set_once(monkeypatch, studio):
    """The image index and the pixels come from one cached load (it used to list the data set twice)."""
    import streamlit as st
    from dashboard import common

    calls = []
    real_load = common.load_dataset
    monkeypatch.setattr(common, "load_dataset",
                        lambda *a, **k: calls.append(k.get("pixels", True)) or real_load(*a, **k))
    st.cache_resource.clear()
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny"), "Misclassified")
    assert len(at.image) == 1 and at.image[0].captions
    assert calls == [True]


def test_evaluate_now_on_a_split_without_a_saved_report(monkeypatch, studio, tiny_checkpoint):
    at = select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny")
    split = next(s for s in at.selectbox if s.label == "Split")
    assert split.options[0] == "test" and "PublicTest" in split.options
    split.set_value("PublicTest").run()
    assert any("No saved report for **PublicTest**" in i.value for i in at.info) and not at.metric
    at.button(key="metrics_evaluate").click().run()
    assert not at.exception, at.exception
    ds = load_dataset(studio["data"])
    rep = evaluate(FerClassifier.from_checkpoint(tiny_checkpoint), ds.split("PublicTest"), "PublicTest")
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{rep['accuracy']:.1%}"
    assert {m.label: m.value for m in at.metric}["Images"] == str(rep["num_images"])
    at.radio(key="metrics_cm_mode").set_value("row-normalised").run()   # a rerun keeps the evaluation
    assert not at.exception and at.metric
    open_tab(at, "Compare")
    assert "bundled: tiny · PublicTest (TTA none, evaluated now)" in at.multiselect(key="metrics_compare").options


def test_an_evaluation_saved_beside_the_checkpoint_shows_without_the_data_set(monkeypatch, studio, tmp_path):
    own = tmp_path / "checkpoints"
    own.mkdir()
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", own / "tiny.safetensors")
    at = page(monkeypatch, studio, with_data=True, checkpoints=own)
    assert next(s for s in at.selectbox if s.label == "Split").value == "PrivateTest"   # the reported split first
    at.button(key="metrics_evaluate").click().run()
    accuracy = {m.label: m.value for m in at.metric}["Accuracy"]
    at.button(key="metrics_save").click().run()
    assert not at.exception and (own / "tiny.PrivateTest.json").is_file()
    at = page(monkeypatch, studio, with_data=False, checkpoints=own)
    assert {m.label: m.value for m in at.metric}["Accuracy"] == accuracy
    assert any("tiny.PrivateTest.json" in c.value for c in at.caption)


def test_no_data_set_and_no_saved_report_says_so(monkeypatch, studio, tmp_path):
    bare = tmp_path / "checkpoints"
    bare.mkdir()
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", bare / "tiny.safetensors")
    at = page(monkeypatch, studio, with_data=False, checkpoints=bare)
    assert any("No saved report for `tiny.safetensors` and FER-2013 was not found" in i.value for i in at.info)
    assert not at.metric
    empty = tmp_path / "none"
    empty.mkdir()
    at = page(monkeypatch, studio, with_data=False, checkpoints=empty)
    assert any("No checkpoint found" in i.value for i in at.info)


def test_csv_downloads_have_a_row_a_class_and_a_row_an_image(monkeypatch, studio):
    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    at = select_checkpoint(page(monkeypatch, studio, with_data=False), "bundled: tiny")
    rep = studio["reports"]["tiny"]

    def content(key: str) -> pd.DataFrame:
        url = at.get_by_key(key).proto.url   # /mock/media/<file id>.<ext>
        return pd.read_csv(StringIO(stored[url.rsplit("/", 1)[1].split(".")[0]].decode()))

    per_class = content("metrics_csv_per_class")
    assert list(per_class["class"]) == rep["class_names"]
    expected = [rep["per_class"][c]["recall"] for c in rep["class_names"]]
    assert expected.count(None) == 1   # happy has no test images: its recall is blank in the CSV
    assert per_class["recall"].tolist() == pytest.approx([float("nan") if r is None else r for r in expected],
                                                         nan_ok=True)
    predictions = content("metrics_csv_predictions")
    assert len(predictions) == rep["num_images"] and list(predictions["id"]) == [p["id"] for p in rep["predictions"]]


# --- dashboard/charts.py -------------------------------------------------------------------------

NAMES = ("a", "b", "c")
CASES = [  # true label, probabilities (as in test_evaluate.py)
    (0, [0.70, 0.20, 0.10]), (0, [0.60, 0.30, 0.10]), (0, [0.20, 0.55, 0.25]), (1, [0.05, 0.85, 0.10]),
    (1, [0.45, 0.30, 0.25]), (2, [0.10, 0.10, 0.80]), (2, [0.90, 0.05, 0.05]), (2, [0.20, 0.15, 0.65]),
]


@pytest.fixture
def report():
    y = np.array([t for t, _ in CASES])
    return build_report(y, np.array([p for _, p in CASES]), NAMES, ids=[f"img{i}" for i in range(8)], n_bins=4)


def test_per_class_bars_and_table(report):
    fig = charts.per_class_bars(report)
    assert [t.name for t in fig.data] == ["Precision", "Recall", "F1"]
    for trace, key in zip(fig.data, ("precision", "recall", "f1")):
        assert list(trace.x) == list(NAMES)
        assert list(trace.y) == pytest.approx([report["per_class"][c][key] for c in NAMES])
    table = charts.per_class_table(report)
    assert list(table["class"]) == list(NAMES) and list(table["support"]) == [3, 2, 3]
    assert list(table["ece"]) == pytest.approx([report["per_class"][c]["calibration_ece"] for c in NAMES])


def test_confusion_heatmap_counts_and_row_normalised(report):
    counts = charts.confusion_heatmap(report, normalise=False).data[0]
    assert np.array(counts.z).tolist() == [[2, 1, 0], [1, 1, 0], [1, 0, 2]]
    shares = np.array(charts.confusion_heatmap(report, normalise=True).data[0].z)
    assert shares == pytest.approx(np.array([[2 / 3, 1 / 3, 0], [1 / 2, 1 / 2, 0], [1 / 3, 0, 2 / 3]]))
    empty_row = {**report, "confusion_matrix": [[0, 0, 0], [1, 1, 0], [1, 0, 2]]}
    assert charts.confusion_values(empty_row, normalise=True)[0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_confidence_distribution_splits_right_and_wrong(report, kind):
    fig = charts.confidence_distribution(report, kind)
    right, wrong = fig.data
    assert (right.name, wrong.name) == ("right", "wrong") and right.type == kind
    assert list(right.x) == ["a", "a", "b", "c", "c"] and list(right.y) == pytest.approx([.7, .6, .85, .8, .65])
    assert list(wrong.x) == ["a", "b", "c"] and list(wrong.y) == pytest.approx([.55, .45, .9])
    with pytest.raises(ValueError):
        charts.confidence_distribution(report, "strip")


def test_reliability_diagram_overall_and_per_class(report):
    fig = charts.reliability_diagram(report)
    bars = fig.data[0]
    filled = [b for b in report["reliability"] if b["count"]]
    assert list(bars.y) == pytest.approx([b["accuracy"] for b in filled])
    assert list(fig.data[1].y) == pytest.approx([b["confidence"] for b in filled])
    assert f"ECE {report['ece']:.3f}" in fig.layout.title.text
    one = charts.reliability_diagram(report, "a")
    filled_a = [b for b in report["per_class"]["a"]["calibration_bins"] if b["count"]]
    assert sum(c for c, _ in one.data[0].customdata) == report["per_class"]["a"]["predicted"] == 4
    assert list(one.data[0].y) == pytest.approx([b["accuracy"] for b in filled_a])


def test_ece_bars_and_frequency_scatter(report):
    ece = charts.ece_per_class_bars(report).data[0]
    assert list(ece.y) == pytest.approx([report["per_class"][c]["calibration_ece"] for c in NAMES])
    scatter = charts.frequency_vs_recall(report).data[0]
    assert list(scatter.x) == [3, 2, 3] and list(scatter.text) == list(NAMES)
    assert list(scatter.y) == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    trained = charts.frequency_vs_recall(report, {"a": 100, "b": 10, "c": 50}, "training images").data[0]
    assert list(trained.x) == [100, 10, 50]


def test_comparison_table_and_bars(report):
    other = build_report(np.array([0, 1, 2]), np.eye(3), NAMES)
    reports = {"first": report, "perfect": other}
    table = charts.comparison_table(reports)
    assert list(table["report"]) == ["first", "perfect"]
    assert list(table["accuracy"]) == pytest.approx([5 / 8, 1.0]) and list(table["f1_b"]) == pytest.approx([.5, 1.0])
    f1 = charts.comparison_f1_bars(reports)
    assert [t.name for t in f1.data] == ["first", "perfect"] and list(f1.data[1].y) == [1.0, 1.0, 1.0]
    head = charts.comparison_headline_bars(reports)
    assert list(head.data[0].x) == ["accuracy", "macro-F1", "weighted F1"]   # ECE, on its own scale, in the table
    assert list(head.data[0].y) == pytest.approx([5 / 8, report["macro"]["f1"], report["weighted"]["f1"]])
    assert charts.zoomed_range([0.66, 0.67]) == pytest.approx([0.615, 0.715])   # a point's difference shows
    assert charts.zoomed_range([0.2, 0.9]) == pytest.approx([0.18, 0.92])


def test_the_frequency_finding_says_what_the_numbers_say(report):
    rare_but_recalled = {"a": 100, "b": 10, "c": 50}   # b: the rarest; recalls a 2/3, b 1/2, c 2/3
    text = charts.frequency_recall_finding(report, rare_but_recalled)
    assert text.startswith("The rarest class, b (6.2% of these images), has the 3rd-highest recall of 3 (0.50).")
    assert "rarer classes are recalled less" in text
    flipped = charts.frequency_recall_finding(report, {"a": 10, "b": 100, "c": 20})
    assert "rarest class, a" in flipped and "1st-highest" in flipped and "recalled less" not in flipped


def test_misclassified_and_predictions_table(report):
    wrong, n = charts.misclassified(report)
    assert n == 3 and [w["id"] for w in wrong] == ["img6", "img2", "img4"]   # most confident first
    assert charts.misclassified(report, true="c")[0][0] == {"id": "img6", "true": "c", "predicted": "a",
                                                             "confidence": pytest.approx(0.9)}
    assert charts.misclassified(report, predicted="b")[1] == 1 and charts.misclassified(report, limit=1)[1] == 3
    table = charts.predictions_table(report)
    assert len(table) == 8 and table["correct"].sum() == 5 and list(table.columns[-3:]) == ["p_a", "p_b", "p_c"]


def test_the_single_model_report_is_shown_before_its_tta_variants(monkeypatch, studio, tmp_path):
    own = tmp_path / "checkpoints"
    own.mkdir()
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", own / "m.safetensors")
    save_report(studio["reports"]["other"], own / "m.test.flip.json")   # sorts before m.test.json
    save_report(studio["reports"]["tiny"], own / "m.test.json")
    at = page(monkeypatch, studio, with_data=False, checkpoints=own)
    assert at.selectbox(key="metrics_tta::" + str(own / "m.safetensors") + "::test").value == "none"
    assert any("m.test.json" in c.value for c in at.caption)


def test_class_frequency_from_the_training_set_when_the_data_set_is_present(monkeypatch, studio):
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny"),
                  "Bias and calibration")
    assert at.radio(key="metrics_freq_source").value == "training set"
    scatter = next(f for f in figures(at) if f["data"][0].get("mode") == "markers+text")   # not the reliability
    training = load_dataset(studio["data"]).counts()["Training"]
    assert scatter["data"][0]["x"] == [training[c] for c in studio["reports"]["tiny"]["class_names"]]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "images in the training set"


def test_a_data_set_without_the_checkpoints_classes_is_named_and_saved_reports_still_show(monkeypatch, studio,
                                                                                          tmp_path):
    two_classes = make_folder_dataset(tmp_path / "two", per_class={"angry": 3, "happy": 3})
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(studio["checkpoints"]))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(studio["runs"]))
    monkeypatch.setenv("FER2013_PATH", str(two_classes))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at = select_checkpoint(at, "bundled: tiny")
    warning = next(w.value for w in at.warning if "cannot be used with this checkpoint" in w.value)
    assert "no disgust, fear, sad, surprise, neutral images" in warning and "it has angry, happy" in warning
    assert next(s for s in at.selectbox if s.label == "Split").options == ["test"]   # the saved report only
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{studio['reports']['tiny']['accuracy']:.1%}"


def test_saved_reports_show_without_importing_pytorch(monkeypatch, studio):
    """Showing saved reports needs no model: the page's first render does not pay for importing PyTorch."""
    load_dataset(studio["data"])   # cached, as the data set is after any earlier visit or command
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(studio["checkpoints"]))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(studio["runs"]))
    monkeypatch.setenv("FER2013_PATH", str(studio["data"]))
    code = ("from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('pages/2_Metrics.py', default_timeout=120).run()\n"
            "assert not at.exception, at.exception\n"
            "assert {m.label for m in at.metric} >= {'Accuracy', 'Macro-F1'}, at.metric\n"
            "assert at.get('plotly_chart'), 'no per-class chart'\n"
            "assert 'PublicTest' in next(s for s in at.selectbox if s.label == 'Split').options\n")
    assert heavy_libraries_loaded_by(code, libraries=("torch",)) == []


# --- suspect labels, embedding map and error slices --------------------------------------------------

def hand_made_embedding(report: dict, ids: list[str] | None = None) -> dict:
    """A map of a report's images on a line, its classes as the report's, made without a model."""
    names = report["class_names"]
    ids = ids or [p["id"] for p in report["predictions"]]
    truth = {p["id"]: names.index(p["true"]) for p in report["predictions"]}
    return {"format": embedding.EMBEDDING_FORMAT, "split": report["split"], "method": "tsne", "seed": 0,
            "class_names": names, "num_images": len(ids), "feature_dim": 1280, "ids": ids,
            "x": [float(i) for i in range(len(ids))], "y": [0.0] * len(ids), "true": [truth.get(i, 0) for i in ids],
            "predicted": [0] * len(ids), "confidence": [0.5] * len(ids)}


@pytest.fixture
def own_checkpoints(studio, tmp_path):
    own = tmp_path / "checkpoints"
    own.mkdir()
    shutil.copy(studio["checkpoints"] / "tiny.safetensors", own / "tiny.safetensors")
    save_report(studio["reports"]["tiny"], own / "tiny.test.json")
    return own


def test_a_saved_embedding_map_shows_without_the_data_set_coloured_three_ways(monkeypatch, studio, own_checkpoints):
    rep = studio["reports"]["tiny"]
    embedding.save_embedding(hand_made_embedding(rep), own_checkpoints / "tiny.safetensors")
    at = open_tab(page(monkeypatch, studio, with_data=False, checkpoints=own_checkpoints), "Embedding map")
    assert next(s for s in at.selectbox if s.label == "Split").options == ["test"]   # the sidecar is no report
    fig = figure_with(at, "scattergl")
    assert sum(len(t["x"]) for t in fig["data"]) == rep["num_images"] and len(fig["data"]) == len(rep["class_names"])
    assert any("faces of test" in c.value for c in at.caption)
    at.radio(key="metrics_embed_colour").set_value("right/wrong").run()
    right, wrong = figure_with(at, "scattergl")["data"]
    n_right = sum(p["true"] == p["predicted"] for p in rep["predictions"])   # the report's predictions, not the map's
    assert (len(right["x"]), len(wrong["x"])) == (n_right, rep["num_images"] - n_right)


def test_without_a_map_or_the_data_set_the_page_names_the_command(monkeypatch, studio, own_checkpoints):
    at = open_tab(page(monkeypatch, studio, with_data=False, checkpoints=own_checkpoints), "Embedding map")
    assert any("python -m fer_core embed --checkpoint" in i.value for i in at.info) and not at.get("plotly_chart")
    open_tab(at, "Error slices")
    assert any("python -m fer_core slices --checkpoint" in i.value for i in at.info)


def test_the_embedding_map_is_computed_here_once_and_saved(monkeypatch, studio, own_checkpoints):
    at = open_tab(page(monkeypatch, studio, with_data=True, checkpoints=own_checkpoints), "Embedding map")
    at.button(key="metrics_embed_compute").click().run()
    assert not at.exception, at.exception
    saved = embedding.load_embedding(own_checkpoints / "tiny.safetensors", "test")
    assert saved and saved["num_images"] == studio["reports"]["tiny"]["num_images"]
    assert sum(len(t["x"]) for t in figure_with(at, "scattergl")["data"]) == saved["num_images"]


def test_error_slices_from_the_data_set_add_up_and_a_class_can_be_chosen(monkeypatch, studio):
    rep = studio["reports"]["tiny"]
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny"), "Error slices")
    bars = figure_with(at, "bar")["data"][0]
    assert sum(int(t.split("n=")[1]) for t in bars["text"]) == rep["num_images"]
    assert [o.split(":")[0] for o in at.selectbox(key="metrics_slice_property").options] == ["brightness", "contrast",
                                                                                             "sharpness"]
    at.selectbox(key="metrics_slice_score").set_value("recall of fear").run()
    bars = figure_with(at, "bar")["data"][0]
    assert sum(int(t.split("n=")[1]) for t in bars["text"]) == rep["per_class"]["fear"]["support"]
    assert figure_with(at, "heatmap")["data"][0]["y"] == rep["class_names"]


def test_saved_slices_show_without_the_data_set(monkeypatch, studio, own_checkpoints):
    rep = studio["reports"]["tiny"]
    names = rep["class_names"]
    y_true = [names.index(p["true"]) for p in rep["predictions"]]
    y_pred = [names.index(p["predicted"]) for p in rep["predictions"]]
    made = slices.slice_report({"brightness": np.arange(len(y_true), dtype=float)}, y_true, y_pred, names, 2, "test")
    slices.save_slices(made, slices.slices_file(own_checkpoints / "tiny.safetensors", "test"))
    at = open_tab(page(monkeypatch, studio, with_data=False, checkpoints=own_checkpoints), "Error slices")
    assert len(figure_with(at, "bar")["data"][0]["x"]) == 2 and not at.info


def test_suspect_labels_section_is_on_the_page(monkeypatch, studio):
    at = open_tab(select_checkpoint(page(monkeypatch, studio, with_data=True), "bundled: tiny"), "Suspect labels")
    assert "Suspect labels" in {m.label for m in at.metric}


def test_embedding_frame_scatter_and_selection(report):
    emb = hand_made_embedding({**report, "split": "test"})
    frame = exploration.embedding_frame(emb, report)
    assert list(frame["predicted"]) == [p["predicted"] for p in report["predictions"]]
    assert (frame["outcome"] == "right").sum() == 5
    fig = exploration.embedding_scatter(frame, "true class", NAMES)
    assert [len(t.x) for t in fig.data] == [3, 2, 3]
    points = [{"curve_number": 2, "point_index": 0}, {"curve_number": 0, "point_index": 1},
              {"curve_number": 2, "point_index": 0}]
    assert exploration.selected_ids(fig, points) == [fig.data[2].customdata[0], fig.data[0].customdata[1]]
    without = exploration.embedding_frame(emb)   # no report: the map's own predictions
    assert set(without["predicted"]) == {"a"}


def test_slice_figures_show_the_bins_counts_and_the_split_line():
    y_true, y_pred = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 0, 2])
    made = slices.slice_report({"brightness": np.array([1., 4, 2, 5, 3, 6])}, y_true, y_pred, NAMES, n_bins=2)
    bars = exploration.slice_bars(made, "brightness")
    assert list(bars.data[0].y) == pytest.approx([2 / 3, 2 / 3]) and list(bars.data[0].x) == ["1–3", "4–6"]
    assert [t.split("n=")[1] for t in bars.data[0].text] == ["3", "3"]
    heat = exploration.slice_recall_heatmap(made, "brightness").data[0]
    assert heat.z[0] == pytest.approx([50, -50])   # class a: recall 1 then 0, against 1/2 overall
    table = exploration.worst_slices_table(slices.worst_slices(made, min_support=1))
    assert table.iloc[0]["Class"] in NAMES and table.iloc[0]["Points below"] == "50.0"
