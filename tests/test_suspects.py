"""The suspect-labels section of the Metrics page (dashboard/suspects.py) in Streamlit's AppTest."""
from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from test_audit import CLASSES, planted, report_of


def section(report, face_of):
    from dashboard.suspects import show_suspect_labels

    show_suspect_labels(report, face_of)


def faces_by_id(report: dict) -> dict[str, np.ndarray]:
    """A distinct grey face an image: its pixels are its position, so a shown image names its id."""
    return {p["id"]: np.full((48, 48), i % 256, np.uint8) for i, p in enumerate(report["predictions"])}


def run(report: dict, face_of) -> AppTest:
    at = AppTest.from_function(section, args=(report, face_of), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def planted_report():
    given, probs, flipped = planted(seed=6)
    return report_of(given, probs), flipped


def test_counts_figures_gallery_and_csv(planted_report):
    from fer_core.audit import audit_report, suspects_csv

    report, flipped = planted_report
    audit = audit_report(report)
    faces = faces_by_id(report)
    asked = []
    at = run(report, lambda i: asked.append(i) or faces.get(i))
    counts = at.dataframe[0].value
    assert list(counts["Class"]) == CLASSES
    assert [int(n) for n in counts["Flagged"]] == [audit["per_class"][c]["flagged"] for c in CLASSES]
    assert at.metric[0].value == f"{audit['num_flagged']:,}"
    kept, full = audit["without_flagged"]["accuracy"], audit["all_images"]["accuracy"]
    assert at.metric[1].value == f"{kept:.1%}" and at.metric[1].delta == f"{(kept - full) * 100:+.1f} points"
    # the gallery asks for the flagged faces, most suspect first; every planted flip is among them
    assert asked == [s["id"] for s in audit["suspects"]]
    assert {f"img{i:04d}.png" for i in flipped} <= set(asked)
    assert f"{audit['num_flagged']:,} suspect label(s); showing all" in at.markdown[0].value
    assert at.get("download_button")[0].proto.label == "Download the suspect labels (CSV)"
    assert suspects_csv(audit).startswith("rank,id,given_label,model_label")


def test_a_class_pair_filters_the_gallery(planted_report):
    from fer_core.audit import audit_report, pair_counts

    report, _ = planted_report
    (given, predicted), n = pair_counts(audit_report(report))[0]
    faces = faces_by_id(report)
    asked = []
    at = run(report, lambda i: asked.append(i) or faces.get(i))
    asked.clear()
    at.selectbox(key="metrics_suspects_pair").set_value(f"{given} → {predicted} ({n:,})").run()
    assert not at.exception
    pair = {p["id"]: (p["true"], p["predicted"]) for p in report["predictions"]}
    assert len(asked) == n and all(pair[i] == (given, predicted) for i in asked)


def test_without_the_data_set_the_gallery_says_so(planted_report):
    report, _ = planted_report
    at = run(report, lambda i: None)
    assert any("The gallery needs the data set" in i.value for i in at.info)
    assert len(at.dataframe) == 1 and at.get("download_button")   # the counts and the CSV need no images


def test_a_training_report_gets_an_explanation_not_an_audit():
    given, probs, _ = planted(n=60, flips=2, seed=7)
    at = run(report_of(given, probs, split="Training"), lambda i: None)
    assert "not out-of-sample" in at.info[0].value
    assert not at.dataframe and not at.get("download_button")
