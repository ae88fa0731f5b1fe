"""Grad-CAM: where the model looks, face by face, over a split of the data set."""
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import face_grid, faces
from dashboard.common import (checkpoint_choices, classifier_or_stop, data_path, dataset, load_classifier, report,
                              saved_reports)
from fer_core.data import DataError
from fer_core.evaluation import report_probabilities
from fer_core.config import CAM_METHOD_NAMES
from fer_core.predict import ImageError
from fer_core.storage import CheckpointError

GRID_COLUMNS = 6
PREDICTED = "predicted class"
ANY = "any"

st.set_page_config(page_title="Grad-CAM · FER Studio", page_icon=":material/local_fire_department:", layout="wide")
PHOTO_UPLOAD_MB = 20   # a face photo; the server's 200 MB limit is for the videos to come


@st.cache_data(max_entries=16, show_spinner=False)
def split_probabilities(checkpoint: str, mtime: float, data: str, split: str) -> np.ndarray:
    """Class probabilities (N, C) of every face of a split: from the report saved beside the checkpoint
    when it covers these faces, else computed; cached per model version, data set and split."""
    classifier = load_classifier(Path(checkpoint))
    faces_of_split = dataset(data, tuple(classifier.class_names)).split(split)
    saved = saved_reports(Path(checkpoint)).get(split)
    if saved is not None:
        try:
            saved_report = report(str(saved), saved.stat().st_mtime)  # shared with the Metrics page's cache
            probs = report_probabilities(saved_report, faces_of_split.ids, classifier.class_names)
        except (OSError, ValueError):
            probs = None
        if probs is not None:
            return probs
    return classifier.predict_proba(faces_of_split.images)


@st.cache_data(max_entries=64, show_spinner="Computing the maps…")
def grad_cams(crops: np.ndarray, checkpoint: str, mtime: float, method: str, target: str | None) -> list:
    return faces.explain_faces(load_classifier(Path(checkpoint)), crops, method, target)


@st.cache_resource(show_spinner=False, max_entries=16)
def map_store(checkpoint: str, mtime: float, method: str, target: str | None, data: str, split: str) -> dict:
    """Maps already computed for a model, method, target and split, by face position: a filter change computes
    only the tiles it has not shown before."""
    return {}


def split_maps(shown: np.ndarray, images, checkpoint: Path, mtime: float, method: str, target: str | None,
               data: str, split: str) -> list:
    """The maps of the faces ``shown`` (positions in the split): the missing ones in one batch, then cached."""
    store = map_store(str(checkpoint), mtime, method, target, data, split)
    missing = [int(i) for i in shown if int(i) not in store]
    if missing:
        with st.spinner(f"Computing {len(missing)} map{'' if len(missing) == 1 else 's'}…"):
            for i, explanation in zip(missing, faces.explain_faces(load_classifier(checkpoint),
                                                                   images[missing].numpy(), method, target)):
                store[i] = explanation
    return [store[int(i)] for i in shown]


def show_grid(shown: np.ndarray, crops: np.ndarray, explanations: list, labels, predicted, probs, names,
              opacity: float) -> None:
    """The tiles: the map over the face at ``opacity``, bordered teal (right) or amber (wrong); a tile's number
    opens it in the detail below."""
    for row in range(0, len(shown), GRID_COLUMNS):
        for col, k in zip(st.columns(GRID_COLUMNS), range(row, min(row + GRID_COLUMNS, len(shown)))):
            i = shown[k]
            right = predicted[i] == labels[i]
            tile = face_grid.overlay(crops[k], explanations[k].heatmap, opacity, explanations[k].overlay.shape[0])
            col.image(face_grid.bordered(tile, right), width="stretch",
                      caption=f"{k + 1}. {'✓' if right else '✗'} true {names[labels[i]]}, predicted "
                              f"{names[predicted[i]]} {probs[i, predicted[i]]:.0%}")
            col.button(f"Details of {k + 1}", key=f"gradcam_tile_{k}", width="stretch", type="tertiary",
                       on_click=st.session_state.__setitem__, args=("gradcam_detail", k))


def show_detail(face: np.ndarray, explanation, note: str = "", opacity: float | None = None) -> None:
    """The face, its map (at ``opacity``, else the map's own blend) and its probabilities side by side."""
    images = faces.explanation_images(face, explanation)
    if opacity is not None:
        images["overlay"] = face_grid.overlay(face, explanation.heatmap, opacity, images["overlay"].shape[0])
    original, overlay, bars = st.columns([1, 1, 2])
    original.image(images["face"], caption="face", width="stretch")
    overlay.image(images["overlay"], caption=faces.explanation_caption(explanation), width="stretch")
    bars.plotly_chart(faces.probability_figure(explanation.probabilities, explanation.predicted),
                      key="gradcam_detail_probabilities", config={"displayModeBar": False})
    if explanation.member_heatmaps:   # an ensemble: the map above is its members' mean
        st.caption("An ensemble: the map above is the mean of its members' maps, each on that member's last stage.")
        size = images["overlay"].shape[0]
        for k, (col, heat) in enumerate(zip(st.columns(max(4, len(explanation.member_heatmaps))),
                                            explanation.member_heatmaps)):
            col.image(face_grid.overlay(face, heat, opacity if opacity is not None else 0.45, size),
                      caption=f"member {k + 1}", width="stretch")
    if note:
        st.caption(note)


st.title("Grad-CAM")
st.write("Class-activation maps show which parts of a face drove the model's score for a class: red is strong, "
         "blue is none. Filter a split's faces by their true and predicted class to see what the model looks at "
         "when it is right and when it is wrong.")

# --- model and maps -----------------------------------------------------------------------
choices = checkpoint_choices()
if not choices:
    st.info("No model to explain: there is no checkpoint in `checkpoints/` and no finished training run. "
            "Train one on the Train page or with `python -m fer_core train --data PATH`.")
    st.stop()

model_col, split_col = st.columns(2)
checkpoint_label = model_col.selectbox("Model", list(choices), key="gradcam_checkpoint")
checkpoint = choices[checkpoint_label]
classifier = classifier_or_stop(checkpoint)
mtime = checkpoint.stat().st_mtime
names = list(classifier.class_names)

method_col, target_col = st.columns(2)
method = method_col.selectbox("CAM method", list(CAM_METHOD_NAMES), key="gradcam_method")
target_choice = target_col.selectbox("Explain the score of", [PREDICTED, *names], key="gradcam_target",
                                     help="Each face's predicted class, or one class for every face.")
target = None if target_choice == PREDICTED else target_choice

# --- without the data set: one uploaded face ----------------------------------------------
data = data_path()
if data is None:
    st.info("FER-2013 was not found, so there are no data-set faces to browse. Put it in `data/fer2013/` (the "
            "`train/` and `test/` class folders) or `data/fer2013.csv`, or set `FER2013_PATH`. Meanwhile you can "
            "upload a photo of a face below.")
    upload = st.file_uploader("A face photo (JPEG, PNG or WebP)", type=faces.UPLOAD_TYPES, key="gradcam_upload",
                              max_upload_size=PHOTO_UPLOAD_MB)
    if upload is not None:
        try:
            face, detected = faces.main_face(faces.read_upload(upload), classifier.img_size)
        except ImageError as e:
            st.error(str(e))
            st.stop()
        explanation = grad_cams(face[None], str(checkpoint), mtime, method, target)[0]
        show_detail(face, explanation, "The largest face found in the photo." if detected else
                    "No face was found, so the whole image (its centred square) is taken as the face.")
    st.stop()

try:
    data_set = dataset(str(data), tuple(names))
except (DataError, OSError) as e:
    st.error(f"Cannot use the data set at `{data}` with this model: {e}")
    st.stop()
splits = list(data_set.splits)
split_name = split_col.selectbox("Split", splits, index=splits.index(data_set.validation_split)
                                 if data_set.validation_split in splits else 0, key="gradcam_split")
split = data_set.split(split_name)
labels = split.labels.numpy()
with st.spinner(f"Classifying the {len(split):,} faces of {split_name} (once per model and split)…"):
    try:
        probs = split_probabilities(str(checkpoint), mtime, str(data), split_name)
    except CheckpointError as e:   # e.g. a model whose outputs are not finite
        st.error(f"Cannot classify with this model: {e}")
        st.stop()
predicted = probs.argmax(1)

# --- which faces --------------------------------------------------------------------------
true_col, pred_col, outcome_col, order_col, limit_col, opacity_col = st.columns([2, 2, 2, 3, 1, 2])
true_choice = true_col.selectbox("True class", [ANY, *names], key="gradcam_true_class")
pred_choice = pred_col.selectbox("Predicted class", [ANY, *names], key="gradcam_predicted_class")
outcome = outcome_col.selectbox("Prediction", faces.OUTCOMES, key="gradcam_outcome",
                                format_func={"all": "right or wrong", "right": "right", "wrong": "wrong"}.get)
order = order_col.selectbox("Order", face_grid.ORDERS, key="gradcam_order",
                            help="Mistakes the model is surest of teach the most; shuffled takes each class in turn.")
limit = limit_col.selectbox("Show", [12, 24, 48], index=1, key="gradcam_limit")
opacity = opacity_col.slider("Map opacity", 0.0, 1.0, 0.45, 0.05, key="gradcam_opacity",
                             help="0: the face alone, 1: the map alone.")

matches, matching = faces.select_faces(labels, probs, None if true_choice == ANY else names.index(true_choice),
                                       None if pred_choice == ANY else names.index(pred_choice), outcome,
                                       faces.ORDERS[0], None)
shown = face_grid.order_faces(matches, labels, probs, order)[:limit]
accuracy = float((predicted == labels).mean()) if len(labels) else 0.0
st.caption(f"{split_name}: {len(split):,} faces, {accuracy:.1%} right. {matching:,} match the filters; "
           f"showing {len(shown)}. Borders: teal right, amber wrong.")
if not len(shown):
    st.info("No face matches these filters.")
    st.stop()

crops = split.images[shown].numpy()
try:
    explanations = split_maps(shown, split.images, checkpoint, mtime, method, target, str(data), split_name)
except (RuntimeError, ValueError) as e:
    st.error(f"Grad-CAM is not available for this model: {e}")
    st.stop()

show_grid(shown, crops, explanations, labels, predicted, probs, names, opacity)

# --- one face in detail -------------------------------------------------------------------
st.subheader("One face in detail")
if st.session_state.get("gradcam_detail", 0) >= len(shown):   # fewer tiles than before
    st.session_state.gradcam_detail = 0
k = st.selectbox("Face", range(len(shown)), key="gradcam_detail",
                 format_func=lambda k: f"{k + 1}. {split.ids[shown[k]]} (true {names[labels[shown[k]]]})",
                 help="Or press a tile's Details button above.")
i = shown[k]
show_detail(crops[k], explanations[k], f"{split.ids[i]}: true class {names[labels[i]]}, predicted "
            f"{names[predicted[i]]} ({probs[i, predicted[i]]:.1%}).", opacity)
