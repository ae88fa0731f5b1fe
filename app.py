"""FER Studio: the entry point (`streamlit run app.py`): the home page and the navigation to the others."""
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import tables
from dashboard.common import bundled_checkpoints, data_path, data_summary, report, run_store, saved_reports
from dashboard.warm_up import page_script_running, start_warm_up
from fer_core.data import DataError


def saved_reports_of(checkpoint: Path) -> dict[str, dict]:
    """The reports saved beside a checkpoint, by label; an unreadable one is left out (Metrics names it)."""
    found = {}
    for label, path in saved_reports(checkpoint).items():
        try:
            found[label] = report(str(path), path.stat().st_mtime)
        except (OSError, ValueError):
            pass
    return found


def bundled_model(checkpoints: list[Path]) -> None:
    """What the bundled model scores, from the reports saved beside it, and the way to try it on a photo."""
    st.header("The bundled model")
    if not checkpoints:
        st.info("No checkpoint in `checkpoints/` yet. Train one on the Train page or with "
                "`python -m fer_core train --data PATH`.")
        return
    model = checkpoints[0]
    reports = saved_reports_of(model)
    head = tables.headline_report(reports)
    if head is None:
        st.write(f"`{model.name}` has no saved evaluation report yet: evaluate it on the Metrics page.")
    else:
        rep = head[1]
        c1, c2, c3 = st.columns(3)
        c1.metric(f"Accuracy on {rep.get('split', head[0])}", tables.percent(rep["accuracy"]))
        c2.metric("Macro-F1", tables.decimal(rep["macro"]["f1"]), help="The mean of the classes' F1: every class "
                  "counts the same, the rare disgust as much as happy.")
        c3.metric("Faces it was measured on", tables.count(rep["num_images"]))
        st.caption(f"`{model.name}`, from its saved reports; every report and class is on the Metrics page.")
        with st.expander(f"All {len(reports)} saved reports"):
            tables.show(tables.report_scores(reports), key="home_reports", text_columns=2)
    st.page_link(PAGES[3], label="Try it on a photo", icon=":material/photo_camera:")


def data_set() -> None:
    """Where FER-2013 is and its images per split and class, in label order; decoded with a progress bar the
    first time (the sections above need none of it, so they are already on the page)."""
    st.header("Data set")
    fer_path = data_path()
    if fer_path is None:
        st.info("FER-2013 was not found. Put it in `data/fer2013/` (the `train/` and `test/` class folders) or "
                "`data/fer2013.csv` (the challenge's CSV), or set `FER2013_PATH`. Everything that does not need "
                "the data set still works.")
        return
    try:
        summary = data_summary(str(fer_path))
    except DataError as e:
        st.warning(f"The data set at `{fer_path}` cannot be read: {e}")
        return
    counts = pd.DataFrame(summary.counts).reindex(list(summary.class_names))   # label order: 0 angry ... 6 neutral
    st.write(f"Found FER-2013 at `{fer_path}`: {int(counts.values.sum()):,} images.")
    st.bar_chart(counts, horizontal=True, sort=False, stack=False, x_label="images", y_label="class",
                 color=list(SPLIT_COLOURS[:counts.shape[1]]))


def home() -> None:
    st.title("FER Studio")
    st.write("Facial expression recognition on FER-2013: train an EfficientNet-B0, see where it is right and "
             "wrong class by class, look at what it looks at (Grad-CAM), and run it on your own photos.")
    found = bundled_checkpoints()
    bundled_model(found)

    st.header("Pages")
    for page in PAGES:
        st.page_link(page, label=f"{page.title}: {PAGE_NOTES[page.title]}")

    st.header("Checkpoints")
    if found:
        tables.show(tables.checkpoints(found, saved_reports_of), key="home_checkpoints", text_columns=3)
    else:
        st.write("None yet.")

    st.header("Runs")
    runs = run_store().list()
    if runs:
        tables.show(tables.runs([tables.run_summary(r) for r in runs]), key="home_runs", text_columns=3)
    else:
        st.write("No training runs in `runs/` yet.")
    data_set()


SPLIT_COLOURS = ("#2a6fdb", "#8fb3ea", "#c9d8f2")   # calm blues: the primary colour and two lighter


PAGE_NOTES = {"Train": "launch and watch training runs", "Metrics": "per-class metrics, confusion and bias",
             "Grad-CAM": "where the model looks, face by face", "Predict": "your own photos",
             "Video": "expressions over time, per person"}
PAGES = [st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:", url_path="Train"),
         st.Page("pages/2_Metrics.py", title="Metrics", icon=":material/bar_chart:", url_path="Metrics"),
         st.Page("pages/3_Grad-CAM.py", title="Grad-CAM", icon=":material/local_fire_department:", url_path="Grad-CAM"),
         st.Page("pages/4_Predict.py", title="Predict", icon=":material/photo_camera:", url_path="Predict"),
         st.Page("pages/5_Video.py", title="Video", icon=":material/movie:", url_path="Video")]

st.set_page_config(page_title="FER Studio", page_icon="🙂", layout="wide")
with page_script_running():   # the background warm-up waits for the pages' scripts
    try:
        st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), *PAGES]).run()
    finally:   # after the first page's script, whether it finished or stopped: imports and preloads, in a thread
        start_warm_up()
