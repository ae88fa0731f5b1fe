"""Train: start training runs in the background and watch them.

Each run is its own process (``python -m fer_core train --resume RUN``, started by ``Run.start``), so
reloading the page or closing the tab does not stop it; this page only reads the run's files.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run pages/1_Train.py` puts only pages/ on the path
    sys.path.insert(0, str(ROOT))

from dashboard import common, estimates, tables  # noqa: E402
from dashboard import training_charts as charts  # noqa: E402
from fer_core.config import MODEL_NAMES, PRESET_NOTES, PRESETS, TrainConfig  # noqa: E402
from fer_core.data import FER2013_CLASSES, check_data_source  # noqa: E402
from fer_core.runs import Run, RunError, best_row, check_run_id  # noqa: E402

ACTIVE = ("queued", "running")
REFRESH_S = 2.5
NO_PRESET = "(none: the defaults)"
INT_FIELDS = ("epochs", "batch_size", "img_size", "max_train_images", "unfreeze_head_epochs", "unfreeze_every",
              "clean_epochs")
FLOAT_FIELDS = ("lr", "backbone_lr", "layer_decay", "mixup_alpha", "label_smoothing", "class_weight_power",
                "class_weight_cap")
# Material icons, as the sidebar's: an emoji is an empty box where the machine has no emoji font
STATE_ICON = {"queued": ":material/hourglass_top:", "running": ":material/directions_run:",
              "finished": ":material/check_circle:", "failed": ":material/error:", "stopped": ":material/stop_circle:"}

st.set_page_config(page_title="Train · FER Studio", page_icon=":material/model_training:", layout="wide")
store = common.run_store()


def fill_form(preset: str) -> None:
    """Put a preset's values (or the defaults) into the form's fields."""
    config = TrainConfig() if preset == NO_PRESET else TrainConfig.from_preset(preset)
    st.session_state.train_model = config.model
    st.session_state.train_classes = [c for c in FER2013_CLASSES if c in (config.classes or [])]
    for name in INT_FIELDS:
        st.session_state[f"train_{name}"] = int(getattr(config, name))
    for name in FLOAT_FIELDS:  # backbone_lr None ("same as the head") shows as 0
        st.session_state[f"train_{name}"] = float(getattr(config, name) or 0.0)


def config_from_form() -> tuple[TrainConfig, str | None]:
    """The form's run: a TrainConfig (the preset, the form's values over it) and the run name or None.
    Raises ValueError (RunError is one) with a message for the user."""
    ss = st.session_state
    data = ss.train_data.strip()
    if not data:
        raise ValueError("Give the data set's location: a FER-2013 folder, fer2013.csv, or a folder of class folders.")
    # only inside the configured data folders, and only a data set: checked before any process starts, and the
    # messages name the path, never what a file holds
    data_path = check_data_source(common.confine_data_path(data))
    name = ss.train_run_name.strip() or None
    if name is not None:
        check_run_id(name)
    classes = [c for c in FER2013_CLASSES if c in ss.train_classes]
    if len(classes) == 1:
        raise ValueError("Choose at least two classes (or none for all seven).")
    overrides = {"data": str(data_path), "model": ss.train_model, "classes": classes or None,
                 **{f: ss[f"train_{f}"] for f in INT_FIELDS + FLOAT_FIELDS}}
    overrides["backbone_lr"] = overrides["backbone_lr"] or None
    preset = ss.train_preset
    config = TrainConfig(**overrides) if preset == NO_PRESET else TrainConfig.from_preset(preset, **overrides)
    config.validate()
    return config, name


def estimate_ui() -> None:
    """The run's expected duration for the form's values (as a preset filled them, or as last sent), from a measured
    training speed (``dashboard.estimates``); nothing without a readable data set to count the images of."""
    ss = st.session_state
    try:
        summary = common.data_summary(str(check_data_source(common.confine_data_path(ss.train_data))))
    except ValueError:   # DataError included: the form's own check says what is wrong on Start
        return
    classes = [c for c in FER2013_CLASSES if c in ss.train_classes] or None
    train_images = summary.num_images("Training", classes)
    if ss.train_max_train_images:
        train_images = min(train_images, ss.train_max_train_images)
    earlier = [({**r.read_config(), "_run_id": r.run_id}, r.metrics()) for r in store.list() if r.config_path.exists()]
    guess = estimates.run_estimate(ss.train_model, ss.train_img_size, ss.train_epochs, train_images,
                                   summary.num_images(summary.validation_split, classes), earlier)
    st.caption(f"Estimated duration: **{estimates.duration(guess.seconds)}** for {ss.train_epochs} epoch"
               f"{'' if ss.train_epochs == 1 else 's'} of {train_images:,} training images, from {guess.source}.")


# --- the page ----------------------------------------------------------------------------------

st.title("Train")
st.write("Each run trains in its own background process, so reloading this page or closing the tab does not "
         f"stop it. Runs are saved in `{common.RUNS_DIR}`, one folder each.")

st.header("New run")
if "train_epochs" not in st.session_state:  # first visit: the defaults
    st.session_state.train_preset = NO_PRESET
    fill_form(NO_PRESET)
if "train_data" not in st.session_state:
    st.session_state.train_data = str(common.data_path() or "")
st.selectbox("Preset", [NO_PRESET, *PRESETS], key="train_preset",
             on_change=lambda: fill_form(st.session_state.train_preset),
             help="A recipe that fills in the form; its other settings (augmentation, EMA, weight decay, …) "
                  "come with it. `fer2013-effnet-b0-pretrained` downloads ImageNet weights.")

if st.session_state.train_preset in PRESET_NOTES:
    st.caption(PRESET_NOTES[st.session_state.train_preset])
if st.session_state.train_preset == "quick":
    st.warning("`quick` is a smoke test: it checks that training runs end to end on this machine, in minutes. "
               "Its model learns little (expect validation accuracy near chance); for a model worth evaluating, "
               "use `fer2013-effnet-b0` or the bundled checkpoint.", icon=":material/science:")

with st.form("train_new_run"):
    st.text_input("Data set", key="train_data", placeholder="data/fer2013",
                  help="A FER-2013 folder (`train/`, `test/`), `fer2013.csv`, or a folder of class folders.")
    col = st.columns(4)
    col[0].selectbox("Model", MODEL_NAMES, key="train_model")
    col[1].number_input("Epochs", min_value=1, max_value=1000, step=1, key="train_epochs")
    col[2].number_input("Batch size", min_value=2, max_value=4096, step=2, key="train_batch_size",
                        help="Images a step (even, with mixup).")
    col[3].number_input("Input size (px)", min_value=32, max_value=512, step=16, key="train_img_size")
    col = st.columns([3, 1])
    col[0].multiselect("Classes", FER2013_CLASSES, key="train_classes", placeholder="all seven",
                       help="Train on a subset of the classes; empty: all seven.")
    col[1].number_input("Training images (0: all)", min_value=0, step=1000, key="train_max_train_images",
                        help="A seeded random subset of the training split, for quick runs.")

    st.subheader("Unfreezing and learning rates")
    col = st.columns(5)
    col[0].number_input("Head-only epochs", min_value=0, max_value=1000, step=1, key="train_unfreeze_head_epochs",
                        help="Epochs training only the classifier head (0: everything trainable from the start).")
    col[1].number_input("Unfreeze a stage every (epochs)", min_value=0, max_value=1000, step=1,
                        key="train_unfreeze_every",
                        help="With head-only epochs: after them, one more stage (from the top) every N "
                             "epochs; 0: all the rest at once.")
    col[2].number_input("Learning rate (head)", min_value=1e-7, max_value=1.0, step=1e-4, format="%g",
                        key="train_lr")
    col[3].number_input("Backbone learning rate (0: as the head)", min_value=0.0, max_value=1.0, step=1e-4,
                        format="%g", key="train_backbone_lr", help="The top backbone stage's learning rate.")
    col[4].number_input("Layer decay", min_value=0.05, max_value=1.0, step=0.05, key="train_layer_decay",
                        help="Learning-rate factor per stage towards the input (1: the same for all).")

    st.subheader("Regularisation and class balance")
    col = st.columns(5)
    col[0].number_input("Mixup alpha (0: off)", min_value=0.0, max_value=5.0, step=0.1, key="train_mixup_alpha")
    col[1].number_input("Clean final epochs", min_value=0, max_value=1000, step=1, key="train_clean_epochs",
                        help="The last N epochs train without mixup and random erasing.")
    col[2].number_input("Label smoothing", min_value=0.0, max_value=0.9, step=0.05, key="train_label_smoothing")
    col[3].number_input("Class-weight power (0: off)", min_value=0.0, max_value=2.0, step=0.1,
                        key="train_class_weight_power",
                        help="Loss weights from inverse class frequency to this power (1: inverse frequency).")
    col[4].number_input("Class-weight cap", min_value=1.0, max_value=100.0, step=0.5, key="train_class_weight_cap",
                        help="Weights are clipped to [1/cap, cap].")

    st.text_input("Run name (optional)", key="train_run_name", placeholder="e.g. effb0-64px",
                  help="Letters, digits, '.', '_' and '-'. Empty: the date, time and model.")
    estimate_ui()
    col = st.columns([1, 1, 4])
    submitted = col[0].form_submit_button("Start training", type="primary", key="train_submit")
    col[1].form_submit_button("Update the estimate", key="train_estimate", icon=":material/timer:",
                              help="Take the values above (a form sends them on a button) and estimate again.")

if submitted:
    try:
        config, name = config_from_form()
        new_run = store.create(config.to_dict(), name)
    except ValueError as e:  # RunError included: a bad or taken run name
        st.error(str(e))
    else:
        try:
            pid = new_run.start()
        except (OSError, RunError) as e:
            new_run.update_status(state="failed", error=f"could not start the training process: {e}")
            st.error(f"Could not start the training process: {e}")
        else:
            st.session_state.train_selected = new_run.run_id
            st.success(f"Started run **{new_run.run_id}** (process {pid}).")

st.header("Run")
runs = store.list()
if not runs:
    st.info(f"No training runs in `{common.RUNS_DIR}` yet. Start one with the form above; it will show here "
            "while it trains.")
    st.stop()
run_by_id = {r.run_id: r for r in runs}
if st.session_state.get("train_selected") not in run_by_id:
    st.session_state.train_selected = runs[0].run_id  # the newest
selected = st.selectbox("Run", list(run_by_id), key="train_selected", help="Newest first.")


def run_view(run: Run, shown_state: str) -> None:
    """State, progress, stop/resume, and the curves of one run; re-run every few seconds while it trains."""
    if not run.config_path.exists():
        st.warning(f"Run {run.run_id} is gone (its folder was removed).")
        return
    status = run.status()
    state = status.get("state", "queued")
    if (state in ACTIVE) != (shown_state in ACTIVE):
        st.rerun()  # it started or ended: switch the refresh on or off, and update the table
    config, rows = run.read_config(), run.metrics()
    best = BestEpoch.of(config, rows)
    run_header(run, status, config)
    run_state(run, status, rows, config.get("epochs"), best)
    if rows:
        run_curves(rows, config, best)
    else:
        st.caption("The curves appear when the first epoch ends.")
    run_details(run, config)


class BestEpoch:
    """The epoch in best.safetensors (``runs.best_row``) and its score by the run's ``select_metric``."""

    def __init__(self, row: dict | None, key: str, label: str):
        self.row, self.label = row, label
        value = row.get(key) if row else None
        self.text = "" if value is None else f"{value:.1%}" if key == "val_acc" else f"{value:.3f}"

    @classmethod
    def of(cls, config: dict, rows: list[dict]) -> BestEpoch:
        return cls(best_row(rows), *tables.selection(config))


def run_header(run: Run, status: dict, config: dict) -> None:
    """The run's one-line description and its Stop or Resume button."""
    state, epochs = status.get("state", "queued"), config.get("epochs")
    col = st.columns([5, 1])
    col[0].markdown(f"**{run.run_id}**: {STATE_ICON.get(state, '')} **{state}** · {config.get('model')} · "
                    f"{config.get('img_size')} px · {epochs} epoch{'' if epochs == 1 else 's'}"
                    + (f" · preset `{config['preset']}`" if config.get("preset") else ""))
    if state in ACTIVE:
        if col[1].button("Stop", key="train_stop", icon=":material/stop:", width="stretch",
                         help="Stops after the current batch and saves `last.safetensors`; Resume continues from "
                              "there."):
            if run.stop():
                st.session_state.train_stopping = (run.run_id, status.get("pid"))
            else:
                st.warning("The run is not running any more.")
    elif state in ("stopped", "failed"):
        if col[1].button("Resume", key="train_resume", icon=":material/play_arrow:", width="stretch",
                         help="Continue from the last checkpoint (from the start if there is none)."):
            try:
                run.start()
            except RunError as e:
                st.error(str(e))
            else:
                st.rerun()


def run_state(run: Run, status: dict, rows: list[dict], epochs: int, best: BestEpoch) -> None:
    """What the run is doing: starting, its progress bars, or how it ended."""
    state = status.get("state", "queued")
    if state == "queued":
        st.info("Starting the training process…")
    elif state == "running":
        if st.session_state.get("train_stopping") == (run.run_id, status.get("pid")):
            st.info("Stop requested: the run stops after the current batch and saves its last checkpoint.")
        progress_bars(status.get("progress") or {}, rows, run.run_id)
    elif state == "failed":
        st.error(f"Training failed: {status.get('error') or 'no error message was recorded'}")
    elif state == "stopped":
        where = f" after {len(rows)} of {epochs} epochs" if rows else ""
        resume_from = "its last checkpoint" if run.last_checkpoint.exists() else "the beginning (no checkpoint yet)"
        if status.get("error"):
            st.warning(f"Stopped{where}: {status['error']}")
        else:
            st.info(f"Stopped{where}. Resume continues from {resume_from}.")
    elif state == "finished" and best.row:
        st.success(f"Finished: best validation {best.label} {best.text} at epoch {best.row['epoch']}; "
                   f"checkpoint `{run.best_checkpoint}`.")


def progress_bars(progress: dict, rows: list[dict], run_id: str = "") -> None:
    """The epoch's batches, and the whole run with its time left (from the mean epoch time so far)."""
    if not progress.get("batches"):
        st.progress(0.0, text="Loading the data set and building the model…")
        return
    done = min(progress["batch"] / progress["batches"], 1.0)
    st.progress(done, text=f"Epoch {progress['epoch']} of {progress['epochs']}: batch {progress['batch']} "
                           f"of {progress['batches']}")
    overall = min((progress["epoch"] - 1 + done) / progress["epochs"], 1.0)
    per_epoch = [r["seconds"] for r in rows if r.get("seconds")]
    if per_epoch:
        left = (progress["epochs"] - progress["epoch"] + 1 - done) * sum(per_epoch) / len(per_epoch)
    else:   # the first epoch: from the pace of the batches this page has seen pass
        seen = st.session_state.setdefault("train_first_seen", {})
        first = seen.setdefault((run_id, progress["epoch"]), (time.time(), progress["batch"]))
        left = estimates.first_epoch_eta(first, time.time(), progress)
    eta = "" if left is None else f", {estimates.duration(left)} left"
    st.progress(overall, text=f"Run: {overall:.0%}{eta}")


def run_curves(rows: list[dict], config: dict, best: BestEpoch) -> None:
    """Headline figures, then loss, accuracy, learning rates and unfrozen stages by epoch."""
    last = rows[-1]
    col = st.columns(5)
    col[0].metric("Epochs done", f"{len(rows)} / {config.get('epochs')}")
    col[1].metric(f"Best validation {best.label}", best.text or "–",
                  help=f"epoch {best.row['epoch']}: the weights in best.safetensors, chosen by validation "
                       f"{best.label}" if best.row else "no checkpoint yet")
    col[2].metric("Validation accuracy", f"{last['val_acc']:.1%}",
                  delta=f"{last['val_acc'] - rows[-2]['val_acc']:+.1%}" if len(rows) > 1 else None)
    col[3].metric("Validation macro-F1", f"{last.get('val_macro_f1', float('nan')):.3f}")
    col[4].metric("Training speed", f"{last.get('images_per_s', 0):.0f} img/s",
                  help=f"{last.get('seconds', 0):.0f} s for the last epoch")

    col = st.columns(2)
    col[0].plotly_chart(charts.loss_figure(rows), key="train_chart_loss")
    col[1].plotly_chart(charts.accuracy_figure(rows), key="train_chart_accuracy")
    if config.get("mixup_alpha") or config.get("cutmix_alpha") or config.get("label_smoothing"):
        st.caption("Training loss and accuracy are measured on augmented images with mixed (mixup) and "
                   "smoothed targets, so training accuracy usually sits below validation accuracy and training "
                   "loss above validation loss: the gap is the regularisation, not under-fitting.")
    col = st.columns(2)
    col[0].plotly_chart(charts.learning_rate_figure(rows), key="train_chart_lr")
    col[1].plotly_chart(charts.unfrozen_figure(rows), key="train_chart_unfrozen")


def run_details(run: Run, config: dict) -> None:
    """The class weights training used (``data.json``), the configuration, and the logs' tails."""
    weights = (run.data_info() or {}).get("class_weights")
    with st.expander("Class weights, configuration and log"):
        if weights:
            st.plotly_chart(charts.class_weights_figure(weights), key="train_chart_weights")
        st.json(config, expanded=False)
        st.caption(f"`{run.log_path}`")
        st.code(tables.read_tail(run.log_path, 30) or "(empty)", language=None, wrap_lines=True)
        output = tables.read_tail(run.path / "process.log", 15)
        if output:
            st.caption("The process's own output (`process.log`)")
            st.code(output, language=None, wrap_lines=True)


shown = run_by_id[selected].status().get("state", "queued")
st.fragment(run_every=REFRESH_S if shown in ACTIVE else None)(run_view)(run_by_id[selected], shown)

st.header("All runs")


def runs_table(shown_active: bool) -> None:
    rows = [tables.run_summary(r) for r in store.list()]
    active = any(r["state"] in ACTIVE for r in rows)
    if active != shown_active:
        st.rerun()
    tables.show(tables.runs(rows), key="train_runs_table", text_columns=3)


any_active = any(r.status().get("state") in ACTIVE for r in runs)
st.fragment(run_every=REFRESH_S if any_active else None)(runs_table)(any_active)
