"""Metrics: per-class scores, confusion, calibration and bias of a checkpoint, and checkpoints side by side.

Reports are saved JSON beside a checkpoint (``<stem>.<split>[.<tta>].json``, written by
``python -m fer_core evaluate --json``), so they show without the data set; with the data set present
any split can be evaluated here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard import charts, common, tables
from fer_core.config import TTA_MODES
from fer_core.data import DataError, DatasetSummary
from fer_core.storage import save_report

GALLERY_LIMIT = 48

st.set_page_config(page_title="Metrics · FER Studio", page_icon="📊", layout="wide")


@st.cache_data(show_spinner="Evaluating the checkpoint…", max_entries=16)
def evaluated_report(checkpoint: str, mtime: float, data: str, split: str, tta: str) -> dict:
    """A report computed on the data set, cached per checkpoint version, data set, split and TTA."""
    from fer_core.evaluation import evaluate  # PyTorch: only once a report is computed here

    classifier = common.classifier(checkpoint, mtime)
    ds = common.dataset(data, tuple(classifier.class_names))
    report = evaluate(classifier, ds.split(split), split, tta=tta, source=ds.source)
    report["checkpoint"] = checkpoint
    return report


@st.cache_resource(show_spinner=False)
def image_index(data: str, classes: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """Image id -> (split, position) in the data set, to find a report's images. From the data set with its
    pixels, which the gallery shows next (and the dashboard's warm-up may have loaded already)."""
    ds = common.dataset(data, classes)
    return {image_id: (name, i) for name, sp in ds.splits.items() for i, image_id in enumerate(sp.ids)}


def report_split_and_tta(label: str, report: dict) -> tuple[str, str]:
    """A saved report's split and TTA: its own fields, else its file label ``<split>[.<tta>]``."""
    split, _, tta = label.partition(".")
    return report.get("split") or split, report.get("tta") or tta or "none"


def saved_report_file(checkpoint: Path, split: str, tta: str) -> Path:
    return checkpoint.parent / f"{checkpoint.stem}.{split}{'' if tta == 'none' else '.' + tta}.json"


def show_per_class(report: dict, ckpt: Path, split: str, tta: str) -> None:
    per_class = charts.per_class_table(report)
    st.plotly_chart(charts.per_class_bars(report), key="metrics_per_class")
    tables.show(tables.per_class(per_class), key="metrics_per_class_table")
    stem = saved_report_file(ckpt, report.get("split") or split, report.get("tta") or tta).stem
    d1, d2 = st.columns(2)
    d1.download_button("Download the per-class table (CSV)", per_class.to_csv(index=False).encode(),
                       file_name=f"{stem}.per_class.csv", mime="text/csv", key="metrics_csv_per_class")
    d2.download_button("Download the per-image predictions (CSV)",
                       charts.predictions_table(report).to_csv(index=False).encode(),
                       file_name=f"{stem}.predictions.csv", mime="text/csv", key="metrics_csv_predictions")

    st.subheader("Confusion matrix")
    cm_mode = st.radio("Show", ["row-normalised", "counts"], horizontal=True, key="metrics_cm_mode",
                       help="Row-normalised: each true class's row sums to 100%, so the diagonal is the recall; "
                            "the count of images is under each share.")
    st.plotly_chart(charts.confusion_heatmap(report, normalise=cm_mode == "row-normalised"), key="metrics_confusion")


def show_bias(report: dict, summary) -> None:
    st.subheader("Confidence of right and wrong answers")
    kind = st.radio("Plot", ["box", "violin"], horizontal=True, key="metrics_conf_kind")
    st.plotly_chart(charts.confidence_distribution(report, kind), key="metrics_confidence")
    st.caption("Confidence is the top class probability; images are grouped by their true class. A model that is "
               "as sure of its wrong answers as of its right ones gives no warning when it is wrong.")

    st.subheader("Calibration")
    col_rel, col_ece = st.columns(2)
    rel_class = col_rel.selectbox("Reliability of", ["all classes", *report["class_names"]], key="metrics_rel_class",
                                  help="For one class: the answers that predicted that class.")
    col_rel.plotly_chart(charts.reliability_diagram(report, None if rel_class == "all classes" else rel_class),
                         key="metrics_reliability")
    col_ece.plotly_chart(charts.ece_per_class_bars(report), key="metrics_ece")
    col_ece.caption("ECE of the answers that predicted each class; bars above the line are worse calibrated "
                    "than the model overall.")

    st.subheader("Class frequency against recall")
    frequency_sources = ["evaluated split (support)"]
    if summary is not None and "Training" in summary.counts:
        frequency_sources.insert(0, "training set")
    freq_source = st.radio("Class frequency", frequency_sources, horizontal=True, key="metrics_freq_source")
    counts = ({c: summary.counts["Training"][c] for c in report["class_names"]} if freq_source == "training set"
              else None)
    st.plotly_chart(charts.frequency_vs_recall(report, counts, "images in the training set") if counts else
                    charts.frequency_vs_recall(report), key="metrics_freq")
    st.caption(charts.frequency_recall_finding(report, counts) + " Class weights in the loss can lift a rare "
               "class's recall.")


def show_gallery(report: dict, summary, data: Path | None, class_names: tuple[str, ...]) -> None:
    if summary is None:
        st.info("The gallery needs the data set: put FER-2013 in `data/fer2013/` or set `FER2013_PATH`.")
    else:
        g1, g2 = st.columns(2)
        true_pick = g1.selectbox("True class", ["any", *report["class_names"]], key="metrics_gallery_true")
        pred_pick = g2.selectbox("Predicted class", ["any", *report["class_names"]], key="metrics_gallery_pred")
        wrong, n_wrong = charts.misclassified(report, None if true_pick == "any" else true_pick,
                                              None if pred_pick == "any" else pred_pick, limit=GALLERY_LIMIT)
        index = image_index(str(data), class_names)
        found = [(w, index[w["id"]]) for w in wrong if w["id"] in index]
        if not n_wrong:
            st.write("No misclassified images with these classes.")
        elif not found:
            st.warning(f"None of the report's images are in the data set at `{data}` (their ids do not match): "
                       "the report was made on another copy or form of the data set.")
        else:
            shown = f"the {len(found)} most confident" if n_wrong > len(found) else "all"
            st.write(f"{n_wrong:,} misclassified image(s); showing {shown}, most confident first.")
            images = common.dataset(str(data), class_names).splits   # the same cached data set as the index
            st.image([images[s].images[i].numpy() for _, (s, i) in found],
                     caption=[f"{w['true']} → {w['predicted']} ({w['confidence']:.0%})" for w, _ in found], width=96)


def show_comparison(choices: dict[str, Path], evaluated: set, data: Path | None, current_label: str) -> None:
    loaders = {}
    for c_label, c_path in choices.items():
        for label, path in common.saved_reports(c_path).items():
            loaders[f"{c_label} · {label}"] = (lambda p=path: common.report(str(p), p.stat().st_mtime))
    for key in evaluated:
        c_path = Path(key[0])
        c_label = next((lab for lab, p in choices.items() if p == c_path), None)
        if c_label and c_path.exists() and c_path.stat().st_mtime == key[1] and key[2] == str(data):
            loaders[f"{c_label} · {key[3]} (TTA {key[4]}, evaluated now)"] = (lambda k=key: evaluated_report(*k))
    # the checkpoint's own reports, the one on show first: the deltas are from it
    own = sorted((label for label in loaders if label.split(" · ")[0] == current_label.split(" · ")[0]),
                 key=lambda label: label != current_label)
    picked = st.multiselect("Reports", list(loaders), default=own if len(own) > 1 else
                            [current_label] if current_label in loaders else [],
                            key="metrics_compare",
                            help="Saved reports of every checkpoint and run, and those evaluated in this session.")
    if len(picked) < 2:
        st.write("Choose two or more reports to compare them side by side.")
    else:
        compared = {label: loaders[label]() for label in picked}
        tables.show(tables.comparison(charts.comparison_table(compared), charts.union_classes(compared.values())),
                    key="metrics_compare_table")
        st.caption("Δ: the change from the first report chosen, in percentage points (of accuracy, or of macro-F1 "
                   "times 100).")
        k1, k2 = st.columns(2)
        k1.plotly_chart(charts.comparison_headline_bars(compared), key="metrics_compare_headline")
        k2.plotly_chart(charts.comparison_f1_bars(compared), key="metrics_compare_f1")


@dataclass(frozen=True)
class Chosen:
    """The report on show and what the page's sections need of the choices behind it."""
    report: dict
    label: str                  # as the Compare tab lists it: '<checkpoint> · <split>[.<tta>]'
    checkpoint: Path
    class_names: tuple[str, ...]
    split: str
    tta: str
    data: Path | None
    summary: DatasetSummary | None


def checkpoint_ui(choices: dict[str, Path], column) -> tuple[str, Path, tuple[str, ...]]:
    """The checkpoint picker (the bundled ones first, then the runs): its label, file and class names; the script
    stops on a bad file."""
    labels = list(choices)   # the bundled models first: the one a newcomer came to see, not the last quick run
    label = column.selectbox("Checkpoint", labels, index=0,
                             key="metrics_checkpoint",
                             help="A checkpoint in checkpoints/ or a training run's best checkpoint.")
    ckpt = choices[label]
    meta = common.checkpoint_metadata(str(ckpt), ckpt.stat().st_mtime)
    if meta is None:
        st.error(f"`{ckpt}` is not a FER Studio checkpoint.")
        st.stop()
    return label, ckpt, tuple(meta["class_names"])


def saved_reports_by_split(ckpt: Path) -> dict[tuple[str, str], tuple[str, Path]]:
    """(split, tta) -> (label, file) of the reports saved beside ``ckpt``; a warning for each unreadable one."""
    saved: dict[tuple[str, str], tuple[str, Path]] = {}
    for label, path in common.saved_reports(ckpt).items():
        try:
            report = common.report(str(path), path.stat().st_mtime)
            saved.setdefault(report_split_and_tta(label, report), (label, path))
        except (OSError, ValueError) as e:
            st.warning(f"Could not read the saved report `{path.name}`: {e}")
    return saved


def data_summary_for(class_names: tuple[str, ...]) -> tuple[Path | None, DatasetSummary | None]:
    """The data set's path and its summary (splits and counts, no images), or None where it is missing, cannot
    be read (a warning) or lacks some of the checkpoint's classes (a warning)."""
    data = common.data_path()
    if data is None:
        return None, None
    try:
        summary = common.data_summary(str(data))
    except DataError as e:
        st.warning(f"The data set at `{data}` cannot be read: {e}")
        return data, None
    missing = [c for c in class_names if c not in summary.class_names]
    if missing:
        st.warning(f"The data set at `{data}` cannot be used with this checkpoint: it has no "
                   f"{', '.join(missing)} images (it has {', '.join(summary.class_names)}).")
        return data, None
    return data, summary


def split_and_tta_ui(columns, ckpt: Path, saved: dict, summary: DatasetSummary | None) -> tuple[str, str]:
    """The split and TTA pickers: the saved reports' splits first, then those the data set can evaluate; the
    script stops when there is neither."""
    split_options = [split for split, _ in saved]
    if summary is not None:   # then the test splits (the last one first), validation, both test splits, training
        split_options += [*reversed(summary.test_splits), summary.validation_split,
                          *(["test"] if len(summary.test_splits) > 1 else []), *summary.counts]
    split_options = list(dict.fromkeys(split_options))
    if not split_options:
        st.info(f"No saved report for `{ckpt.name}` and FER-2013 was not found, so there is nothing to show. "
                "Either put the data set in `data/fer2013/` (or set `FER2013_PATH`) and evaluate here, or save a "
                f"report beside the checkpoint: `python -m fer_core evaluate --checkpoint {ckpt} --data PATH "
                f"--split PrivateTest --json {saved_report_file(ckpt, 'PrivateTest', 'none')}`.")
        st.stop()
    col_split, col_tta = columns
    split = col_split.selectbox("Split", split_options, key=f"metrics_split::{ckpt}",
                                help="Splits with a saved report come first; the others can be evaluated here when "
                                     "the data set is present. 'test' joins FER-2013's two test splits.")
    saved_tta = sorted((t for s, t in saved if s == split), key=lambda t: t != "none")   # the single model first
    tta_options = list(dict.fromkeys([*TTA_MODES, *saved_tta]))   # a saved report may name a mode of its own
    tta = col_tta.selectbox("Test-time augmentation", tta_options, key=f"metrics_tta::{ckpt}::{split}",
                            index=tta_options.index(saved_tta[0]) if saved_tta else 0,
                            help="flip: average with the mirror image; flip+crops: and four shifted crops of each.")
    return split, tta


def evaluations() -> set[tuple]:
    """The evaluations asked for in this session: ``evaluated_report``'s arguments."""
    return st.session_state.setdefault("metrics_evaluated", set())


def evaluate_now_ui(ckpt: Path, data: Path, summary: DatasetSummary, split: str, tta: str,
                    class_names: tuple[str, ...]) -> dict:
    """The report evaluated here, once the user has asked for it ("Evaluate now", the script stops until then),
    with a button to save it beside the checkpoint."""
    n_images = summary.num_images(split, class_names)
    if not n_images:
        st.info(f"The split **{split}** of `{data}` has no images of this checkpoint's classes.")
        st.stop()
    key = (str(ckpt), ckpt.stat().st_mtime, str(data), split, tta)
    if key not in evaluations():
        st.info(f"No saved report for **{split}** with TTA **{tta}**. Evaluate the checkpoint on its "
                f"{n_images:,} images from `{data}`? On a CPU this takes seconds for a test split, minutes for "
                "the training split or with flip+crops.")
        if not st.button("Evaluate now", type="primary", key="metrics_evaluate"):
            st.stop()
        evaluations().add(key)
    report = evaluated_report(*key)
    st.caption(f"Evaluated now on {n_images:,} images of `{data}`.")
    target = saved_report_file(ckpt, split, tta)
    if st.button("Save this report beside the checkpoint", key="metrics_save",
                 help=f"Writes {target.name}, so it shows without the data set."):
        save_report(report, target)
        st.success(f"Saved `{target}`.")
    return report


def report_ui(choices: dict[str, Path]) -> Chosen:
    """The checkpoint, split and TTA pickers, and the report they choose: a saved one, or one evaluated here on
    the data set. The script stops, saying why, when there is none to show."""
    col_ckpt, col_split, col_tta = st.columns([2, 1, 1])
    ckpt_label, ckpt, class_names = checkpoint_ui(choices, col_ckpt)
    saved = saved_reports_by_split(ckpt)
    data, summary = data_summary_for(class_names)
    split, tta = split_and_tta_ui((col_split, col_tta), ckpt, saved, summary)
    picked = dict(checkpoint=ckpt, class_names=class_names, split=split, tta=tta, data=data, summary=summary)
    if (split, tta) in saved:
        saved_label, saved_path = saved[(split, tta)]
        st.caption(f"From the saved report `{saved_path}`.")
        return Chosen(common.report(str(saved_path), saved_path.stat().st_mtime), f"{ckpt_label} · {saved_label}",
                      **picked)
    if summary is None:
        st.info(f"No saved report for **{split}** with TTA **{tta}**, and FER-2013 was not found to evaluate it. "
                f"Saved reports for this checkpoint: {', '.join(f'{s} (TTA {t})' for s, t in saved) or 'none'}. "
                "Put the data set in `data/fer2013/` (or set `FER2013_PATH`) to evaluate other splits.")
        st.stop()
    return Chosen(evaluate_now_ui(ckpt, data, summary, split, tta, class_names),
                  f"{ckpt_label} · {split} (TTA {tta}, evaluated now)", **picked)


def show_headline(report: dict, split: str, tta: str) -> None:
    head = charts.headline(report)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{head['accuracy']:.1%}")
    c2.metric("Macro-F1", f"{head['macro_f1']:.3f}", help="The mean of the classes' F1: every class counts the same.")
    c3.metric("ECE", "n/a" if head["ece"] is None else f"{head['ece']:.3f}",
              help="Expected calibration error: how far confidence is from accuracy, averaged over 15 confidence "
                   "bins.")
    c4.metric("Images", f"{head['images']:,}")
    st.caption(f"Split {report.get('split', split)}, TTA {report.get('tta', tta)}; macro precision "
               f"{head['macro_precision']:.3f}, macro recall {head['macro_recall']:.3f}, weighted F1 "
               f"{head['weighted_f1']:.3f}." + (f" Data: `{report['data']}`." if report.get("data") else ""))
    absent = report.get("absent_classes") or []
    if absent:   # the macro figures average the classes present, not a 0 for each absent one
        present = len(report["class_names"]) - len(absent)
        st.warning(f"This split has no images of {', '.join(absent)}: the macro figures average the other "
                   f"{present} classes, and {'its' if len(absent) == 1 else 'their'} recall and F1 are blank.")


st.title("Metrics and model bias")
st.write("Where the model is right and wrong, class by class: precision, recall and F1, the confusion matrix, "
         "how sure it is of right and wrong answers, whether that confidence is calibrated, and the images it "
         "gets wrong.")

choices = common.checkpoint_choices()
if not choices:
    st.info(f"No checkpoint found: none in `{common.checkpoint_dir()}` and no training run in "
            f"`{common.runs_dir()}`. Train one on the Train page or with `python -m fer_core train --data PATH`.")
    st.stop()
chosen = report_ui(choices)
show_headline(chosen.report, chosen.split, chosen.tta)

sections = {"Per class": lambda: show_per_class(chosen.report, chosen.checkpoint, chosen.split, chosen.tta),
            "Bias and calibration": lambda: show_bias(chosen.report, chosen.summary),
            "Misclassified": lambda: show_gallery(chosen.report, chosen.summary, chosen.data, chosen.class_names),
            "Compare": lambda: show_comparison(choices, evaluations(), chosen.data, chosen.label)}
for tab, show in zip(st.tabs(list(sections), key="metrics_section", on_change="rerun"), sections.values()):
    if tab.open:   # only the open tab runs: its charts are all the page renders
        with tab:
            show()
