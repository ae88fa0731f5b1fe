"""Metrics: per-class scores, confusion, calibration and bias of a checkpoint, its suspect labels, embedding map and
error slices, and checkpoints side by side.

Reports are saved JSON beside a checkpoint (``<stem>.<split>[.<tta>].json``, written by
``python -m fer_core evaluate --json``), so they show without the data set; with the data set present
any split can be evaluated here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import charts, common, exploration, suspects, tables
from fer_core.config import TTA_MODES
from fer_core.data import DataError, DatasetSummary
from fer_core.embedding import cached_embedding, embedding_file, load_embedding
from fer_core.slices import image_properties, load_slices, predictions_for, slice_report, slices_file, worst_slices
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


def face_lookup(data: Path | None, summary, class_names: tuple[str, ...]) -> Callable[[str], np.ndarray | None]:
    """``face_of(image id)``: the grey face from the data set (the gallery's cached index and pixels), or None
    when the data set is absent or has no such image."""
    if summary is None:
        return lambda _image_id: None

    def face_of(image_id: str) -> np.ndarray | None:
        where = image_index(str(data), class_names).get(image_id)
        splits = common.dataset(str(data), class_names).splits
        return None if where is None else splits[where[0]].images[where[1]].numpy()
    return face_of


@st.cache_data(show_spinner=False, max_entries=8)
def saved_embedding(checkpoint: str, mtime: float, split: str, sidecar_mtime: float) -> dict | None:
    """The embedding map saved beside the checkpoint, per version of both files (None: none, or a stale one)."""
    return load_embedding(checkpoint, split)


def embedding_ui(chosen: Chosen) -> dict | None:
    """The split's embedding map: the saved one, else computed here once asked for (the data set present);
    None (saying how to make one) until then."""
    ckpt, split = chosen.checkpoint, chosen.split
    sidecar = embedding_file(ckpt, split)
    saved = saved_embedding(str(ckpt), ckpt.stat().st_mtime, split, sidecar.stat().st_mtime if sidecar.exists() else 0)
    if saved:
        return saved
    command = f"python -m fer_core embed --checkpoint {ckpt} --data PATH --split {split}"
    if chosen.summary is None:
        st.info(f"No embedding map of **{split}** for this checkpoint. Make one with `{command}` (it is saved beside "
                "the checkpoint), or put the data set in `data/fer2013/` to compute it here.")
        return None
    st.info(f"No embedding map of **{split}** for this checkpoint yet. Compute it here (a 3,589-face test split "
            f"takes a few minutes on a CPU; it is saved beside the checkpoint) or with `{command}`.")
    if not st.button("Compute the embedding map", type="primary", key="metrics_embed_compute"):
        return None
    with st.spinner("Computing the features and their t-SNE map…"):
        images = common.dataset(str(chosen.data), chosen.class_names).split(split)
        return cached_embedding(ckpt, split, images)[0]


def show_embedding(chosen: Chosen) -> None:
    embedding = embedding_ui(chosen)
    if embedding is None:
        return
    colour_by = st.radio("Colour by", list(exploration.COLOUR_BY), horizontal=True, key="metrics_embed_colour")
    frame = exploration.embedding_frame(embedding, chosen.report)
    fig = exploration.embedding_scatter(frame, colour_by, embedding["class_names"])
    event = st.plotly_chart(fig, key="metrics_embedding", on_select="rerun", selection_mode=("points", "box", "lasso"))
    st.caption(exploration.embedding_caption(embedding) + " Select faces (click, box or lasso) to see them below.")
    picked = exploration.selected_ids(fig, event.selection.points if event else [])
    if picked:
        show_faces(frame.set_index("id").loc[picked], face_lookup(chosen.data, chosen.summary, chosen.class_names))


def show_faces(rows, face_of: Callable[[str], np.ndarray | None]) -> None:
    """The selected faces (the first ``GALLERY_LIMIT``), true → predicted class and confidence under each."""
    shown = [(image_id, face_of(image_id)) for image_id in rows.index[:GALLERY_LIMIT]]
    found = [(image_id, face) for image_id, face in shown if face is not None]
    if not found:
        st.info(f"{len(rows):,} face(s) selected; showing them needs the data set they came from: put FER-2013 in "
                "`data/fer2013/` or set `FER2013_PATH`.")
        return
    more = f"; showing the first {len(found)}" if len(rows) > len(found) else ""
    st.write(f"{len(rows):,} face(s) selected{more}.")
    st.image([face for _, face in found], width=96,
             caption=[f"{rows.at[i, 'true']} → {rows.at[i, 'predicted']} ({rows.at[i, 'confidence']:.0%})"
                      for i, _ in found])


@st.cache_data(show_spinner="Measuring the faces' brightness, contrast and sharpness…", max_entries=8)
def computed_slices(data: str, split: str, class_names: tuple[str, ...], report_label: str, _report: dict) -> dict:
    """The report's slices on the data set's images (their properties cached in the data cache); cached per report
    label (``_report`` is not hashed: the label names it)."""
    images = common.dataset(data, class_names).split(split)
    y_true, y_pred = predictions_for(_report, images.ids)
    return slice_report(image_properties(images.images.numpy()), y_true, y_pred, _report["class_names"], split=split)


def slices_of(chosen: Chosen) -> dict | None:
    """The report's slices: saved beside the checkpoint when made from the same predictions, else computed on the
    data set; None (saying how to make them) without either."""
    saved = load_slices(slices_file(chosen.checkpoint, chosen.split))
    report = chosen.report
    if saved and (saved["num_images"], saved["accuracy"]) == (report["num_images"], report["accuracy"]):
        return saved
    if chosen.summary is None:
        st.info("No error slices for this report. Make them with `python -m fer_core slices --checkpoint "
                f"{chosen.checkpoint} --data PATH --split {chosen.split}` (saved beside the checkpoint), or put the "
                "data set in `data/fer2013/` to compute them here.")
        return None
    try:
        return computed_slices(str(chosen.data), chosen.split, chosen.class_names, chosen.label, report)
    except ValueError as e:   # a report made on other images than the data set's
        st.warning(f"The error slices cannot be computed: {e}.")
        return None


def show_slices(chosen: Chosen) -> None:
    slices = slices_of(chosen)
    if slices is None:
        return
    c1, c2 = st.columns(2)
    prop = c1.selectbox("Property", list(slices["properties"]), key="metrics_slice_property",
                        format_func=lambda p: f"{p}: {slices['descriptions'].get(p, p)}")
    of = c2.selectbox("Score", ["accuracy", *(f"recall of {c}" for c in slices["class_names"])],
                      key="metrics_slice_score")
    st.plotly_chart(exploration.slice_bars(slices, prop, None if of == "accuracy" else of.removeprefix("recall of ")),
                    key="metrics_slice_bars")
    st.plotly_chart(exploration.slice_recall_heatmap(slices, prop), key="metrics_slice_heatmap")
    st.caption(f"{slices['n_bins']} bins of about equal count (quantiles of the split; equal values share a bin), "
               "the images in each on its bar and in each cell. Properties are measured once per data set and "
               "cached.")
    st.subheader("Where a class is missed most")
    tables.show(exploration.worst_slices_table(worst_slices(slices)), key="metrics_slice_worst", text_columns=3)
    st.caption("Bins holding 20 or more images of the class, by how far its recall there falls below its recall "
               "on the whole split.")


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
         "how sure it is of right and wrong answers, whether that confidence is calibrated, the images it gets "
         "wrong, the labels it contradicts most confidently, a map of how it sees the faces, and the kinds of "
         "image (dark, flat, blurred) where it fails.")

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
            "Suspect labels": lambda: suspects.show_suspect_labels(
                chosen.report, face_lookup(chosen.data, chosen.summary, chosen.class_names)),
            "Embedding map": lambda: show_embedding(chosen),
            "Error slices": lambda: show_slices(chosen),
            "Compare": lambda: show_comparison(choices, evaluations(), chosen.data, chosen.label)}
for tab, show in zip(st.tabs(list(sections), key="metrics_section", on_change="rerun"), sections.values()):
    if tab.open:   # only the open tab runs: its charts are all the page renders
        with tab:
            show()
