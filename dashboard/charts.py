"""Tables and Plotly figures of evaluation reports (the dicts of ``fer_core.evaluation.build_report``).

Plain functions of report dicts, without Streamlit, so that each can be tested on a hand-made report.
A report's classes are ``report["class_names"]``; ``per_class`` is keyed by those names; rows of the
confusion matrix are the true classes, columns the predicted ones.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fer_core.data import FER2013_CLASSES

METRIC_NAMES = {"precision": "Precision", "recall": "Recall", "f1": "F1"}
METRIC_COLOURS = ("#8fb3ea", "#2a6fdb", "#1d3557")   # calm blues, F1 the darkest (Plotly's default F1 is red)
# reports side by side: blues, teal and greys instead of Plotly's red and orange
REPORT_COLOURS = ("#2a6fdb", "#2a9d8f", "#8fb3ea", "#1d3557", "#9aa5b8", "#6fc2b6")
RIGHT_WRONG_COLOURS = {"right": "#2a9d8f", "wrong": "#d08c60"}   # calm: teal and a muted amber
# one colour an expression on every page (video timelines, the embedding map): muted, distinct; neutral grey
CLASS_COLOURS = {"angry": "#c0392b", "disgust": "#6a994e", "fear": "#7b52ab", "happy": "#e9a23b",
                 "sad": "#2a6fdb", "surprise": "#2a9d8f", "neutral": "#8d99ae"}
OTHER_COLOURS = ("#1d3557", "#d08c60", "#6fc2b6", "#9aa5b8")   # classes of a model trained on other names


def class_colour(name: str, index: int) -> str:
    """The colour of class ``name``, the ``index``-th of its model's (which picks one for a name not in FER-2013)."""
    return CLASS_COLOURS.get(name, OTHER_COLOURS[index % len(OTHER_COLOURS)])


# --- tables ------------------------------------------------------------------------------------

def per_class_table(report: dict) -> pd.DataFrame:
    """One row a class: precision, recall, F1, support, predicted, mean confidence right/wrong, ECE."""
    rows = []
    for name in report["class_names"]:
        pc = report["per_class"][name]
        rows.append({"class": name, "precision": pc["precision"], "recall": pc["recall"], "f1": pc["f1"],
                     "support": pc["support"], "predicted": pc["predicted"],
                     "mean_confidence_correct": pc.get("mean_confidence_correct"),
                     "mean_confidence_wrong": pc.get("mean_confidence_wrong"),
                     "ece": pc.get("calibration_ece")})
    return pd.DataFrame(rows)


def predictions_table(report: dict) -> pd.DataFrame:
    """One row an image: id, true and predicted class, confidence, right?, and each class's probability."""
    names = report["class_names"]
    rows = []
    for p in report.get("predictions", []):
        probs = p["probabilities"]
        rows.append({"id": p["id"], "true": p["true"], "predicted": p["predicted"],
                     "confidence": float(max(probs)) if probs else None, "correct": p["true"] == p["predicted"],
                     **{f"p_{c}": float(v) for c, v in zip(names, probs)}})
    columns = ["id", "true", "predicted", "confidence", "correct"] + [f"p_{c}" for c in names]
    return pd.DataFrame(rows, columns=columns)


def headline(report: dict) -> dict:
    """The numbers a report is summed up by."""
    return {"images": report["num_images"], "accuracy": report["accuracy"],
            "macro_precision": report["macro"]["precision"], "macro_recall": report["macro"]["recall"],
            "macro_f1": report["macro"]["f1"], "weighted_f1": report["weighted"]["f1"], "ece": report.get("ece")}


def comparison_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One row a report (keyed by label): the headline numbers and each class's F1."""
    classes = union_classes(reports.values())
    rows = []
    for label, rep in reports.items():
        rows.append({"report": label, **headline(rep),
                     **{f"f1_{c}": rep["per_class"][c]["f1"] if c in rep["per_class"] else None for c in classes}})
    return pd.DataFrame(rows)


def misclassified(report: dict, true: str | None = None, predicted: str | None = None,
                  limit: int | None = 48) -> tuple[list[dict], int]:
    """The wrong answers (optionally of one true and/or predicted class), most confident first, at most
    ``limit``; and how many there are in all. Each: id, true, predicted, confidence."""
    wrong = [{"id": p["id"], "true": p["true"], "predicted": p["predicted"],
              "confidence": float(max(p["probabilities"]))}
             for p in report.get("predictions", [])
             if p["true"] != p["predicted"] and (true is None or p["true"] == true)
             and (predicted is None or p["predicted"] == predicted)]
    wrong.sort(key=lambda r: -r["confidence"])
    return (wrong if limit is None else wrong[:limit]), len(wrong)


def confusion_values(report: dict, normalise: bool = False) -> np.ndarray:
    """The confusion matrix (rows true, columns predicted): counts, or each row divided by its sum
    (a row with no images stays zero)."""
    cm = np.asarray(report["confusion_matrix"], dtype=float)
    if not normalise:
        return cm
    sums = cm.sum(1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


# --- figures -----------------------------------------------------------------------------------

def per_class_bars(report: dict) -> go.Figure:
    """Grouped bars: precision, recall and F1 of each class."""
    names = report["class_names"]
    fig = go.Figure([go.Bar(name=label, x=names, y=[report["per_class"][c][key] for c in names],
                            marker_color=colour, hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>")
                     for (key, label), colour in zip(METRIC_NAMES.items(), METRIC_COLOURS)])
    fig.update_layout(barmode="group", yaxis=dict(title="score", range=[0, 1]), xaxis_title="class",
                      legend_title_text="", margin=dict(t=30, b=10))
    return fig


def confusion_heatmap(report: dict, normalise: bool = True) -> go.Figure:
    """The confusion matrix as a heat map across the width, true classes down, predicted across: each cell the
    share of its true class's row (the diagonal is the recall) with the count under it, or the counts alone; the
    diagonal (right answers) outlined."""
    names = report["class_names"]
    counts = confusion_values(report)
    z = confusion_values(report, normalise)
    text = [[f"{share:.0%}<br>({int(n):,})" if normalise else f"{int(n):,}" for share, n in zip(zr, nr)]
            for zr, nr in zip(z, counts)]
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues", xgap=1, ygap=1,
        zmin=0, zmax=1 if normalise else None,
        colorbar=dict(title="share of the row" if normalise else "images", tickformat=".0%" if normalise else ","),
        hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    for k in range(len(names)):   # the right answers
        fig.add_shape(type="rect", x0=k - 0.5, x1=k + 0.5, y0=k - 0.5, y1=k + 0.5, line=dict(color="#1d2433", width=2))
    fig.update_layout(xaxis=dict(title="predicted class", side="bottom", constrain="domain"),
                      yaxis=dict(title="true class", autorange="reversed"),
                      height=140 + 56 * len(names), margin=dict(t=20, b=10, l=10, r=10))
    return fig


def confidence_distribution(report: dict, kind: str = "box") -> go.Figure:
    """Confidence (top probability) of each image by true class, right and wrong answers side by side."""
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', not {kind!r}")
    table = predictions_table(report)
    fig = go.Figure()
    for outcome, correct in (("right", True), ("wrong", False)):
        part = table[table["correct"] == correct]
        common = dict(name=outcome, x=part["true"].tolist(), y=part["confidence"].tolist(),
                      marker_color=RIGHT_WRONG_COLOURS[outcome], legendgroup=outcome)
        if kind == "box":
            fig.add_trace(go.Box(**common, boxpoints="outliers"))
        else:
            fig.add_trace(go.Violin(**common, box_visible=True, meanline_visible=True, points=False, scalemode="width"))
    order = report["class_names"]
    layout = dict(xaxis=dict(title="true class", categoryorder="array", categoryarray=order),
                  yaxis=dict(title="confidence", range=[0, 1.02]), legend_title_text="answer", margin=dict(t=30, b=10))
    if kind == "box":
        fig.update_layout(boxmode="group", **layout)
    else:
        fig.update_layout(violinmode="group", **layout)
    return fig


def reliability_bins(report: dict, class_name: str | None = None) -> list[dict]:
    """The reliability bins of all answers, or of the answers that predicted ``class_name``."""
    if class_name is None:
        return report["reliability"]
    return report["per_class"][class_name]["calibration_bins"]


def reliability_diagram(report: dict, class_name: str | None = None) -> go.Figure:
    """Accuracy against confidence in equal-width confidence bins (empty bins left out), with the
    diagonal of perfect calibration; for one class, of the answers that predicted that class. A calibrated model's
    report (with ``uncalibrated``) also draws the raw answers as a line, and its title gives both ECEs."""
    bins = [b for b in reliability_bins(report, class_name) if b["count"]]
    ece = report["ece"] if class_name is None else report["per_class"][class_name].get("calibration_ece")
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    fig = go.Figure([
        go.Bar(name="accuracy", x=centres, y=[b["accuracy"] for b in bins], width=widths, marker_color="#2a6fdb",
               text=[f"{b['count']:,}" for b in bins], textposition="outside", cliponaxis=False,
               textfont=dict(size=10, color="#5b6477"),
               customdata=[[b["count"], b["confidence"]] for b in bins],
               hovertemplate="confidence %{customdata[1]:.3f}: accuracy %{y:.3f} (%{customdata[0]} images)"
                             "<extra></extra>"),
        go.Scatter(name="mean confidence", x=centres, y=[b["confidence"] for b in bins], mode="markers",
                   marker=dict(color="#1d2433", symbol="line-ew-open", size=14, line_width=2)),
        go.Scatter(name="perfect calibration", x=[0, 1], y=[0, 1], mode="lines",
                   line=dict(dash="dash", color="grey")),
    ])
    before = report.get("uncalibrated") if class_name is None else None   # per-class bins are the calibrated only
    if before:
        fig.add_trace(uncalibrated_trace(before))
    who = "all answers" if class_name is None else f"answers '{class_name}'"
    title = f"{who}: ECE {ece:.3f}" if ece is not None else f"{who}: no answers"
    if before and before.get("ece") is not None:
        title += f" (calibrated; {before['ece']:.3f} before)"
    fig.update_layout(title=f"{title}; over each bar: its answers", xaxis=dict(title="confidence", range=[0, 1]),
                      yaxis=dict(title="accuracy", range=[0, 1.1]), bargap=0.05, legend_title_text="",
                      margin=dict(t=40, b=10))
    return fig


def uncalibrated_trace(before: dict) -> go.Scatter:
    """The model's raw answers (a calibrated report's ``uncalibrated``): accuracy at each bin's mean confidence, a
    line beside the calibrated bars, so calibration's effect is read off the diagonal."""
    bins = [b for b in before["reliability"] if b["count"]]
    return go.Scatter(name="before calibration", x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins],
                      mode="lines+markers", line=dict(color="#e0892b", width=2), marker=dict(size=6),
                      customdata=[b["count"] for b in bins],
                      hovertemplate="before calibration: confidence %{x:.3f}, accuracy %{y:.3f} "
                                    "(%{customdata} images)<extra></extra>")


def ece_per_class_bars(report: dict) -> go.Figure:
    """Expected calibration error of each class's answers, with the overall ECE as a line."""
    names = report["class_names"]
    values = [report["per_class"][c].get("calibration_ece") for c in names]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color="#8d6cd1", name="class ECE",
                           hovertemplate="%{x}: ECE %{y:.3f}<extra></extra>"))
    if report.get("ece") is not None:
        fig.add_hline(y=report["ece"], line_dash="dash", line_color="grey",
                      annotation_text=f"overall {report['ece']:.3f}", annotation_position="top left")
    fig.update_layout(xaxis_title="predicted class", yaxis_title="ECE", margin=dict(t=30, b=10))
    return fig


def frequency_vs_recall(report: dict, counts: dict[str, int] | None = None,
                        count_label: str = "support (images in the evaluated split)") -> go.Figure:
    """Each class's image count (``counts``, or its support in the report) against its recall."""
    names = report["class_names"]
    if counts is None:
        counts = {c: report["per_class"][c]["support"] for c in names}
    fig = go.Figure(go.Scatter(
        x=[counts.get(c, 0) for c in names], y=[report["per_class"][c]["recall"] for c in names], text=names,
        mode="markers+text", textposition="top center", marker=dict(size=12, color="#2a6fdb"),
        hovertemplate="%{text}: %{x:,} images, recall %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title=count_label, yaxis=dict(title="recall", range=[0, 1.08]), margin=dict(t=30, b=10))
    return fig


def comparison_f1_bars(reports: dict[str, dict]) -> go.Figure:
    """Grouped bars of per-class F1, one colour a report."""
    classes = union_classes(reports.values())
    fig = go.Figure([go.Bar(name=label, x=classes,
                            y=[rep["per_class"][c]["f1"] if c in rep["per_class"] else None for c in classes])
                     for label, rep in reports.items()])
    fig.update_layout(barmode="group", xaxis_title="class", yaxis=dict(title="F1", range=[0, 1]),
                      colorway=REPORT_COLOURS, legend=dict(orientation="h", y=-0.25), margin=dict(t=30, b=10))
    return fig


HEADLINE_BARS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted F1"}


def zoomed_range(values, pad: float = 0.02, span: float = 0.1) -> list[float]:
    """A y range around ``values`` (scores in [0, 1]) at least ``span`` wide, so that differences of one or two
    points show as bars of visibly different heights (a 0-1 axis flattens them)."""
    found = [v for v in values if v is not None]
    if not found:
        return [0.0, 1.0]
    lo, hi = min(found) - pad, max(found) + pad
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
    return [max(0.0, lo), min(1.0, hi)]


def comparison_headline_bars(reports: dict[str, dict]) -> go.Figure:
    """Grouped bars of accuracy, macro-F1 and weighted F1, one colour a report, on an axis zoomed to them."""
    fig = go.Figure()
    values = []
    for label, rep in reports.items():
        h = headline(rep)
        values += [h[k] for k in HEADLINE_BARS]
        fig.add_trace(go.Bar(name=label, x=list(HEADLINE_BARS.values()), y=[h[k] for k in HEADLINE_BARS],
                             text=[f"{h[k]:.1%}" for k in HEADLINE_BARS], textposition="outside", cliponaxis=False))
    fig.update_layout(barmode="group", yaxis=dict(title="value (axis zoomed to the bars)", range=zoomed_range(values),
                                                  tickformat=".0%"), colorway=REPORT_COLOURS,
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=30, b=10))
    return fig


def union_classes(reports) -> list[str]:
    """The classes of all reports, in the label order (0 angry ... 6 neutral), others after them."""
    seen: list[str] = []
    for rep in reports:
        seen += [c for c in rep["class_names"] if c not in seen]
    return sorted(seen, key=lambda c: FER2013_CLASSES.index(c) if c in FER2013_CLASSES else len(FER2013_CLASSES))


# --- findings: what a caption may say, computed from the data the chart shows --------------------

def _ranks(values: list[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def frequency_recall_finding(report: dict, counts: dict[str, int] | None = None) -> str:
    """What the class-frequency chart shows, in words: where the rarest class's recall ranks, and the rank
    correlation (Spearman's) of frequency and recall, worded by its size. Empty with fewer than three classes."""
    names = [c for c in report["class_names"] if report["per_class"][c].get("recall") is not None]
    if counts is None:
        counts = {c: report["per_class"][c]["support"] for c in names}
    if len(names) < 3:
        return ""
    freq = [counts.get(c, 0) for c in names]
    recall = [report["per_class"][c]["recall"] for c in names]
    rarest = names[int(np.argmin(freq))]
    place = sorted(recall, reverse=True).index(report["per_class"][rarest]["recall"]) + 1
    share = min(freq) / max(sum(freq), 1)
    rho = float(np.corrcoef(_ranks(freq), _ranks(recall))[0, 1]) if len(set(freq)) > 1 and len(set(recall)) > 1 else 0
    trend = ("rarer classes are recalled less" if rho >= 0.5 else "rarer classes are recalled more" if rho <= -0.5
             else "frequency and recall are only weakly related")
    return (f"The rarest class, {rarest} ({share:.1%} of these images), has the {_ordinal(place)}-highest recall of "
            f"{len(names)} ({report['per_class'][rarest]['recall']:.2f}). Across the classes, {trend} (rank "
            f"correlation {rho:+.2f}).")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
