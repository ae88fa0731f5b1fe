"""The Metrics page's suspect-labels section: the images whose given label the model contradicts most
confidently (``fer_core.audit``), their count per class, the figures with and without them, a gallery by
class pair and the CSV."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import tables
from fer_core.audit import AuditError, audit_report, pair_counts, suspects_csv, suspects_of_pair

GALLERY_LIMIT = 48   # faces shown at once: a screenful at 96 px
KEY = "metrics_suspects"   # the section lives on the Metrics page: its widget keys carry the page's prefix
ALL_PAIRS = "all pairs"


@st.cache_data(show_spinner="Looking for suspect labels…", max_entries=8)
def suspect_audit(report: dict) -> dict:
    """The report's audit, once per report (cleanlab takes a second or two; a rerun takes none)."""
    return audit_report(report)


def show_suspect_labels(report: dict, face_of: Callable[[str], np.ndarray | None]) -> None:
    """The section: ``face_of(image id)`` gives the grey uint8 face, or None where the data set is absent."""
    try:
        audit = suspect_audit(report)
    except AuditError as e:
        st.info(str(e)[0].upper() + str(e)[1:] + ".")
        return
    show_headline(audit)
    tables.show(counts_table(audit), key=f"{KEY}_counts")
    given, predicted = pair_ui(audit)
    show_gallery(suspects_of_pair(audit, given, predicted), face_of)
    st.download_button("Download the suspect labels (CSV)", suspects_csv(audit), mime="text/csv",
                       file_name=f"suspect_labels_{audit.get('split') or 'report'}.csv", key=f"{KEY}_csv")


def show_headline(audit: dict) -> None:
    full, kept = audit["all_images"], audit["without_flagged"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Suspect labels", f"{audit['num_flagged']:,}",
              help=f"of {audit['num_images']:,} images ({audit['num_flagged'] / audit['num_images']:.1%})")
    c2.metric("Accuracy without them", tables.percent(kept["accuracy"]), _points(kept["accuracy"], full["accuracy"]),
              help=f"all {full['images']:,} images: {tables.percent(full['accuracy'])}")
    c3.metric("Macro-F1 without them", tables.decimal(kept["macro_f1"]), _change(kept["macro_f1"], full["macro_f1"]),
              help=f"all {full['images']:,} images: {tables.decimal(full['macro_f1'])}")
    st.caption(f"cleanlab's confident learning ({audit['method']['filter']}) on this report's probabilities flags "
               f"an image when the model puts it in another class than its label; most suspect first by "
               f"{audit['method']['quality'].replace('_', ' ')}. All {full['images']:,} images: accuracy "
               f"{tables.percent(full['accuracy'])}, macro-F1 {tables.decimal(full['macro_f1'])}. The flagged are "
               "images the model gets wrong, so the figures without them bound what cleaner labels could show; "
               "they are not the model's accuracy.")


def _points(value: float | None, base: float | None) -> str | None:
    return None if value is None or base is None else f"{(value - base) * 100:+.1f} points"


def _change(value: float | None, base: float | None) -> str | None:
    return None if value is None or base is None else f"{value - base:+.3f}"


def counts_table(audit: dict) -> pd.DataFrame:
    """Flagged images per given class, as a reader reads them."""
    return pd.DataFrame([{"Class": c, "Images": tables.count(r["images"]), "Flagged": tables.count(r["flagged"]),
                          "Share flagged": tables.percent(r["share"])} for c, r in audit["per_class"].items()])


def pair_ui(audit: dict) -> tuple[str | None, str | None]:
    """The class pair (given label, model's label) the gallery shows; (None, None) for every pair."""
    pairs = {f"{g} → {p} ({n:,})": (g, p) for (g, p), n in pair_counts(audit)}
    choice = st.selectbox("Given label → model's label", [f"{ALL_PAIRS} ({audit['num_flagged']:,})", *pairs],
                          key=f"{KEY}_pair", help="commonest pairs first")
    return pairs.get(choice, (None, None))


def show_gallery(suspects: list[dict], face_of: Callable[[str], np.ndarray | None]) -> None:
    shown = [(s, face) for s in suspects[:GALLERY_LIMIT] if (face := face_of(s["id"])) is not None]
    if not suspects:
        st.write("No suspect labels.")
    elif not shown:
        st.info("The gallery needs the data set the report was made on: put FER-2013 in `data/fer2013/` or set "
                "`FER2013_PATH`. The table and the CSV above do not.")
    else:
        more = f"the {len(shown)} most suspect" if len(suspects) > len(shown) else "all"
        st.write(f"{len(suspects):,} suspect label(s); showing {more}, most suspect first.")
        st.image([face for _, face in shown], width=96,
                 caption=[f"{s['given']} → {s['predicted']} ({s['confidence']:.0%})" for s, _ in shown])
