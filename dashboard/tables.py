"""The tables the pages show, as a reader reads them: human headers, percentages, thousands separators and a
dash for a missing value, every cell a string (a grid shows a missing number as "None"); ``column_config``
right-aligns the number columns. Frames for programs (the CSV downloads) stay in ``dashboard.charts``."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from fer_core.config import SELECT_KEYS, TTA_MODES
from fer_core.data import FER2013_CLASSES
from fer_core.runs import Run, best_row
from fer_core.storage import CheckpointError, architecture_label, read_metadata

MISSING = "–"
# how each selection metric reads on the page: TrainConfig.select_metric -> label
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
# the report a checkpoint's accuracy is quoted from, best first: the held-out test split, single model
HEADLINE_SPLITS = ("PrivateTest", "test", "Test", "PublicTest", "Validation")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))   # a frame holds None as NaN


def percent(value, digits: int = 1) -> str:
    return MISSING if _missing(value) else f"{value:.{digits}%}"


def decimal(value, digits: int = 3) -> str:
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def count(value) -> str:
    return MISSING if _missing(value) else f"{int(value):,}"


def _rank(order: tuple[str, ...], value: str) -> int:
    return order.index(value) if value in order else len(order)


def column_config(frame: pd.DataFrame, text_columns: int = 1) -> dict:
    """The first ``text_columns`` columns left-aligned as text, the rest (numbers) right-aligned."""
    return {c: st.column_config.TextColumn(c, alignment="left" if i < text_columns else "right")
            for i, c in enumerate(frame.columns)}


def show(frame: pd.DataFrame, key: str, text_columns: int = 1) -> None:
    """``st.dataframe`` across the page's width, without the index, numbers right-aligned."""
    st.dataframe(frame, hide_index=True, key=key, width="stretch", column_config=column_config(frame, text_columns))


# --- reports -------------------------------------------------------------------------------

def headline_report(reports: dict[str, dict]) -> tuple[str, dict] | None:
    """The (label, report) a checkpoint is summed up by: the single-model report of the first of
    ``HEADLINE_SPLITS`` it has, else any single-model report, else any."""
    single = {label: r for label, r in reports.items() if (r.get("tta") or "none") == "none"}
    for split in HEADLINE_SPLITS:
        for label, r in single.items():
            if r.get("split") == split:
                return label, r
    pool = single or reports
    return next(iter(pool.items()), None)


def report_scores(reports: dict[str, dict]) -> pd.DataFrame:
    """One row a saved report of a checkpoint: split, test-time augmentation, accuracy, macro-F1, images."""
    rows = [{"Split": r.get("split") or label.partition(".")[0], "Test-time augmentation": r.get("tta") or "none",
             "Accuracy": percent(r.get("accuracy")), "Macro-F1": decimal((r.get("macro") or {}).get("f1")),
             "Images": count(r.get("num_images"))} for label, r in reports.items()]
    rows.sort(key=lambda row: (_rank(HEADLINE_SPLITS, row["Split"]), _rank(TTA_MODES, row["Test-time augmentation"])))
    return pd.DataFrame(rows, columns=["Split", "Test-time augmentation", "Accuracy", "Macro-F1", "Images"])


def per_class(frame: pd.DataFrame) -> pd.DataFrame:
    """``charts.per_class_table`` for reading."""
    return pd.DataFrame({
        "Class": frame["class"], "Precision": frame["precision"].map(percent), "Recall": frame["recall"].map(percent),
        "F1": frame["f1"].map(decimal), "Images": frame["support"].map(count),
        "Predicted as": frame["predicted"].map(count),
        "Confidence when right": frame["mean_confidence_correct"].map(percent),
        "Confidence when wrong": frame["mean_confidence_wrong"].map(percent), "ECE": frame["ece"].map(decimal)})


def comparison(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """``charts.comparison_table`` for reading, with the change of accuracy and macro-F1 from the first report
    (in points: 1.5 means 1.5 percentage points)."""
    first = frame.iloc[0] if len(frame) else None

    def delta(value, key: str) -> str:
        if first is None or _missing(value) or _missing(first[key]):
            return MISSING
        return f"{100 * (value - first[key]):+.1f}"

    out = pd.DataFrame({"Report": frame["report"], "Images": frame["images"].map(count),
                        "Accuracy": frame["accuracy"].map(percent),
                        "Δ accuracy (points)": [delta(v, "accuracy") for v in frame["accuracy"]],
                        "Macro-F1": frame["macro_f1"].map(decimal),
                        "Δ macro-F1 (points)": [delta(v, "macro_f1") for v in frame["macro_f1"]],
                        "Weighted F1": frame["weighted_f1"].map(decimal), "ECE": frame["ece"].map(decimal)})
    for c in classes:
        out[f"F1 {c}"] = frame[f"f1_{c}"].map(decimal)
    return out


# --- checkpoints and runs ------------------------------------------------------------------

def file_size(size: int) -> str:
    """Bytes for reading: MB to one decimal, KB below a tenth of a MB (an ensemble file names its members, 1 KB)."""
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{max(1, round(size / 1e3))} KB"


def checkpoints(paths: list[Path], reports_of) -> pd.DataFrame:
    """One row a checkpoint file, by stem as the model pickers name it: model, classes, input size, accuracy from
    its saved reports (``reports_of(path) -> {label: report}``), date and size; an unreadable one says why."""
    rows = []
    for path in paths:
        row = {"Checkpoint": path.stem, "Model": MISSING, "Classes": MISSING, "Input": MISSING,
               "Accuracy": MISSING, "Measured on": MISSING,
               "Date": datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d"),
               "Size": file_size(path.stat().st_size)}
        try:
            meta = read_metadata(path)
        except CheckpointError as e:
            row["Model"] = f"not readable: {e}"
            rows.append(row)
            continue
        best = headline_report(reports_of(path))
        names = meta["class_names"]   # all seven in a word, so that the row fits the page
        row.update({"Model": architecture_label(meta), "Input": f"{meta['img_size']} px",
                    "Classes": "all 7" if tuple(names) == FER2013_CLASSES else f"{len(names)}: {', '.join(names)}"})
        if best:
            row.update({"Accuracy": percent(best[1].get("accuracy")), "Measured on": best[1].get("split") or best[0]})
        rows.append(row)
    return pd.DataFrame(rows, columns=["Checkpoint", "Model", "Classes", "Input", "Accuracy", "Measured on", "Date",
                                       "Size"])


def runs(summaries: list[dict]) -> pd.DataFrame:
    """``run_summary`` rows for reading."""
    return pd.DataFrame([{
        "Run": s["run"], "State": s["state"] or MISSING, "Model": s["model"] or MISSING,
        "Epochs": f"{s['epochs done']} of {s['epochs']}" if s["epochs"] else count(s["epochs done"]),
        "Best epoch": count(s["best epoch"]), "Selected by": s["selected by"],
        "Best validation accuracy": percent(s["best val acc"]),
        "Best validation macro-F1": decimal(s["best val macro-F1"]),
        "Created": s["created"].strftime("%Y-%m-%d %H:%M") if s["created"] else MISSING} for s in summaries],
        columns=["Run", "State", "Model", "Epochs", "Best epoch", "Selected by", "Best validation accuracy",
                 "Best validation macro-F1", "Created"])


# --- a run's summary row and its log (no Plotly: the home page shows them) -----------------

def read_tail(path, lines: int = 40) -> str:
    """The last lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def selection(config: dict) -> tuple[str, str]:
    """The run's selection metric: (its metrics-row key, how it reads), e.g. ('val_macro_f1', 'macro-F1')."""
    metric = config.get("select_metric") or "accuracy"
    return SELECT_KEYS.get(metric, "val_acc"), METRIC_LABELS.get(metric, metric)


def run_summary(run: Run) -> dict:
    """One row of the runs table; "best" is the epoch in ``best.safetensors`` (``runs.best_row``)."""
    status, rows = run.status(), run.metrics()
    try:
        config = run.read_config()
    except (OSError, ValueError):
        config = {}
    best = best_row(rows) or {}
    try:
        created = datetime.fromtimestamp(run.config_path.stat().st_mtime)
    except OSError:
        created = None
    return {"run": run.run_id, "state": status.get("state"), "model": config.get("model"),
            "epochs done": len(rows), "epochs": config.get("epochs"), "best epoch": best.get("epoch"),
            "selected by": selection(config)[1], "best val acc": best.get("val_acc"),
            "best val macro-F1": best.get("val_macro_f1"), "created": created}
