"""FER Studio core: facial expression recognition on FER-2013 and similar data sets.

The public API mirrors the command line (``python -m fer_core info|train|evaluate|predict|explain``):

>>> from fer_core import load_dataset, TrainConfig, train, FerClassifier, evaluate, predict_image
>>> ds = load_dataset("data/fer2013")                        # both published forms
>>> run = train(TrainConfig.from_preset("quick", data="data/fer2013"))
>>> clf = FerClassifier.from_checkpoint(run.best_checkpoint)
>>> report = evaluate(clf, ds.split("PrivateTest"), "PrivateTest")

Nothing here imports Streamlit; the dashboard is a view over these functions.
"""
from .checkpoint import CheckpointError, FerClassifier, read_metadata
from .data import (FER2013_CLASSES, FER2013_SPLITS, DataError, FerDataset, FerSplit, find_fer2013, load_dataset,
                   parse_class_list)
from .evaluation import build_report, evaluate, load_report, save_report
from .explanation import CAM_METHODS, Explanation, explain
from .models import MODEL_NAMES, ModelError, create_model
from .predict import ImageError, ImagePrediction, annotate, detect_faces, load_image, predict_image, predict_paths
from .runs import Run, RunError, RunStore
from .training import PRESETS, TrainConfig, TrainingDiverged, train

__version__ = "0.1.0"

__all__ = [
    "CAM_METHODS", "FER2013_CLASSES", "FER2013_SPLITS", "MODEL_NAMES", "PRESETS", "CheckpointError", "DataError",
    "Explanation", "FerClassifier", "FerDataset", "FerSplit", "ImageError", "ImagePrediction", "ModelError", "Run",
    "RunError", "RunStore", "TrainConfig", "TrainingDiverged", "annotate", "build_report", "create_model",
    "detect_faces", "evaluate", "explain", "find_fer2013", "load_dataset", "load_image", "load_report",
    "parse_class_list", "predict_image", "predict_paths", "read_metadata", "save_report", "train",
]
