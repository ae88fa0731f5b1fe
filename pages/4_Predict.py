"""Predict: the expressions of the faces in your photos, with a Grad-CAM map for each face."""
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import faces
from dashboard.common import checkpoint_choices, classifier_or_stop, load_classifier
from fer_core.config import CAM_METHOD_NAMES, DEFAULT_MIN_SCORE, PHOTO_TTA
from fer_core.data import find_fer2013
from fer_core.predict import ImageError, ImagePrediction
from fer_core.storage import architecture_label

MAX_FACES_SHOWN = 12          # per image; the CSV has every face
BESIDE_MAX = 2                # up to this many faces, the cards go beside the photo; more go in a grid under it
GRID_COLUMNS = 3

st.set_page_config(page_title="Predict · FER Studio", page_icon="📷", layout="wide")


@st.cache_data(max_entries=32, show_spinner="Finding and classifying faces…")
def analyse(data: bytes, name: str, checkpoint: str, mtime: float, detect: bool, min_score: float,
            landmarks: bool, tta: str) -> faces.ImageAnalysis:
    """Cached per file content, model version and detection settings; a bad file raises ImageError (not cached)."""
    rgb = faces.decode_image(data, name)
    return faces.analyse_image(load_classifier(Path(checkpoint)), rgb, detect=detect, name=name,
                               landmarks=landmarks, min_score=min_score, tta=tta)


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def grad_cams(crops: np.ndarray, checkpoint: str, mtime: float, method: str, labels: tuple[str, ...]) -> list:
    """Each face's map for the label shown on its card (with test-time views it can differ from the single
    crop's own argmax)."""
    return faces.explain_faces(load_classifier(Path(checkpoint)), crops, method, list(labels))


@st.cache_data(max_entries=8, show_spinner=False)
def example(root: str, name: str) -> faces.ExamplePhoto:
    return faces.example_photo(root, name)


def face_card(analysis: faces.ImageAnalysis, i: int, cams: list, file_id: str, stacked: bool) -> None:
    """One face: its number and label in its box's colour, the crop, its Grad-CAM and the probability bars
    (under the pictures when ``stacked``, for a card in the grid)."""
    face = analysis.prediction.faces[i]
    with st.container(border=True):
        st.markdown(faces.face_heading(face, i), unsafe_allow_html=True)
        if stacked:
            crop, cam = st.columns(2)
            bars = st
        else:
            crop, cam, bars = st.columns([1, 1, 2])
        crop.image(faces.display_face(analysis.faces[i]), caption="aligned" if face.landmarks else "face",
                   width="stretch")
        if cams:
            cam.image(cams[i].overlay, caption=f"{method}: {face.label}", width="stretch")
        bars.plotly_chart(faces.probability_figure(face.probabilities, face.label),
                          key=f"predict_bars:{file_id}:{i}", config={"displayModeBar": False})


st.title("Predict")
st.write("Upload photos or take one with the camera. Every face found is boxed and labelled with its most "
         "likely expression; below each photo are the class probabilities of every face and a Grad-CAM map of "
         "what the model looked at for its prediction.")

# --- the model ----------------------------------------------------------------------------
choices = checkpoint_choices()
if not choices:
    st.info("No model to predict with: there is no checkpoint in `checkpoints/` and no finished training run. "
            "Train one on the Train page or with `python -m fer_core train --data PATH`, or copy a "
            "`.safetensors` checkpoint into `checkpoints/`.")
    st.stop()

left, middle, right = st.columns(3)
checkpoint_label = left.selectbox("Model", list(choices), key="predict_checkpoint",
                                  help="Bundled checkpoints first, then the best checkpoint of each training run.")
method = right.selectbox("Grad-CAM method", list(CAM_METHOD_NAMES), key="predict_method",
                         help="How the class-activation map is computed; the map explains each face's "
                              "predicted class.")
checkpoint = choices[checkpoint_label]
classifier = classifier_or_stop(checkpoint)
mtime = checkpoint.stat().st_mtime
st.caption(f"{architecture_label(classifier.metadata)}, {classifier.img_size} px input, classes: "
           f"{', '.join(classifier.class_names)}.")
left, middle, right = st.columns(3)
min_score = left.slider("Detection confidence", 0.1, 0.95, DEFAULT_MIN_SCORE, 0.05, key="predict_min_score",
                        help="The YuNet face detector's smallest score for a face: lower finds more (small, turned, "
                             "half-hidden) faces and more false ones.")
tta = PHOTO_TTA if middle.toggle(
    "Test-time views", value=True, key="predict_tta",
    help="Averages each face over its mirror image and slightly shifted crops (10 views): about 2 points more "
         "accurate on photos, for ten times the classifier's work (docs/REAL_PHOTOS.md).") else "none"
show_landmarks = right.toggle("Draw landmarks", key="predict_landmarks",
                              help="Eyes, nose tip and mouth corners, from which each face is turned upright "
                                   "and framed as FER-2013's faces before it is classified.")

# --- the photos ---------------------------------------------------------------------------
uploads = st.file_uploader("Photos (JPEG, PNG or WebP)", type=faces.UPLOAD_TYPES, accept_multiple_files=True,
                           key="predict_uploads")
images = [(u, u.name) for u in uploads or []]
if st.toggle("Take a photo with the camera", key="predict_use_camera",
             help="The browser asks for the camera only while this is on."):
    shot = st.camera_input("Camera", key="predict_camera")
    if shot is not None:
        images.append((shot, "Camera photo"))

fer_root = find_fer2013()
example_names = faces.example_names(fer_root)
if example_names:
    st.caption("Or try an example: faces from FER-2013's test split, put together into a photo here.")
    for column, name in zip(st.columns(len(example_names)), example_names):
        if column.button(name, key=f"predict_example_{name.lower().replace(' ', '_')}", width="stretch"):
            st.session_state["predict_example"] = name
chosen = st.session_state.get("predict_example")
if chosen in example_names:
    images.append((example(str(fer_root), chosen), f"Example: {chosen}"))

if not images:
    st.info("Upload one or more photos, or turn on the camera, to see the faces' expressions."
            + (" Or try one of the examples above." if example_names else ""))
    st.stop()

results: list[ImagePrediction] = []
for upload, title in images:
    st.divider()
    st.subheader(title)
    whole_key = f"predict_whole:{upload.file_id}"
    whole = bool(st.session_state.get(whole_key, False))
    try:
        analysis = analyse(upload.getvalue(), upload.name, str(checkpoint), mtime, not whole, min_score,
                           show_landmarks, tta)
    except ImageError as e:
        st.error(f"Skipped: {e}")
        results.append(ImagePrediction(upload.name, 0, 0, error=str(e)))
        continue
    except Exception as e:  # one file that breaks something unforeseen must not stop the others
        st.error(f"Skipped: {upload.name} could not be processed ({type(e).__name__}: {e})")
        results.append(ImagePrediction(upload.name, 0, 0, error=f"{type(e).__name__}: {e}"))
        continue
    prediction = analysis.prediction
    results.append(prediction)
    if prediction.detector_note:
        st.warning(faces.fallback_message(prediction))

    if not prediction.faces:
        st.warning(f"No face found in {title}. {faces.no_face_hint(prediction)} If the image is itself a face "
                   "crop, classify it as a whole.")
    if whole or not prediction.faces:
        st.checkbox("Treat the whole image as one face", key=whole_key,
                    help="Skips face detection and classifies the centred square of the image.")
    if not prediction.faces:
        st.image(analysis.preview, width=min(480, analysis.preview.shape[1]))
        continue

    n = len(prediction.faces)
    beside = n <= BESIDE_MAX
    image_col, faces_col = st.columns([3, 2]) if beside else (st.container(), st.container())
    found = "the whole image, as one face" if whole else f"{n} face{'s' if n > 1 else ''} found"
    image_col.caption(faces.detector_caption(prediction))
    image_col.image(analysis.preview, caption=f"{title}: {found}",
                    width="stretch" if beside else min(900, analysis.preview.shape[1]))
    image_col.download_button("Download the annotated image (PNG)", analysis.annotated_png,
                              file_name=f"{Path(upload.name).stem}_annotated.png", mime="image/png",
                              key=f"predict_png:{upload.file_id}", on_click="ignore")
    shown = min(n, MAX_FACES_SHOWN)
    try:
        cams = grad_cams(analysis.faces[:shown], str(checkpoint), mtime, method,
                         tuple(f.label for f in analysis.prediction.faces[:shown]))
    except (RuntimeError, ValueError) as e:
        cams = []
        faces_col.warning(f"Grad-CAM is not available for this model: {e}")
    with faces_col:
        if shown < n:
            st.caption(f"The {shown} largest of {n} faces; the CSV below has all of them.")
        if beside:
            for i in range(shown):
                face_card(analysis, i, cams, upload.file_id, stacked=False)
        else:
            for start in range(0, shown, GRID_COLUMNS):
                for i, column in zip(range(start, min(shown, start + GRID_COLUMNS)), st.columns(GRID_COLUMNS)):
                    with column:
                        face_card(analysis, i, cams, upload.file_id, stacked=True)

# --- every face in one table --------------------------------------------------------------
st.divider()
st.subheader("All faces")
st.caption("Faces are numbered as on the photos and their cards; the CSV numbers them from 0, as the CLI does.")
percent = {c: st.column_config.NumberColumn(c, format="percent") for c in ("confidence", *classifier.class_names)}
st.dataframe(faces.predictions_frame(results, classifier.class_names), hide_index=True, key="predict_faces_table",
             column_config={**percent, "score": st.column_config.NumberColumn("face score", format="%.2f")})
st.download_button("Download the table (CSV)", faces.predictions_csv(results, classifier.class_names),
                   file_name="predictions.csv", mime="text/csv", key="predict_csv", on_click="ignore")
