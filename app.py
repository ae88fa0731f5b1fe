"""FER Studio: the entry point (`streamlit run app.py`): the home page and the navigation to the others."""
import pandas as pd
import streamlit as st

from dashboard.common import checkpoint_dir, data_path, data_summary, run_store
from dashboard.warm_up import page_script_running, start_warm_up
from fer_core.storage import CheckpointError, read_metadata


def checkpoints() -> list[dict]:
    rows = []
    for path in sorted(checkpoint_dir().glob("*.safetensors")):
        try:
            meta = read_metadata(path)
        except CheckpointError as e:
            rows.append({"checkpoint": path.name, "error": str(e)})
            continue
        rows.append({"checkpoint": path.name, "model": meta["arch"], "classes": ", ".join(meta["class_names"]),
                     "input": f"{meta['img_size']} px", "size (MB)": round(path.stat().st_size / 1e6, 1)})
    return rows


def home() -> None:
    st.title("FER Studio")
    st.write("Facial expression recognition on FER-2013: train an EfficientNet-B0, see where it is right and "
             "wrong class by class, look at what it looks at (Grad-CAM), and run it on your own photos.")

    st.header("Data set")
    fer_path = data_path()
    if fer_path is None:
        st.info("FER-2013 was not found. Put it in `data/fer2013/` (the `train/` and `test/` class folders) or "
                "`data/fer2013.csv` (the challenge's CSV), or set `FER2013_PATH`. Everything that does not need "
                "the data set still works.")
    else:
        counts = pd.DataFrame(data_summary(str(fer_path)).counts)
        st.write(f"Found FER-2013 at `{fer_path}`: {int(counts.values.sum()):,} images.")
        st.bar_chart(counts, horizontal=True)

    st.header("Checkpoints")
    found = checkpoints()
    if found:
        st.dataframe(pd.DataFrame(found), hide_index=True, key="home_checkpoints")
    else:
        st.info("No checkpoint in `checkpoints/` yet. Train one with `python -m fer_core train --data PATH`.")

    st.header("Runs")
    runs = run_store().list()
    if runs:
        st.dataframe(pd.DataFrame([{"run": r.run_id, "state": r.status().get("state"), "epochs": len(r.metrics())}
                                   for r in runs]), hide_index=True, key="home_runs")
    else:
        st.write("No training runs in `runs/` yet.")

    st.header("Pages")
    for page in PAGES:
        st.page_link(page, label=f"{page.title}: {PAGE_NOTES[page.title]}")


PAGE_NOTES = {"Train": "launch and watch training runs", "Metrics": "per-class metrics, confusion and bias",
             "Grad-CAM": "where the model looks, face by face", "Predict": "your own photos"}
PAGES = [st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:", url_path="Train"),
         st.Page("pages/2_Metrics.py", title="Metrics", icon=":material/bar_chart:", url_path="Metrics"),
         st.Page("pages/3_Grad-CAM.py", title="Grad-CAM", icon=":material/local_fire_department:", url_path="Grad-CAM"),
         st.Page("pages/4_Predict.py", title="Predict", icon=":material/photo_camera:", url_path="Predict")]

st.set_page_config(page_title="FER Studio", page_icon="🙂", layout="wide")
with page_script_running():   # the background warm-up waits for the pages' scripts
    try:
        st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), *PAGES]).run()
    finally:   # after the first page's script, whether it finished or stopped: imports and preloads, in a thread
        start_warm_up()
