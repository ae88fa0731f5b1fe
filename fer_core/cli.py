"""``python -m fer_core info|train|evaluate|calibrate|audit|embed|slices|predict|explain|export|ensemble|serve|video``:
thin wiring of the library's calls."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from .storage import BUNDLED_CHECKPOINT   # light: no PyTorch


def default_checkpoint() -> Path | None:
    return BUNDLED_CHECKPOINT if BUNDLED_CHECKPOINT.exists() else None


class CliError(Exception):
    """A failure reported as one line, with a non-zero exit."""


# --- info ----------------------------------------------------------------------------------

def cmd_info(args) -> int:
    from .data import load_dataset, parse_class_list

    ds = load_dataset(args.data, classes=parse_class_list(args.classes))
    info = {"source": ds.source, "class_names": list(ds.class_names), "validation_split": ds.validation_split,
            "test_splits": list(ds.test_splits), "counts": ds.counts(),
            "totals": {s: len(sp) for s, sp in ds.splits.items()},
            "skipped": [{"path": p, "reason": r} for p, r in ds.skipped], "warnings": ds.warnings}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{ds.source}: {sum(info['totals'].values())} images, {ds.num_classes} classes")
    width = max(len(c) for c in ds.class_names)
    print(" " * width + "".join(f"{s:>13}" for s in ds.splits))
    for c in ds.class_names:
        print(f"{c:<{width}}" + "".join(f"{info['counts'][s][c]:>13,}" for s in ds.splits))
    print(f"{'total':<{width}}" + "".join(f"{n:>13,}" for n in info["totals"].values()))
    for w in ds.warnings:
        print(f"warning: {w}")
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} unreadable image(s), e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]}")
    return 0


# --- train ---------------------------------------------------------------------------------

_TRAIN_SKIP = {"data", "preset"}
_TRAIN_HELP = {
    "classes": "class subset, comma-separated (e.g. angry,disgust,fear,happy)",
    "weights": "local ImageNet-style weights file (safetensors or state dict) to start from",
    "teacher": "a trained .safetensors checkpoint whose flip-averaged probabilities join the targets "
               "(knowledge distillation; it must know every trained class)",
    "cpu_bf16": "train in bfloat16 autocast on the CPU (fast on CPUs with native bf16, e.g. AVX512-BF16; "
                "slower for EfficientNet)",
    "distill_weight": "the teacher's share of the targets, 0-1 (default 0.5; with --teacher only)",
    "distill_cached": "the teacher reads each training image once, un-augmented (kept in the run folder), and "
                      "each batch mixes those probabilities like its labels, instead of the teacher reading "
                      "every augmented batch: faster epochs with an ensemble teacher (with --teacher only)",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag a ``TrainConfig`` field (``--batch-size`` for ``batch_size``), default None."""
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _TRAIN_SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        help_text = _TRAIN_HELP.get(f.name, f"default {f.default!r}" if f.default is not None else "")
        if base[0] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "classes":
            parser.add_argument(flag, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=base[0] if base[0] in (int, float) else str, default=None,
                                help=help_text)


def cmd_train(args) -> int:
    from .data import parse_class_list
    from .config import TrainConfig
    from .training import train

    overrides = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if f.name not in _TRAIN_SKIP and value is not None:
            overrides[f.name] = parse_class_list(value) if f.name == "classes" else value
    if args.resume:
        unexpected = set(overrides) - {"epochs", "clean_epochs", "threads"}
        if unexpected:
            raise CliError(f"--resume continues a run with its own config; only --epochs and --clean-epochs can "
                           f"change (got {', '.join(sorted(unexpected))})")
        run = train(runs_root=args.out, resume=args.resume, epochs=overrides.get("epochs"),
                    clean_epochs=overrides.get("clean_epochs"))
    else:
        if not args.data:
            raise CliError("--data PATH is required (a FER-2013 folder or fer2013.csv)")
        if args.config:
            config = TrainConfig.from_dict({**json.loads(Path(args.config).read_text()), **overrides,
                                            "data": args.data})
        elif args.preset:
            config = TrainConfig.from_preset(args.preset, data=args.data, **overrides)
        else:
            config = TrainConfig(data=args.data, **overrides)
        run = train(config, runs_root=args.out, run_id=args.run_id)
    status = run.status()
    rows = run.metrics()
    best = run.best_metrics()
    summary = {"run": str(run.path), "state": status["state"], "epochs": len(rows),
               "best_checkpoint": str(run.best_checkpoint) if run.best_checkpoint.exists() else None,
               "best_epoch": best["epoch"] if best else None,
               "best_val_acc": best["val_acc"] if best else None,
               "best_val_macro_f1": best["val_macro_f1"] if best else None}
    print(json.dumps(summary) if args.json else
          f"run {run.path}: {status['state']} after {len(rows)} epoch(s); best checkpoint "
          + (f"from epoch {best['epoch']}: validation accuracy {best['val_acc']:.4f}, macro-F1 "
             f"{best['val_macro_f1']:.4f}; {summary['best_checkpoint']}" if best else "none"))
    return 0 if status["state"] in ("finished", "stopped") else 1


# --- evaluate ------------------------------------------------------------------------------

def cmd_evaluate(args) -> int:
    from .evaluation import summary_line
    from .storage import save_report

    report = _evaluated(args)
    if args.json:
        save_report(report, args.json)
    print(summary_line(report))
    return 0


def _evaluated(args) -> dict:
    """The report of ``--checkpoint`` on ``--data``'s ``--split`` (``--classes``, ``--tta``, ``--runtime``)."""
    from .data import load_dataset, parse_class_list
    from .evaluation import evaluate
    from .runtime import load_classifier

    ckpt = _checkpoint(args.checkpoint)
    classifier = load_classifier(ckpt, args.runtime)
    if getattr(args, "classes", None):
        classifier = classifier.restricted_to(parse_class_list(args.classes))
    dataset = load_dataset(args.data, classes=list(classifier.class_names))
    split = dataset.split(args.split)
    report = evaluate(classifier, split, split_name=args.split, tta=args.tta, progress=True, source=dataset.source)
    report.update(checkpoint=str(ckpt), runtime=classifier.runtime)
    return report


# --- audit ---------------------------------------------------------------------------------

def cmd_audit(args) -> int:
    """Suspect labels of a split: a saved report's probabilities (--report), else the checkpoint's, evaluated."""
    from .audit import audit_report, check_out_of_sample, read_report, summary_lines, write_suspects_csv

    if args.report:
        report = read_report(args.report)
        if args.split and args.split.lower() != str(report.get("split", "")).lower():
            raise CliError(f"{args.report} is a report on another split than {args.split}")
    else:
        if not args.data or not args.split:
            raise CliError("--data and --split are required without --report")
        if args.cross_validated:
            raise CliError("--cross-validated describes a --report's probabilities; a checkpoint evaluated here "
                           "on its training split is not out-of-sample")
        check_out_of_sample(args.split)   # before minutes of evaluation
        report = _evaluated(args)
    audit = audit_report(report, cross_validated=args.cross_validated, filter_by=args.filter)
    write_suspects_csv(audit, args.csv)
    print("\n".join(summary_lines(audit)))
    print(f"{args.csv}: {audit['num_flagged']:,} suspect label(s), most suspect first")
    return 0


# --- embed, slices --------------------------------------------------------------------------

def cmd_embed(args) -> int:
    """The split's embedding map, cached beside the checkpoint (``<stem>.<split>.embedding.json``)."""
    from .checkpoint import FerClassifier
    from .data import load_dataset
    from .embedding import cached_embedding, embedding_file

    ckpt = _checkpoint(args.checkpoint)
    classifier = FerClassifier.from_checkpoint(ckpt)   # the features come from the PyTorch model
    split = load_dataset(args.data, classes=list(classifier.class_names)).split(args.split)
    result, cached = cached_embedding(ckpt, args.split, split, method=args.method, seed=args.seed,
                                      classifier=classifier)
    took = ("cached" if cached else f"features {result['seconds']['features']:.1f} s, "
            f"{'t-SNE' if args.method == 'tsne' else 'UMAP'} {result['seconds']['projection']:.1f} s")
    print(f"{embedding_file(ckpt, args.split)}: {result['num_images']:,} faces, {result['feature_dim']} features "
          f"projected to 2-D ({took})")
    return 0


def cmd_slices(args) -> int:
    """Accuracy and per-class recall by image property, from the split's saved report (else evaluated)."""
    from .data import load_dataset
    from .slices import image_properties, predictions_for, save_slices, slice_report, slices_file, worst_slices
    from .storage import load_report

    ckpt = _checkpoint(args.checkpoint)
    saved = ckpt.with_name(f"{ckpt.stem}.{args.split}.json")
    report = load_report(args.report or saved) if args.report or saved.is_file() else _evaluated(args)
    split = load_dataset(args.data, classes=report.get("class_names")).split(args.split)
    y_true, y_pred = predictions_for(report, split.ids)
    detector = _roll_detector(args.face_model) if args.roll else None
    props = image_properties(split.images.numpy(), detector)
    result = slice_report(props, y_true, y_pred, report["class_names"], n_bins=args.bins, split=args.split)
    path = Path(args.json) if args.json else slices_file(ckpt, args.split)
    save_slices(result, path)
    print(f"{path}: {result['num_images']:,} images, accuracy {result['accuracy']:.4f}; {args.bins} quantile bins of "
          f"{', '.join(props)}. Where a class's recall falls most below its recall on the split:")
    for s in worst_slices(result):
        print(f"  {s['class']:<9} {s['property']} {s['lower']:.4g}-{s['upper']:.4g}: recall {s['recall']:.3f} "
              f"(split {s['overall_recall']:.3f}, {s['support']} images)")
    return 0


def _roll_detector(face_model: str | None):
    from .detection import get_detector

    detector = get_detector("yunet", face_model=face_model)
    if detector.note:   # the Haar fallback finds no landmarks, so no roll
        raise CliError(f"--roll needs YuNet's landmarks: {detector.note}")
    return detector


# --- ensemble ------------------------------------------------------------------------------

def cmd_ensemble(args) -> int:
    """Write an ensemble file naming the member checkpoints, with given, equal or validation-chosen weights."""
    from .data import parse_class_list
    from .ensemble import save_ensemble

    choice = None
    weights = args.weights
    if args.weights_from:
        if weights:
            raise CliError("give --weights or --weights-from, not both")
        if not args.data:
            raise CliError(f"--weights-from {args.weights_from} needs --data PATH (the data set of that split)")
        choice = _chosen_weights(args)
        weights = choice["weights"]
    members = save_ensemble(args.out, args.members, weights, choice, parse_class_list(args.classes))
    classes = f" over {args.classes}" if args.classes else ""
    print(f"{args.out}: an ensemble of {len(members)}{classes}")
    for m in members:
        print(f"  {m.weight:.2f}  {m.file} ({m.arch}, {m.img_size} px)")
    if choice:
        metric = choice["metric"]
        own = ", ".join(f"{a:.4f}" for a in choice[f"member_{metric}"])
        print(f"{args.weights_from} {metric} {choice[metric]:.4f} (equal weights "
              f"{choice[f'equal_weights_{metric}']:.4f}; members {own})")
    return 0


def _chosen_weights(args) -> dict:
    """The members' weights with the best ``--metric`` on ``--weights-from`` (``ensemble.choose_weights``)."""
    from .checkpoint import FerClassifier
    from .data import load_dataset, parse_class_list
    from .ensemble import choose_weights, member_log_probs

    if args.weights_from in ("PrivateTest", "test"):
        raise CliError(f"--weights-from {args.weights_from}: choose on the selection split (PublicTest), not on the "
                       "one you report")
    classifiers = [FerClassifier.from_checkpoint(m, calibrated=False) for m in args.members]
    if args.classes:
        classifiers = [c.restricted_to(parse_class_list(args.classes)) for c in classifiers]
    split = load_dataset(args.data, classes=list(classifiers[0].class_names)).split(args.weights_from)
    choice = choose_weights(member_log_probs(classifiers, split.images), split.labels.numpy(), metric=args.metric)
    return {**choice, "split": args.weights_from, "data": str(args.data)}


# --- calibrate -----------------------------------------------------------------------------

def cmd_calibrate(args) -> int:
    """Fit the checkpoint's calibration on a split (a saved report's answers, or evaluated on the data) and save it
    beside the checkpoint, where every runtime finds it; ``--remove`` deletes it."""
    from .calibration import calibrate_checkpoint, remove_calibration, report_answers, sidecar_path
    from .storage import load_report, read_metadata

    ckpt = _checkpoint(args.checkpoint)
    if args.remove:
        print(f"{sidecar_path(ckpt)}: removed" if remove_calibration(ckpt) else f"{ckpt} has no calibration")
        return 0
    names = read_metadata(ckpt)["class_names"]
    if args.report:
        report = load_report(args.report)
        probs, labels = report_answers(report, names)
        split, tta, data = report.get("split", "?"), report.get("tta", "none"), report.get("data", "")
    elif args.data:
        probs, labels, data = _raw_answers(ckpt, args)
        split, tta = args.split, args.tta
    else:
        raise CliError("--data PATH (evaluate the split) or --report R.json (a saved report of it) is required")
    scaling = calibrate_checkpoint(ckpt, names, probs, labels, tta, vector=not args.temperature_only,
                                   about={"split": split, "tta": tta, "data": str(data)})
    _print_calibration(scaling, split, tta, sidecar_path(ckpt))
    return 0


def _raw_answers(ckpt: Path, args):
    """The uncalibrated probabilities and labels of ``args.split`` (PyTorch: a stale calibration is no obstacle)."""
    from .checkpoint import FerClassifier
    from .data import load_dataset
    from .evaluation import predict_split

    classifier = FerClassifier.from_checkpoint(ckpt, calibrated=False)
    dataset = load_dataset(args.data, classes=list(classifier.class_names))
    split = dataset.split(args.split)
    probs = predict_split(classifier, split.images, tta=args.tta, progress=True, calibrated=False)
    return probs, split.labels.numpy(), dataset.source


def _print_calibration(scaling, split: str, tta: str, path: Path) -> None:
    fit = scaling.fit
    how = (f"temperature {scaling.temperature:.4f}" if scaling.method == "temperature"
           else "vector scaling (per-class scale and bias)")
    check = fit.get("vector_check")
    why = (f"; vector scaling {'kept' if check['kept'] else 'not kept'}: held-out NLL "
           f"{check['held_out']['vector']['nll']:.4f} against {check['held_out']['temperature']['nll']:.4f}, "
           f"accuracy {check['held_out']['vector']['accuracy']:.4f} against "
           f"{check['held_out']['temperature']['accuracy']:.4f} ({check['folds']}-fold)" if check else "")
    print(f"{split} ({fit['images']:,} images, TTA {tta}): {how}{why}")
    for key, label in (("ece", "ECE"), ("nll", "NLL"), ("accuracy", "accuracy"),
                       ("mean_confidence", "mean confidence")):
        print(f"  {label:<16} {fit['before'][key]:.4f} -> {fit['after'][key]:.4f}")
    print(f"saved to {path}")


# --- predict -------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    from .predict import predict_paths, predictions_table, write_csv
    from .runtime import load_classifier

    classifier = load_classifier(_checkpoint(args.checkpoint), args.runtime)
    results = predict_paths(classifier, args.images, detect=not args.no_detect, progress=True, tta=args.tta,
                            **_detection(args))
    if not results:
        raise CliError("no images found in " + ", ".join(args.images))
    records = [r.to_dict() for r in results]
    if args.csv:
        write_csv(predictions_table(results, classifier.class_names), args.csv)
    if args.json:
        print(json.dumps(records, indent=1))
    elif not args.csv and any(Path(p).is_dir() for p in args.images):
        write_csv(predictions_table(results, classifier.class_names), sys.stdout)
    elif not args.csv:
        for r in results:
            if r.error:
                print(f"{r.path}: error: {r.error}")
            elif not r.faces:
                print(f"{r.path}: no face found (try --no-detect for an aligned face crop)")
            for i, f in enumerate(r.faces):
                top = ", ".join(f"{c} {p:.2f}" for c, p in sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3])
                score = "" if f.score is None else f" score {f.score:.2f}"
                print(f"{r.path} face {i} at {f.box} ({r.detector}{score}): {f.label} ({top})")
    return 1 if all(r.error for r in results) else 0


def _add_detection_flags(parser: argparse.ArgumentParser, photos: bool = False) -> None:
    """The face-detection options ``predict``, ``explain`` and ``video`` share (``detection.get_detector``'s);
    ``photos``: also ``--one-pass`` (video always detects in one pass)."""
    from .config import DEFAULT_MIN_SCORE, DETECTOR_NAMES, FACE_MODEL_ENV

    parser.add_argument("--detector", default=DETECTOR_NAMES[0], choices=DETECTOR_NAMES,
                        help="yunet (default: faces of any tilt, with landmarks, aligned) or haar (frontal faces)")
    parser.add_argument("--face-model", metavar="PATH", help=f"the YuNet model file (default: ${FACE_MODEL_ENV}, "
                        "else the user cache, else downloaded once from OpenCV Zoo)")
    parser.add_argument("--min-face", type=int, metavar="PX", help="smallest face side in pixels of the photo "
                        "(default: YuNet any, Haar 6%% of the shorter side)")
    parser.add_argument("--min-score", type=float, metavar="S", help=f"YuNet's smallest face score, 0-1 "
                        f"(default {DEFAULT_MIN_SCORE})")
    if photos:
        parser.add_argument("--one-pass", action="store_true", help="YuNet on the photo as it is only, not also "
                            "turned by +-30 degrees: about 3x faster, but it misses more tilted heads "
                            "(docs/REAL_PHOTOS.md)")


def _detection(args) -> dict:
    options = {"detector": args.detector, "face_model": args.face_model, "min_face": args.min_face,
               "min_score": args.min_score}
    if getattr(args, "one_pass", False):
        options["turns"] = ()
    return options


# --- explain -------------------------------------------------------------------------------

def cmd_explain(args) -> int:
    import cv2

    from .checkpoint import FerClassifier
    from .explanation import explain, explanation_figure
    from .predict import load_image, model_faces
    from .storage import atomic_write_bytes

    if not cv2.haveImageWriter(str(args.out)):   # before the work, not after it
        raise CliError(f"could not write {args.out} (use a .png or .jpg name)")
    classifier = FerClassifier.from_checkpoint(_checkpoint(args.checkpoint))
    found, faces = model_faces(load_image(args.image), classifier.img_size, detect=not args.no_detect,
                               **_detection(args))
    if not len(faces):
        raise CliError(f"{args.image}: no face found; pass --no-detect if the image is an aligned face crop")
    if not 0 <= args.face < len(faces):
        raise CliError(f"{args.image}: face {args.face} asked for, {len(faces)} found")
    face = faces[args.face]
    result = explain(classifier, face, method=args.method, target=args.target, tta=args.tta)[0]
    figure = cv2.cvtColor(explanation_figure(face, result), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(Path(args.out).suffix, figure)   # in memory, then written in one go
    if not ok:
        raise CliError(f"could not encode the figure for {args.out}")
    atomic_write_bytes(args.out, encoded.tobytes())   # a reader never sees half an image
    print(f"{args.out}: {result.method} for '{result.target}' (predicted {result.predicted}, "
          f"p={result.probabilities[result.predicted]:.2f}, TTA {args.tta}) on face {args.face} at "
          f"{found[args.face].box}")
    return 0


# --- export --------------------------------------------------------------------------------

def cmd_export(args) -> int:
    """By the output's suffix: ``.onnx`` an ONNX graph (checked against PyTorch), else a weights-only copy."""
    if Path(args.out).suffix.lower() == ".onnx":
        return _export_onnx(args)
    if args.classes:
        raise CliError("--classes restricts an ONNX export (OUT.onnx); a .safetensors copy keeps every class")
    from .checkpoint import ema_weights, read_tensors, save_checkpoint
    from .config import ENSEMBLE_ARCH
    from .storage import read_metadata

    meta = read_metadata(args.checkpoint)
    if meta["arch"] == ENSEMBLE_ARCH:
        raise CliError(f"{args.checkpoint} is an ensemble: it names its members' files and holds no weights to copy; "
                       "export OUT.onnx for one self-contained file")
    model_state, train_state = read_tensors(args.checkpoint)
    if args.ema:
        model_state = ema_weights(train_state)
        if not model_state:
            raise CliError(f"{args.checkpoint} holds no EMA weights: --ema copies them from a run's last checkpoint "
                           "(best already holds them; a run with --ema-decay 0 keeps none)")
    raw = {k: v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
           for k, v in meta.items() if k not in ("optimizer_groups", "progress")}
    save_checkpoint(args.out, model_state, raw, half=args.half)
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e6:.1f} MB ({'fp16' if args.half else 'fp32'})")
    _copy_calibration(args.checkpoint, args.out, meta["class_names"])
    return 0


def _copy_calibration(checkpoint, out, class_names) -> None:
    """The copy gets the checkpoint's calibration too, stamped with the copy's own SHA-256."""
    from .calibration import load_calibration, save_calibration

    calibration = load_calibration(checkpoint, class_names)
    if calibration is not None:
        print(f"{save_calibration(calibration, out)}: its calibration")


def _export_onnx(args) -> int:
    from .checkpoint import FerClassifier
    from .data import parse_class_list
    from .onnx_export import OPSET, export_onnx, file_sha256, reference_faces

    if args.half:
        raise CliError("--half makes an fp16 .safetensors copy; an ONNX graph is exported in fp32")
    if args.ema:
        raise CliError("--ema makes a .safetensors copy of a last checkpoint's EMA weights; export that copy to ONNX")
    classifier = FerClassifier.from_checkpoint(args.checkpoint)
    if args.classes:
        classifier = classifier.restricted_to(parse_class_list(args.classes))
    faces, what = reference_faces(args.data, classifier.img_size)
    result = export_onnx(classifier, args.out, faces, source_sha256=file_sha256(args.checkpoint))
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e6:.1f} MB ONNX (opset {OPSET}, dynamic batch, "
          f"{len(classifier.class_names)} classes); probabilities within {result.max_difference:.1g} of PyTorch's "
          f"on {result.faces_checked} {what}")
    return 0


# --- video ---------------------------------------------------------------------------------

def cmd_video(args) -> int:
    import contextlib
    import signal

    from .runtime import load_classifier
    from .video import analyze_video, read_video_info
    from .video_jobs import StatusReporter

    signal.signal(signal.SIGTERM, _interrupted)   # a stop request: partial outputs removed, as on Ctrl-C
    reporter = StatusReporter(args.status) if args.status else None
    with reporter.running() if reporter else contextlib.nullcontext():
        read_video_info(args.input)   # a bad file fails here, before the model loads
        _limit_threads(args.threads)
        classifier = load_classifier(_checkpoint(args.checkpoint), args.runtime, threads=args.threads)
        options = {"every": args.every, "start": args.start, "end": args.end, "smooth": args.smooth,
                   "max_frames": args.max_frames, "detect_side": args.detect_side, "refine": args.refine_landmarks,
                   **_detection(args)}
        with _frames_bar(args.quiet, reporter) as progress:
            summary = analyze_video(classifier, args.input, csv=args.csv, json=args.json, video=args.out,
                                    progress=progress, **options)
    print(f"{args.input}: {summary['frames_processed']} frames, {summary['frames_with_faces']} with faces, "
          f"{len(summary['tracks'])} person(s) ({summary['options']['detector']})")
    for t in summary["tracks"]:
        print(f"  person {t['track']}: {t['frames']} frames, {t['first_s']:.1f}-{t['last_s']:.1f} s, mostly "
              f"{t['dominant']} ({t['share'][t['dominant']]:.0%})")
    return 0


def _limit_threads(threads: int) -> None:
    """One thread by default: video interleaves OpenCV decoding, detection and encoding with small classifier
    batches, and PyTorch's intra-op threads then contend with OpenCV's (bench/video.py measured 631 ms a frame
    classifying at 2 threads against 7.8 ms at 1)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _frames_bar(quiet: bool, reporter):
    """A context giving ``progress(done, total)``: a tqdm bar (frames/s, ETA) unless ``quiet``, and the job's
    status file when there is one."""
    import contextlib

    from tqdm import tqdm

    @contextlib.contextmanager
    def bar():
        with tqdm(unit="frame", desc="video", disable=quiet, leave=False) as pbar:
            def progress(done: int, total: int) -> None:
                if total and pbar.total != total:
                    pbar.total = total
                pbar.update(done - pbar.n)
                if reporter:
                    reporter.progress(done, total)
            yield progress

    return bar()


def _add_video_parser(sub) -> None:
    from .video import DETECT_SIDE

    s = sub.add_parser("video", help="expressions over time, per person, in a video: a CSV row a face a frame, a "
                       "JSON summary per person, an annotated video")
    s.add_argument("input", help="a video file (MP4, MOV, WebM, AVI, ...)")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--out", metavar="OUT.webm", help="the annotated video: .webm (VP8; plays in browsers) or .mp4 "
                   "(MPEG-4 Part 2 'mp4v': desktop players only, browsers do not play it; OpenCV's build has no H.264)")
    s.add_argument("--csv", metavar="OUT.csv", help="one row a face a processed frame (frames without faces: a row "
                   "with an empty track)")
    s.add_argument("--json", metavar="OUT.json", help="the summary per person (track)")
    s.add_argument("--every", type=int, default=1, metavar="N", help="detect faces every N-th frame, the boxes "
                   "carried between (default 1)")
    s.add_argument("--start", type=float, metavar="S", help="first second to process")
    s.add_argument("--end", type=float, metavar="S", help="last second to process")
    s.add_argument("--smooth", type=float, metavar="SECONDS", help="smooth each person's probabilities "
                   "exponentially with this time constant (adds s_<class> and smoothed_label columns)")
    s.add_argument("--max-frames", type=int, metavar="N", help="stop with an error (no outputs) past N frames")
    s.add_argument("--detect-side", type=int, default=DETECT_SIDE, metavar="PX", help="detect on a copy at most "
                   f"this many px a side (default {DETECT_SIDE}; a 4K frame too)")
    s.add_argument("--refine-landmarks", action="store_true", help="measure a tilted face's landmarks again, as "
                   "photos are (two more detector runs a face a frame)")
    _add_detection_flags(s)
    _add_runtime_flag(s)
    s.add_argument("--threads", type=int, default=1, metavar="N", help="classifier threads (default 1: faster "
                   "than more for video on a CPU, see docs/VIDEO.md; 0: the runtime's default)")
    s.add_argument("--status", metavar="STATUS.json", help=argparse.SUPPRESS)   # a video job's status (video_jobs)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_video)


# --- serve ---------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    from .runtime import load_classifier

    classifier = load_classifier(_checkpoint(args.checkpoint), args.runtime)
    from .serve import serve   # FastAPI: imported only by this command

    print(f"serving {classifier.source} ({classifier.arch}, {classifier.runtime}) on http://{args.host}:{args.port} "
          f"(API docs at /docs)", file=sys.stderr)
    serve(classifier, host=args.host, port=args.port, face_model=args.face_model,
          max_body_bytes=int(args.max_body_mb * 2**20))
    return 0


def _checkpoint(path: str | None) -> Path:
    if path:
        return Path(path)
    found = default_checkpoint()
    if found is None:
        raise CliError("--checkpoint is required (no bundled checkpoint in checkpoints/)")
    return found


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS, TTA_MODES

    p = argparse.ArgumentParser(prog="python -m fer_core", description="FER Studio: facial expression recognition "
                                "on FER-2013 (train, evaluate, explain, predict).")
    p.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="images per split and class of a data set")
    s.add_argument("--data", required=True, help="FER-2013 folder (train/ test/), fer2013.csv, or class folders")
    s.add_argument("--classes", help="class subset, comma-separated")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train a model (resumable; SIGTERM stops after the batch and saves)")
    s.add_argument("--data", help="FER-2013 folder (train/ test/), fer2013.csv, or class folders")
    s.add_argument("--out", default="runs", help="runs folder (default: runs)")
    s.add_argument("--run-id", help="name of the run folder (default: time and model)")
    s.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe; other flags override it")
    s.add_argument("--config", help="a config.json to start from (flags override it)")
    s.add_argument("--resume", metavar="RUN", help="continue a run (id in --out, or its folder) from last")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_config_flags(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a checkpoint on a split and write a JSON report")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="PrivateTest", help="Training, PublicTest, PrivateTest, or test (both)")
    s.add_argument("--tta", nargs="?", const="flip+crops", default="none", choices=TTA_MODES,
                   help="test-time augmentation (bare --tta: flip+crops)")
    s.add_argument("--classes", help="score a subset of the model's classes: their images only, the model choosing "
                   "among them (e.g. a 7-class model on angry,disgust,fear,happy)")
    s.add_argument("--json", metavar="OUT", help="write the report here")
    _add_runtime_flag(s)
    s.set_defaults(func=cmd_evaluate)

    _add_calibrate_parser(sub)

    _add_photo_parsers(sub)
    _add_export_parser(sub)
    _add_ensemble_parser(sub)
    _add_audit_parser(sub)
    _add_exploration_parsers(sub)
    _add_serve_parser(sub)
    _add_video_parser(sub)
    return p


def _add_photo_parsers(sub) -> None:
    """``predict`` and ``explain``: faces found in photos, with the same detection flags and test-time views."""
    from .config import CAM_METHOD_NAMES, PHOTO_TTA, TTA_MODES

    s = sub.add_parser("predict", help="detect faces in photos and classify their expressions")
    s.add_argument("images", nargs="+", help="image files or folders")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--no-detect", action="store_true", help="treat each image as one aligned face crop")
    _add_detection_flags(s, photos=True)
    s.add_argument("--tta", nargs="?", const=PHOTO_TTA, default=PHOTO_TTA, choices=TTA_MODES,
                   help=f"average each face over test-time views of its crop (default {PHOTO_TTA}: it wins back "
                        "the 2 points re-framing a face costs, docs/REAL_PHOTOS.md; none: the single crop, faster)")
    s.add_argument("--json", action="store_true", help="print one JSON record an image")
    s.add_argument("--csv", metavar="OUT", help="write one CSV row a face")
    _add_runtime_flag(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("explain", help="class-activation map of a face as a PNG")
    s.add_argument("image")
    s.add_argument("--checkpoint", help="default: the bundled checkpoint")
    s.add_argument("--method", default="gradcam", choices=CAM_METHOD_NAMES)
    s.add_argument("--target", help="class to explain (default: the predicted one)")
    s.add_argument("--tta", nargs="?", const=PHOTO_TTA, default=PHOTO_TTA, choices=TTA_MODES,
                   help=f"the test-time views the prediction averages over (default {PHOTO_TTA}, as predict's: the "
                   "class explained is the one predict gives; the map is of the single view)")
    s.add_argument("--face", type=int, default=0, help="which detected face (0: the largest)")
    s.add_argument("--no-detect", action="store_true", help="treat the image as one aligned face crop")
    _add_detection_flags(s, photos=True)
    s.add_argument("--out", required=True, help="output PNG")
    s.set_defaults(func=cmd_explain)


def _add_export_parser(sub) -> None:
    s = sub.add_parser("export", help="a checkpoint as ONNX (OUT.onnx, checked against PyTorch) or a copy of its "
                       "model weights (OUT.safetensors, optionally fp16) for shipping")
    s.add_argument("checkpoint")
    s.add_argument("out", help="OUT.onnx: an ONNX graph; OUT.safetensors: the weights")
    s.add_argument("--half", action="store_true", help="store floating-point weights as fp16 (.safetensors only)")
    s.add_argument("--classes", help="an ONNX model choosing among these classes only, comma-separated")
    s.add_argument("--data", help="faces to check the ONNX graph on (default: FER-2013 where found, else synthetic)")
    s.add_argument("--ema", action="store_true",
                   help="copy the EMA weights of a run's last checkpoint (those its validation figures and best come "
                        "from) rather than the raw weights training goes on from (.safetensors only)")
    s.set_defaults(func=cmd_export)


def _add_audit_parser(sub) -> None:
    from .audit import FILTER_METHODS
    from .config import TTA_MODES

    s = sub.add_parser("audit", help="suspect labels of a test split: the images whose label the model contradicts "
                       "most confidently (cleanlab's confident learning), as a CSV, most suspect first")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--data", help="the data set (not needed with --report)")
    s.add_argument("--split", help="PublicTest, PrivateTest, test, ...; Training only with cross-validated "
                   "probabilities")
    s.add_argument("--report", metavar="R.json", help="use this evaluate --json report's probabilities instead of "
                   "evaluating the checkpoint")
    s.add_argument("--cross-validated", action="store_true", help="the --report's probabilities are out-of-fold "
                   "(each image scored by a model that did not train on it): a training split may be audited")
    s.add_argument("--filter", default=FILTER_METHODS[0], choices=FILTER_METHODS,
                   help=f"cleanlab's confident-learning filter (default {FILTER_METHODS[0]})")
    s.add_argument("--tta", nargs="?", const="flip+crops", default="none", choices=TTA_MODES,
                   help="test-time augmentation when evaluating here")
    s.add_argument("--csv", required=True, metavar="OUT", help="write the suspect labels here")
    _add_runtime_flag(s)
    s.set_defaults(func=cmd_audit)


def _add_exploration_parsers(sub) -> None:
    from .config import TTA_MODES
    from .embedding import PROJECTIONS

    s = sub.add_parser("embed", help="a split's penultimate-layer features projected to 2-D (t-SNE), cached beside "
                       "the checkpoint as <stem>.<split>.embedding.json for the Metrics page")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the bundled one)")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="PrivateTest")
    s.add_argument("--method", default=PROJECTIONS[0], choices=PROJECTIONS,
                   help="tsne (scikit-learn, default) or umap (needs umap-learn)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("slices", help="accuracy and per-class recall by brightness, contrast, sharpness (and head "
                       "roll) in quantile bins, as <stem>.<split>.slices.json for the Metrics page")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="PrivateTest")
    s.add_argument("--report", metavar="R.json", help="the predictions to slice (default: the saved "
                   "<stem>.<split>.json beside the checkpoint, else evaluated here)")
    s.add_argument("--bins", type=int, default=4, help="quantile bins a property (default 4)")
    s.add_argument("--roll", action="store_true", help="also head roll, from YuNet's landmarks on the upscaled "
                   "faces (once per data set, then cached)")
    s.add_argument("--face-model", metavar="PATH", help="the YuNet model file (as predict's)")
    s.add_argument("--tta", nargs="?", const="flip+crops", default="none", choices=TTA_MODES,
                   help="test-time augmentation when evaluating here")
    s.add_argument("--json", metavar="OUT", help="write the slices here (default: beside the checkpoint)")
    _add_runtime_flag(s)
    s.set_defaults(func=cmd_slices)


def _add_ensemble_parser(sub) -> None:
    from .metrics import SCORES   # NumPy only

    s = sub.add_parser("ensemble", help="several checkpoints as one model (OUT.safetensors names them: keep them "
                       "together); usable wherever a checkpoint is")
    s.add_argument("out", help="the ensemble file to write (OUT.safetensors)")
    s.add_argument("members", nargs="+", help="member checkpoints (.safetensors), sharing class names")
    s.add_argument("--classes", help="build it over these classes, comma-separated, which every member knows (e.g. "
                   "a 4-class and a 7-class model on angry,disgust,fear,happy); default: the members' shared ones")
    s.add_argument("--weights", type=float, nargs="+", metavar="W", help="one weight a member (default: equal)")
    s.add_argument("--weights-from", metavar="SPLIT", help="choose the weights on this split (PublicTest)")
    s.add_argument("--metric", choices=list(SCORES), default="accuracy",
                   help="what --weights-from maximises (default: accuracy)")
    s.add_argument("--data", help="the data set of --weights-from's split")
    s.set_defaults(func=cmd_ensemble)


def _add_calibrate_parser(sub) -> None:
    from .config import TTA_MODES

    s = sub.add_parser("calibrate", help="fit temperature scaling (vector scaling where it pays) on the selection "
                       "split and store it beside the checkpoint: predict, evaluate, the dashboard and the API then "
                       "report calibrated probabilities")
    s.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the bundled one)")
    s.add_argument("--data", help="the data set to evaluate --split on")
    s.add_argument("--split", default="PublicTest", help="the split to fit on (default PublicTest: the selection "
                   "split; never the one you report on)")
    s.add_argument("--tta", default="none", choices=TTA_MODES, help="the TTA mode to fit for (each has its own)")
    s.add_argument("--report", metavar="R.json", help="fit on a saved report's per-image probabilities instead "
                   "of evaluating (no data set needed)")
    s.add_argument("--temperature-only", action="store_true", help="do not try per-class vector scaling")
    s.add_argument("--remove", action="store_true", help="delete the checkpoint's calibration")
    s.set_defaults(func=cmd_calibrate)


def _add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="an HTTP API: POST /predict (images in multipart fields named file) answers "
                       "predict --json's records; GET /health, GET /model; docs at /docs")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--checkpoint", help="a .safetensors checkpoint or an exported .onnx (default: the bundled one)")
    s.add_argument("--max-body-mb", type=float, default=32, help="largest request body in MiB (default 32)")
    s.add_argument("--face-model", metavar="PATH", help="the YuNet model file (as predict's; requests choose the "
                   "detector, min_face and min_score)")
    _add_runtime_flag(s)
    s.set_defaults(func=cmd_serve)


def _add_runtime_flag(parser: argparse.ArgumentParser) -> None:
    from .config import RUNTIME_NAMES

    parser.add_argument("--runtime", default="auto", choices=RUNTIME_NAMES,
                        help="where the model runs: auto (ONNX Runtime where installed and it matches PyTorch; the "
                        "graph is exported once and cached), torch, or onnxruntime (default: auto)")


LIBRARY_ERRORS = {"fer_core.storage": "CheckpointError", "fer_core.data": "DataError",
                  "fer_core.models": "ModelError", "fer_core.predict": "ImageError", "fer_core.runs": "RunError",
                  "fer_core.training": "TrainingDiverged"}


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors reported in one line with exit status 2: bad input, not bugs. The library's own come from the
    modules the command has loaded (only those can have raised them; importing the rest costs seconds)."""
    own = tuple(getattr(sys.modules[m], name) for m, name in LIBRARY_ERRORS.items() if m in sys.modules)
    return (CliError, ValueError, FileNotFoundError, *own)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except expected_errors() as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything else still ends in one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"error: {_error_kind(e)}: {e}", file=sys.stderr)
        return 1


def _error_kind(e: BaseException) -> str:
    """The exception's type as a user can look it up: ``cv2.error``, not a bare ``error`` that reads as the
    line's own prefix twice."""
    kind, module = type(e).__name__, type(e).__module__
    return kind if module == "builtins" or kind[0].isupper() else f"{module.split('.')[0]}.{kind}"
