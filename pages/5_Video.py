"""Video: the expressions of every person in a video over time, with the annotated video, a timeline and a summary
per person, and any frame's faces with their aligned crops and Grad-CAM.

Each video is processed in its own background process (``VideoJob.start``: ``python -m fer_core video``), so
reloading the page or closing the tab does not stop it; this page only reads the job's files.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run pages/5_Video.py` puts only pages/ on the path
    sys.path.insert(0, str(ROOT))

from dashboard import common, faces, tables  # noqa: E402
from dashboard import video_views as views  # noqa: E402
from fer_core.config import CAM_METHOD_NAMES, DEFAULT_MIN_SCORE, RUNTIME_NAMES  # noqa: E402
from fer_core.video import VideoError, VideoInfo, read_frame, read_frames_csv, read_video_info  # noqa: E402
from fer_core.video_jobs import VideoJob, VideoJobStore  # noqa: E402

ACTIVE = ("queued", "running")
REFRESH_S = 1.5
UPLOAD_TYPES = ["mp4", "mov", "webm", "avi"]
MAX_TIMELINES = 4        # people with a timeline at first (those seen longest); the others on request
STATE_ICON = {"queued": ":material/hourglass_top:", "running": ":material/directions_run:",
              "done": ":material/check_circle:", "failed": ":material/error:", "stopped": ":material/stop_circle:"}

st.set_page_config(page_title="Video · FER Studio", page_icon=":material/movie:", layout="wide")
store = VideoJobStore(common.videos_dir())


@st.cache_data(max_entries=8, show_spinner="Reading the results…")
def results(csv: str, json_path: str, mtime: float):
    return read_frames_csv(csv), json.loads(Path(json_path).read_text())


@st.cache_data(max_entries=32, show_spinner=False)
def frame_image(path: str, index: int):
    return read_frame(path, index)


@st.cache_data(max_entries=32, show_spinner="Finding the frame's faces…")
def frame_view(path: str, index: int, time_s: float, rows, size: int, detection: dict) -> views.FrameView:
    return views.frame_view(size, frame_image(path, index), rows, index, time_s, detection)


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def grad_cams(crops, checkpoint: str, mtime: float, method: str) -> list:
    return faces.explain_faces(common.load_classifier(Path(checkpoint)), crops, method)


def options_ui(classifier_choices: dict[str, Path]) -> dict:
    """The model, runtime and detection settings, and how the video is sampled and smoothed."""
    col = st.columns(3)
    label = col[0].selectbox("Model", list(classifier_choices), key="video_checkpoint",
                             help="Bundled checkpoints first, then the best checkpoint of each training run.")
    runtime = col[1].selectbox("Runtime", RUNTIME_NAMES, key="video_runtime",
                               help="auto: ONNX Runtime when it is installed and matches PyTorch (faster), else "
                                    "PyTorch.")
    min_score = col[2].slider("Detection confidence", 0.1, 0.95, DEFAULT_MIN_SCORE, 0.05, key="video_min_score",
                              help="The YuNet face detector's smallest score for a face: lower finds more (small, "
                                   "turned, half-hidden) faces and more false ones.")
    col = st.columns(3)
    every = col[0].number_input("Detect every N frames", 1, 100, 1, key="video_every",
                                help="1: every frame. N > 1: faces are detected and classified on every Nth frame "
                                     "only (N times faster); the video keeps every frame, the boxes carried.")
    smooth = col[1].number_input("Smoothing (seconds, 0: off)", 0.0, 10.0, 0.5, 0.1, key="video_smooth",
                                 help="Each person's probabilities averaged over about this much time (exponential), "
                                      "so a label does not flicker from frame to frame; the raw ones are kept.")
    limit = col[2].number_input("Longest video (minutes)", 1, 600, 30, key="video_max_minutes",
                                help="A longer video stops with a message at this point (its outputs are then not "
                                     "written as complete).")
    return {"checkpoint": str(classifier_choices[label]), "runtime": runtime, "min_score": float(min_score),
            "every": int(every), "smooth": float(smooth) or None, "max_minutes": float(limit)}


def start_job(upload, options: dict) -> None:
    """Check that the upload is a video, copy it into a new job and start the job's process; a file that is not a
    usable video is refused here, with the library's one-line reason."""
    try:
        info = checked_video(upload)
        job_options = {"every": options["every"], "smooth": options["smooth"], "min_score": options["min_score"],
                       "max_frames": max(1, round(options["max_minutes"] * 60 * (info.fps or 30.0)))}
        job = store.create(upload.getvalue(), upload.name, job_options)
        pid = job.start(options["checkpoint"], runtime=options["runtime"])
    except ValueError as e:   # VideoError, VideoJobError: not a video, a bad name or option, already running
        st.error(f"{upload.name} cannot be processed: {e}")
        return
    except OSError as e:
        st.error(f"Could not start processing {upload.name}: {e}")
        return
    st.session_state.video_job = job.id
    st.success(f"Processing **{upload.name}** in the background (process {pid}): {info.width}x{info.height} px, "
               f"{info.duration_s:,.1f} s.")


def checked_video(upload) -> VideoInfo:
    """The upload's ``VideoInfo`` (``VideoError`` when it is not a usable video), read from a temporary copy."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{Path(upload.name).suffix.lower()}"
        path.write_bytes(upload.getvalue())
        try:
            return read_video_info(path)
        except VideoError as e:   # its message names the temporary copy: name the upload instead
            raise VideoError(str(e).replace(f"{path}: ", "")) from None


def job_source(job: VideoJob) -> dict:
    """The uploaded file's name and when the job was made (``source.json``), or what the folder says."""
    try:
        return json.loads((job.folder / "source.json").read_text())
    except (OSError, ValueError):
        return {"filename": job.input_path.name if any(job.folder.glob("input.*")) else job.id}


def job_label(job: VideoJob) -> str:
    # no state here: in the browser test the label still read "queued" beside the finished job's results (the
    # polling fragment reruns, the select box above it does not); the state is shown, live, right under it
    return f"{job_source(job)['filename']} · {job.id}"


def job_view(job: VideoJob, shown_state: str) -> None:
    """The job's state and progress; re-run every few seconds while it is processed, the results once done."""
    status = job.status()
    state = status.get("state", "queued")
    if (state in ACTIVE) != (shown_state in ACTIVE):
        st.rerun()  # it started or ended: switch the refresh off and show the results
    col = st.columns([5, 1])
    col[0].markdown(f"**{job_source(job)['filename']}**: {STATE_ICON.get(state, '')} **{state}**")
    if state in ACTIVE and col[1].button("Stop", key="video_stop", icon=":material/stop:", width="stretch"):
        job.stop()
    if state == "queued":
        st.info("Starting the video process…")
    elif state == "running":
        progress_bar(status)
    elif state == "failed":
        st.error(f"Processing failed: {status.get('error') or 'no error message was recorded'}")
    elif state == "stopped":
        st.warning(f"Stopped after {status.get('frames_done', 0):,} frames: {status.get('error') or 'on request'}. "
                   "No outputs were written as complete; upload the video again to process it.")


def progress_bar(status: dict) -> None:
    done, total = status.get("frames_done") or 0, status.get("frames_total") or 0
    speed = f", {status['fps']:.1f} frames/s" if status.get("fps") else ""
    eta = f", {estimates_duration(status['eta_s'])} left" if status.get("eta_s") is not None else ""
    if total:
        st.progress(min(done / total, 1.0), text=f"Frame {done:,} of {total:,}{speed}{eta}")
    else:
        st.progress(0.0, text=f"Frame {done:,}{speed}")


def estimates_duration(seconds: float) -> str:
    from dashboard.estimates import duration

    return duration(seconds)


def results_view(job: VideoJob, fallback_checkpoint: Path) -> None:
    """The annotated video, the summary table, a timeline per person, a frame's faces, and the downloads."""
    outputs = job.outputs()
    missing = sorted({"csv", "json", "video"} - set(outputs))
    if missing:
        st.error(f"Video job {job.id} is done but its {', '.join(missing)} output is missing (removed?).")
        return
    frames, summary = results(str(outputs["csv"]), str(outputs["json"]), outputs["json"].stat().st_mtime)
    st.caption(views.video_caption(summary))
    if summary.get("detector_note"):
        st.warning(f"{summary['detector_note']}.")
    left, right = st.columns([3, 2])
    left.video(str(outputs["video"]))
    with right:
        st.subheader("People")
        values = st.radio("Columns", list(views.SUMMARY_VALUES), key="video_summary_values",
                          format_func=lambda v: views.SUMMARY_VALUES[v])
        tables.show(views.summary_table(summary, values), key="video_summary", text_columns=1)
        downloads(job_source(job)["filename"], outputs)
    people = views.tracks(frames)
    if not people:
        st.warning("No face was found in this video. Try a lower detection confidence; faces need to show both "
                   "eyes and be at least about 10 px.")
        return
    index = frame_slider(frames)
    timelines(frames, summary, people, at_s=views.frame_time(frames, index))
    frame_faces_view(job, frames, summary, index, views.job_checkpoint(summary) or fallback_checkpoint)


def downloads(filename: str, outputs: dict[str, Path]) -> None:
    stem = Path(filename).stem
    for kind, mime, label in (("csv", "text/csv", "the per-frame table (CSV)"),
                              ("json", "application/json", "the summary (JSON)"),
                              ("video", "video/webm", "the annotated video (WebM)")):
        path = outputs[kind]
        st.download_button(f"Download {label}", path.read_bytes(), file_name=f"{stem}_{path.name}", mime=mime,
                           key=f"video_download_{kind}", on_click="ignore", width="stretch")


def frame_slider(frames) -> int:
    """The frame the user picks (a processed one: every Nth with "Detect every N frames")."""
    processed = views.processed_frames(frames)
    if len(processed) == 1:
        return processed[0]
    step = processed[1] - processed[0]
    chosen = st.slider("Frame", processed[0], processed[-1], processed[0], step, key="video_frame",
                       help="Its faces, their aligned crops and Grad-CAM are under the timelines; a dotted line "
                            "marks it on them.")
    return views.nearest_frame(processed, chosen)


def timelines(frames, summary: dict, people: list[int], at_s: float) -> None:
    st.subheader("Timelines")
    seen_longest = [p["track"] for p in sorted(summary.get("tracks") or [], key=lambda p: -p["frames"])]
    col = st.columns([1, 3])
    mode = col[0].radio("Show", views.MODES, key="video_timeline_mode", horizontal=True,
                        format_func=lambda m: {"probabilities": "probabilities", "label": "label"}[m])
    shown = col[1].multiselect("People", people, default=[t for t in seen_longest if t in people][:MAX_TIMELINES],
                               key="video_people", format_func=lambda t: f"person {t}")
    for track in shown:
        st.markdown(f"**Person {track}**")
        st.plotly_chart(views.timeline_figure(frames, track, mode, at_s=at_s), key=f"video_timeline_{track}",
                        config={"displayModeBar": False})
    if views.has_smoothing(frames) and mode == "probabilities":
        st.caption("Faint lines: each frame's own probabilities; bold lines: smoothed over time, as the annotated "
                   "video labels the faces.")


def frame_faces_view(job: VideoJob, frames, summary: dict, index: int, checkpoint: Path) -> None:
    """Frame ``index`` with its people boxed, and a card a face: its aligned crop, Grad-CAM and probabilities."""
    rows = views.frame_faces(frames, index)
    classifier = common.classifier_or_stop(checkpoint)
    st.subheader(f"Frame {index:,}")
    view = frame_view(str(job.input_path), index, views.frame_time(frames, index), rows, classifier.img_size,
                      views.detection_options(summary))
    image_col, faces_col = st.columns([3, 2])
    image_col.image(view.annotated, caption=f"Frame {index:,} at {views.frame_time(frames, index):.2f} s",
                    width="stretch")
    if rows.empty:
        faces_col.info("Nobody in this frame.")
        return
    method = faces_col.selectbox("Grad-CAM method", list(CAM_METHOD_NAMES), key="video_method",
                                 help="How the class-activation map is computed; it explains the class the model "
                                      "predicts for the crop.")
    mtime = checkpoint.stat().st_mtime
    try:
        cams = grad_cams(view.crops, str(checkpoint), mtime, method)
    except (RuntimeError, ValueError) as e:
        cams = []
        faces_col.warning(f"Grad-CAM is not available for this model: {e}")
    names = views.class_names(frames)
    with faces_col:
        for i, row in rows.iterrows():
            with st.container(border=True):
                st.markdown(views.person_heading(row), unsafe_allow_html=True)
                crop, cam, bars = st.columns([1, 1, 2])
                crop.image(faces.display_face(view.crops[i]), caption="aligned" if view.aligned[i] else "face",
                           width="stretch")
                if cams:
                    cam.image(cams[i].overlay, caption=f"{method}: {cams[i].predicted}", width="stretch")
                bars.plotly_chart(faces.probability_figure(views.face_probabilities(row, names), row["label"]),
                                  key=f"video_bars_{index}_{i}", config={"displayModeBar": False})


# --- the page -----------------------------------------------------------------------------------

st.title("Video")
st.write("Upload a video: every face is found, followed from frame to frame as one person, and classified; you get "
         "the annotated video, each person's expressions over time, a summary per person, and any frame's faces "
         "with what the model looked at. Processing runs in the background: reloading the page does not stop it.")

choices = common.checkpoint_choices()
if not choices:
    st.info("No model to classify with: there is no checkpoint in `checkpoints/` and no finished training run. "
            "Train one on the Train page or with `python -m fer_core train --data PATH`.")
    st.stop()

st.header("New video")
options = options_ui(choices)
limit_mb = st.get_option("server.maxUploadSize")
upload = st.file_uploader(f"Video (MP4, MOV, WebM or AVI; up to {limit_mb} MB)", type=UPLOAD_TYPES,
                          key="video_upload")
if st.button("Process the video", type="primary", key="video_submit", disabled=upload is None):
    start_job(upload, options)

st.header("Videos")
jobs = store.list()
if not jobs:
    st.info(f"No videos processed yet (they are kept in `{common.videos_dir()}`). Upload one above.")
    st.stop()
job_by_id = {j.id: j for j in jobs}
if st.session_state.get("video_job") not in job_by_id:
    st.session_state.video_job = jobs[0].id   # the newest
selected = job_by_id[st.selectbox("Video", list(job_by_id), key="video_job", help="Newest first.",
                                  format_func=lambda i: job_label(job_by_id[i]))]
shown = selected.status().get("state", "queued")
st.fragment(run_every=REFRESH_S if shown in ACTIVE else None)(job_view)(selected, shown)
if shown == "done":
    results_view(selected, Path(options["checkpoint"]))
