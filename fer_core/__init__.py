"""FER Studio core: facial expression recognition on FER-2013 and similar data sets.

The public API mirrors the command line (``python -m fer_core info|train|evaluate|predict|explain``):

>>> from fer_core import load_dataset, TrainConfig, train, FerClassifier, evaluate, predict_image
>>> ds = load_dataset("data/fer2013")                        # both published forms
>>> run = train(TrainConfig.from_preset("quick", data="data/fer2013"))
>>> clf = FerClassifier.from_checkpoint(run.best_checkpoint)
>>> report = evaluate(clf, ds.split("PrivateTest"), "PrivateTest")

Nothing here imports Streamlit; the dashboard is a view over these functions.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> submodule; loaded on first use, so that ``from fer_core import RunStore`` does not pull in
# timm, scikit-learn and grad-cam (seconds of import time for a dashboard page that needs none)
_EXPORTS = {
    "checkpoint": ("FerClassifier",),
    "storage": ("CheckpointError", "load_report", "read_metadata", "save_report"),
    "data": ("FER2013_CLASSES", "FER2013_SPLITS", "DataError", "FerDataset", "DatasetSummary", "FerSplit",
             "check_data_source", "find_fer2013", "load_dataset", "parse_class_list", "summarize_dataset"),
    "evaluation": ("build_report", "evaluate"),
    "audit": ("AuditError", "audit_report", "find_suspects"),
    "explanation": ("CAM_METHODS", "Explanation", "explain"),
    "config": ("MODEL_NAMES", "PRESETS", "TrainConfig"),
    "models": ("ModelError", "create_model"),
    "runtime": ("OnnxClassifier", "load_classifier"),
    "onnx_export": ("export_onnx",),
    "ensemble": ("choose_weights", "save_ensemble"),
    "predict": ("ImageError", "ImagePrediction", "annotate", "load_image", "predict_image", "predict_paths"),
    "detection": ("Face", "FaceModelError", "detect_faces", "get_detector"),
    "runs": ("Run", "RunError", "RunStore"),
    "video": ("FrameResult", "TrackedFace", "VideoError", "VideoInfo", "analyze_video", "iter_video", "read_frame",
              "read_frames_csv", "read_video_info"),
    "video_jobs": ("VideoJob", "VideoJobError", "VideoJobStore"),
    "training": ("TrainingDiverged", "train"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .checkpoint import FerClassifier
    from .data import (FER2013_CLASSES, FER2013_SPLITS, DataError, DatasetSummary, FerDataset, FerSplit,
                       check_data_source, find_fer2013, load_dataset, parse_class_list, summarize_dataset)
    from .evaluation import build_report, evaluate
    from .audit import AuditError, audit_report, find_suspects
    from .explanation import CAM_METHODS, Explanation, explain
    from .config import MODEL_NAMES, PRESETS, TrainConfig
    from .models import ModelError, create_model
    from .onnx_export import export_onnx
    from .ensemble import choose_weights, save_ensemble
    from .runtime import OnnxClassifier, load_classifier
    from .detection import Face, FaceModelError, detect_faces, get_detector
    from .predict import ImageError, ImagePrediction, annotate, load_image, predict_image, predict_paths
    from .runs import Run, RunError, RunStore
    from .video import (FrameResult, TrackedFace, VideoError, VideoInfo, analyze_video, iter_video, read_frame,
                        read_frames_csv, read_video_info)
    from .video_jobs import VideoJob, VideoJobError, VideoJobStore
    from .storage import CheckpointError, load_report, read_metadata, save_report
    from .training import TrainingDiverged, train
