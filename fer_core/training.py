"""Training: config and presets, batched augmentation, the loop, resume, and multi-process DDP.

The data set lives in memory as one uint8 tensor; each batch is indexed, augmented as a batch
(one ``grid_sample`` for flips, rotations, scaling and shifts) and mixed, so no loader workers are
needed and the pipeline costs a few percent of a training step.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import f1_score
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.data.random_erasing import RandomErasing
from timm.utils import ModelEmaV3

from .config import PRESETS, TrainConfig  # noqa: F401 (re-exported)
from .checkpoint import EMA_PREFIX, FerClassifier, ema_weights, read_tensors, save_checkpoint, to_model_input
from .config import GREY_MEAN, GREY_STD
from .storage import CheckpointError, model_metadata, read_metadata
from .data import FerDataset, FerSplit, load_dataset
from .models import create_model, default_output_stride, stage_modules
from .runs import Run, RunStore

log = logging.getLogger("fer_core.training")



class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


class TrainingStopped(Exception):
    """A stop was requested (SIGTERM/SIGINT); the last checkpoint was saved."""


# --- data pipeline -------------------------------------------------------------------------

class BatchAugment:
    """Random flip, rotation, scale, shift, brightness/contrast and erasing on a uint8 batch."""

    def __init__(self, cfg: TrainConfig, mean: float = GREY_MEAN, std: float = GREY_STD):
        self.cfg, self.mean, self.std = cfg, mean, std
        self.erase = RandomErasing(cfg.erase_prob, mode="pixel", device="cpu") if cfg.erase_prob > 0 else None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, n, size = self.cfg, images.shape[0], self.cfg.img_size
        rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        x = images.unsqueeze(1).float().div_(255.0)
        angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
        scale = 1 + (rand(n) * 2 - 1) * cfg.scale_jitter
        flip = torch.where(rand(n) < cfg.flip_prob, -1.0, 1.0)
        shift = (rand(n, 2) * 2 - 1) * (2 * cfg.translate)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if cfg.brightness_contrast > 0:
            b = cfg.brightness_contrast
            contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * b
            brightness = (rand(n, 1, 1, 1) * 2 - 1) * b * 0.5
            mean = x.mean(dim=(2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean + brightness).clamp_(0, 1)
        x = (x - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x)
        return x.contiguous(memory_format=torch.channels_last)


class TargetMixer:
    """Mixup/CutMix (timm's) or, with both off, label-smoothed one-hot targets."""

    def __init__(self, cfg: TrainConfig, num_classes: int):
        self.num_classes, self.smoothing = num_classes, cfg.label_smoothing
        self.mixup = None
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.mixup_prob,
                               label_smoothing=cfg.label_smoothing, num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is not None:
            return self.mixup(x, y)
        return x, mixup_target(y, self.num_classes, smoothing=self.smoothing)


def class_weights(counts: list[int], power: float, cap: float) -> torch.Tensor:
    """Inverse-frequency weights to ``power``, normalised to a sample-weighted mean of 1, clipped to
    ``[1/cap, cap]`` so a rare class cannot blow the loss up."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    w = (n.sum() / (len(n) * n)) ** power
    w = w / ((w * n).sum() / n.sum())
    return w.clamp(1 / cap, cap).float()


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                     sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets, each class's term scaled by its weight; normalised by the
    total weight of the targets (as ``F.cross_entropy`` does with ``weight``). Or, with
    ``sample_weights`` instead, each sample's term scaled by its own weight."""
    logp = F.log_softmax(logits.float(), dim=1)
    if sample_weights is not None:
        if weights is not None:
            raise ValueError("give class weights or sample weights, not both")
        return -(sample_weights * (targets * logp).sum(1)).sum() / sample_weights.sum()
    if weights is None:
        return -(targets * logp).sum(1).mean()
    wt = targets * weights
    return -(wt * logp).sum() / wt.sum()


class Teacher:
    """A trained checkpoint whose probabilities over the student's classes, averaged over each image
    and its mirror, become part of the student's targets (knowledge distillation). It sees the
    student's augmented, mixed batch, so both are taught on the same view."""

    def __init__(self, path: str | Path, class_names, device: torch.device | str = "cpu"):
        try:
            self.classifier = FerClassifier.from_checkpoint(path, device).restricted_to(class_names)
        except CheckpointError as e:
            raise CheckpointError(f"teacher {path}: {e}") from None
        # restricted_to keeps the teacher's class order; the targets need the student's
        self.index = torch.tensor([self.classifier.class_names.index(c) for c in class_names], device=device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mean: float = GREY_MEAN, std: float = GREY_STD) -> torch.Tensor:
        """Probabilities (N, student classes) for a batch normalised with ``mean`` and ``std``."""
        clf = self.classifier
        x = x.float() * std + mean
        if x.shape[-1] != clf.img_size:
            x = F.interpolate(x, size=(clf.img_size, clf.img_size), mode="bilinear", align_corners=False)
        x = ((x - clf.mean) / clf.std).contiguous(memory_format=torch.channels_last)
        logits = clf.model(torch.cat([x, x.flip(3)])).float().index_select(1, self.index)
        probs = torch.softmax(logits, 1)
        return (probs[:len(x)] + probs[len(x):]) / 2


class NonFiniteLossGuard:
    """Skip steps whose loss or gradients are not finite, cut the learning rate each time, and stop
    with a clear error after ``max_in_a_row`` of them in a row."""

    def __init__(self, max_in_a_row: int = 5, lr_cut: float = 0.5):
        self.max_in_a_row, self.lr_cut = max_in_a_row, lr_cut
        self.in_a_row, self.total, self.lr_scale = 0, 0, 1.0

    def ok(self, finite: bool, where: str = "") -> bool:
        if finite:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        self.lr_scale *= self.lr_cut
        log.warning("non-finite loss %s: step skipped, learning rate scaled to %.3g of schedule (%d in a row)",
                    where, self.lr_scale, self.in_a_row)
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingDiverged(
                f"training diverged: {self.in_a_row} non-finite losses in a row {where}. Lower the learning "
                "rate or the class-weight cap, or turn AMP off.")
        return False

    def state(self) -> dict:
        return {"in_a_row": self.in_a_row, "total": self.total, "lr_scale": self.lr_scale}

    def load(self, state: dict) -> None:
        self.in_a_row, self.total, self.lr_scale = state["in_a_row"], state["total"], state["lr_scale"]


# --- optimisation ------------------------------------------------------------------------

def unfrozen_stage_count(cfg: TrainConfig, epoch: int, num_stages: int) -> int:
    """How many stages, counted from the head, train in ``epoch`` (0-based)."""
    if cfg.unfreeze_head_epochs <= 0 or epoch >= cfg.unfreeze_head_epochs and cfg.unfreeze_every <= 0:
        return num_stages
    if epoch < cfg.unfreeze_head_epochs:
        return 1
    return min(num_stages, 2 + (epoch - cfg.unfreeze_head_epochs) // cfg.unfreeze_every)


def apply_unfreezing(model: torch.nn.Module, count: int) -> list[str]:
    """Make the top ``count`` stages trainable and freeze the rest (their BatchNorm in eval mode)."""
    stages = stage_modules(model)
    for i, (_, module) in enumerate(stages):
        trainable = i >= len(stages) - count
        for p in module.parameters():
            p.requires_grad_(trainable)
    return [name for name, _ in stages[len(stages) - count:]]


def set_frozen_bn_eval(model: torch.nn.Module, count: int) -> None:
    stages = stage_modules(model)
    for _, module in stages[:len(stages) - count]:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two groups a stage (with and without weight decay); the head gets ``lr``, the backbone's top
    stage ``backbone_lr``, and each stage below ``layer_decay`` times the one above."""
    stages = stage_modules(model)
    backbone_lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
    groups = []
    for i, (name, module) in enumerate(stages):
        depth_from_top = len(stages) - 2 - i
        lr = cfg.lr if i == len(stages) - 1 else backbone_lr * cfg.layer_decay ** depth_from_top
        decay = [p for p in module.parameters() if p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.ndim <= 1]
        groups.append({"params": decay, "lr": lr, "base_lr": lr, "weight_decay": cfg.weight_decay, "stage": name})
        groups.append({"params": no_decay, "lr": lr, "base_lr": lr, "weight_decay": 0.0, "stage": name})
    return groups


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"optim.{idx}.{k}": torch.as_tensor(v) for idx, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


# --- validation ----------------------------------------------------------------------------

@torch.no_grad()
def validate(model: torch.nn.Module, split: FerSplit, cfg: TrainConfig, device: torch.device,
             batch_size: int = 256) -> dict:
    model.eval()
    losses, preds = [], []
    for i in range(0, len(split), batch_size):
        x = to_model_input(split.images[i:i + batch_size].to(device), cfg.img_size, GREY_MEAN, GREY_STD)
        y = split.labels[i:i + batch_size].to(device)
        logits = model(x).float()
        losses.append(F.cross_entropy(logits, y, reduction="sum").item())
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    true = split.labels.numpy()
    return {"val_loss": sum(losses) / len(split), "val_acc": float((pred == true).mean()),
            "val_macro_f1": float(f1_score(true, pred, average="macro", zero_division=0))}


# --- the loop ------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live: NCCL only reduces CUDA tensors

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any."""
        if not self.on:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # NCCL collectives and broadcast_object_list use the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = f"cuda:{local_rank}" if dist.get_backend() == "nccl" else "cpu"
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every batch."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        log.warning("received signal %d: stopping after this batch", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _setup_logging(run: Run | None) -> logging.Handler | None:
    logger = logging.getLogger("fer_core")
    logger.setLevel(logging.INFO)
    if run is None:
        return None
    handler = logging.FileHandler(run.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return handler


def train(config: TrainConfig | None = None, runs_root: str | Path = "runs", run_id: str | None = None,
          resume: str | Path | None = None, dataset: FerDataset | None = None, progress: bool = True,
          epochs: int | None = None, clean_epochs: int | None = None) -> Run:
    """Train a model and return its run. ``resume`` (a run id or folder) continues from ``last``;
    ``epochs`` then extends (or shortens) the run, the cosine schedule stretching to the new end, and
    ``clean_epochs`` resets how many of the last epochs train without mixup and erasing.

    Launched under ``torchrun`` it trains with DDP, one process a GPU (or CPU process with gloo).
    """
    dist_info = _init_distributed()
    store = RunStore(runs_root)
    run: Run | None = None
    if resume is not None:
        run = store.get(resume)
        config = TrainConfig.from_dict(run.read_config())
        changed = {k: v for k, v in (("epochs", epochs), ("clean_epochs", clean_epochs))
                   if v is not None and v != getattr(config, k)}
        if changed:
            config = dataclasses.replace(config, **changed)
            config.validate()
            if dist_info.main:
                run.write_json(run.config_path, config.to_dict())
    elif dist_info.main:
        config.validate()
        run = store.create(config.to_dict(), run_id)
    if dist_info.on and resume is None:
        box = [str(run.path) if run else None]
        dist.broadcast_object_list(box, src=0)
        run = Run(Path(box[0]))
    handler = _setup_logging(run if dist_info.main else None)
    try:
        if dist_info.main:
            run.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), error=None,
                              started=time.time())
        with _StopFlag() as stop:
            _train_loop(config, run, dist_info, stop, dataset, resume is not None, progress)
        if dist_info.main:
            run.update_status(state="finished", ended=time.time(), progress=None)
        if dist_info.on:  # the other processes return (and read the status) only once it is written
            dist.barrier()
    except TrainingStopped:
        if dist_info.main:
            run.update_status(state="stopped", ended=time.time())
        if dist_info.on:
            dist.barrier()
        log.info("stopped; resume with: python -m fer_core train --resume %s", run.path)
    except BaseException as e:
        if dist_info.main:
            run.update_status(state="failed", ended=time.time(), error=f"{type(e).__name__}: {e}")
        log.error("training failed: %s: %s", type(e).__name__, e)
        raise
    finally:
        if handler:
            logging.getLogger("fer_core").removeHandler(handler)
            handler.close()
        if dist_info.on and dist.is_initialized():
            dist.destroy_process_group()
    return run


def _train_loop(cfg: TrainConfig, run: Run, d: _Dist, stop: _StopFlag, dataset: FerDataset | None,
                resuming: bool, progress: bool) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)
    device = torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    if dataset is None:
        dataset = load_dataset(cfg.data, classes=cfg.classes, img_size=max(48, cfg.img_size), seed=cfg.seed)
    elif cfg.classes:
        dataset = dataset.subset(cfg.classes)
    train_split, val_split = dataset.splits["Training"], dataset.splits[dataset.validation_split]
    if cfg.max_train_images and cfg.max_train_images < len(train_split):
        pick = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(cfg.seed))
        pick = pick[:cfg.max_train_images].sort().values
        train_split = FerSplit(train_split.images[pick], train_split.labels[pick],
                               [train_split.ids[i] for i in pick.tolist()])
    num_classes = dataset.num_classes
    counts = train_split.class_counts(num_classes)
    weights = class_weights(counts, cfg.class_weight_power, cfg.class_weight_cap) if cfg.class_weight_power else None
    if d.main:
        log.info("data %s: %d training, %d validation (%s) images, classes %s", dataset.source, len(train_split),
                 len(val_split), dataset.validation_split, ", ".join(dataset.class_names))
        if weights is not None:
            log.info("class weights (power %.2f, cap %.1f): %s", cfg.class_weight_power, cfg.class_weight_cap,
                     ", ".join(f"{c}={w:.2f}" for c, w in zip(dataset.class_names, weights.tolist())))
    weights = weights.to(device) if weights is not None else None

    model = create_model(cfg.model, num_classes=num_classes, pretrained=cfg.pretrained, weights_path=cfg.weights,
                         drop_rate=cfg.drop_rate, img_size=cfg.img_size, output_stride=cfg.output_stride,
                         drop_path_rate=cfg.drop_path_rate)
    model.to(device).to(memory_format=torch.channels_last)
    output_stride = cfg.output_stride or default_output_stride(cfg.img_size)
    stages = stage_modules(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
    guard = NonFiniteLossGuard(cfg.max_nonfinite, cfg.nonfinite_lr_cut)
    augment, mixer = BatchAugment(cfg), TargetMixer(cfg, num_classes)
    # the last clean_epochs fit the undistorted data (as YOLOX drops mosaic and mixup at the end)
    clean_cfg = dataclasses.replace(cfg, mixup_alpha=0.0, cutmix_alpha=0.0, erase_prob=0.0)
    clean_augment, clean_mixer = BatchAugment(clean_cfg), TargetMixer(clean_cfg, num_classes)
    teacher = Teacher(cfg.teacher, dataset.class_names, device) if cfg.teacher else None
    if teacher is not None and d.main:
        log.info("distilling from %s (%s of the targets)", cfg.teacher, cfg.distill_weight)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    per_rank = len(train_split) // d.world
    steps_per_epoch = per_rank // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_split)} training images are fewer than one batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + d.rank)
    progress_state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": 0, "since_best": 0}
    partial = None  # running train loss/accuracy sums of an epoch stopped part-way

    if resuming and run.last_checkpoint.exists():
        meta = read_metadata(run.last_checkpoint)
        model_state, train_state = read_tensors(run.last_checkpoint)
        model.load_state_dict(model_state)
        _load_optimizer(optimizer, train_state, json.loads(meta["optimizer_groups"]))
        saved_ema = ema_weights(train_state)
        if ema is not None and saved_ema:
            ema.module.load_state_dict(saved_ema)
        progress_state = json.loads(meta["progress"])
        guard.load(progress_state.pop("guard"))
        partial = progress_state.pop("partial", None)
        if d.rank == 0:
            rng.set_state(train_state["rng"])
        else:  # only rank 0's generator is saved; the others must not all continue rank 0's stream
            rng.manual_seed(cfg.seed * 1000 + d.rank + 7919 * progress_state["step"])
        if d.main:
            run.truncate_metrics(progress_state["epoch"])
            log.info("resumed from %s at epoch %d batch %d", run.last_checkpoint, progress_state["epoch"] + 1,
                     progress_state["batch"])

    def metadata(epoch: int, metrics: dict | None) -> dict[str, str]:
        return model_metadata(cfg.model, dataset.class_names, cfg.img_size, GREY_MEAN, GREY_STD, output_stride,
                              cfg.drop_rate, cfg.to_dict(), epoch, metrics)

    def save_last(epoch: int, batch: int, partial: dict | None = None) -> None:
        tensors, groups = _optimizer_tensors(optimizer)
        tensors["rng"] = rng.get_state()
        if ema is not None:
            tensors.update({EMA_PREFIX + k: v for k, v in ema.module.state_dict().items()})
        meta = metadata(epoch, None)
        meta["optimizer_groups"] = json.dumps(groups)
        meta["progress"] = json.dumps({**progress_state, "epoch": epoch, "batch": batch, "guard": guard.state(),
                                       "partial": partial})
        save_checkpoint(run.last_checkpoint, model.state_dict(), meta, tensors)

    ddp_model, ddp_count = model, None
    start_epoch = progress_state["epoch"]
    for epoch in range(start_epoch, cfg.epochs):
        clean = epoch >= cfg.epochs - cfg.clean_epochs
        epoch_augment, epoch_mixer = (clean_augment, clean_mixer) if clean else (augment, mixer)
        if clean and epoch == cfg.epochs - cfg.clean_epochs and d.main:
            log.info("epoch %d on: no mixup, cutmix or random erasing (clean_epochs=%d)", epoch + 1, cfg.clean_epochs)
        count = unfrozen_stage_count(cfg, epoch, len(stages))
        unfrozen = apply_unfreezing(model, count)
        if d.on and count != ddp_count:  # DDP tracks the trainable set it was built with
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=True)
            ddp_count = count
        model.train()
        set_frozen_bn_eval(model, count)
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(cfg.seed + 7919 * epoch))
        shard = order[:per_rank * d.world][d.rank::d.world]
        first_batch = progress_state["batch"] if epoch == start_epoch else 0
        carried = partial if epoch == start_epoch and first_batch and partial else \
            {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        loss_sum, correct, seen = carried["loss_sum"], carried["correct"], carried["seen"]
        t0, last_status = time.time() - carried["seconds"], 0.0
        bar = None
        if progress and d.main:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=first_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       leave=False, dynamic_ncols=True)
        for b in range(first_batch, steps_per_epoch):
            step = epoch * steps_per_epoch + b
            factor = lr_factor(step, total_steps, warmup_steps, cfg.min_lr_ratio) * guard.lr_scale
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            idx = shard[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = epoch_augment(train_split.images[idx], rng).to(device, non_blocking=True)
            y = train_split.labels[idx].to(device)
            x, soft = epoch_mixer(x, y)
            class_w, sample_w = weights, None
            if teacher is not None:
                # the class weights follow the labels: weighting the teacher's probabilities class by class
                # would pull every face towards the rare classes
                sample_w = (soft * weights).sum(1) if weights is not None else None
                soft, class_w = (1 - cfg.distill_weight) * soft + cfg.distill_weight * teacher(x), None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = ddp_model(x)
            loss = soft_target_loss(logits, soft, class_w, sample_w)
            if not guard.ok(not d.any(not torch.isfinite(loss).item()), f"at epoch {epoch + 1} batch {b + 1}"):
                optimizer.zero_grad(set_to_none=True)
            else:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                trainable = [p for p in model.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                if guard.ok(bool(torch.isfinite(norm)) or scaler.is_enabled(), f"(gradients) at epoch {epoch + 1}"):
                    scaler.step(optimizer)
                    scaler.update()
                    if ema is not None:
                        ema.update(model, step=step)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
            if d.main and time.time() - last_status > 2:
                last_status = time.time()
                run.update_status(state="running", progress={"epoch": epoch + 1, "epochs": cfg.epochs,
                                                             "batch": b + 1, "batches": steps_per_epoch})
            if d.any(stop.requested):
                progress_state["step"] = step + 1
                if d.main:
                    save_last(epoch, b + 1, {"loss_sum": loss_sum, "correct": correct, "seen": seen,
                                             "seconds": time.time() - t0})
                if bar is not None:
                    bar.close()
                raise TrainingStopped()
        if bar is not None:
            bar.close()
        seconds = time.time() - t0
        if d.main:
            eval_model = ema.module if ema is not None else model
            val = validate(eval_model, val_split, cfg, device)
            score = val["val_acc"] if cfg.select_metric == "accuracy" else val["val_macro_f1"]
            improved = progress_state["best"] is None or score > progress_state["best"]
            if improved:
                progress_state.update(best=score, best_epoch=epoch + 1, since_best=0)
            else:
                progress_state["since_best"] += 1
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   **val, "lr": {g["stage"]: g["lr"] for g in optimizer.param_groups},
                   "unfrozen_stages": len(unfrozen), "unfrozen": unfrozen, "clean": clean, "seconds": seconds,
                   "images_per_s": seen * d.world / max(seconds, 1e-9), "nonfinite_steps": guard.total,
                   "best": improved, "time": time.time()}
            run.append_metrics(row)
            log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f | %.0fs%s",
                     epoch + 1, cfg.epochs, row["train_loss"], row["train_acc"], val["val_loss"], val["val_acc"],
                     val["val_macro_f1"], seconds, " (best)" if improved else "")
            progress_state["step"] = (epoch + 1) * steps_per_epoch
            if improved:
                save_checkpoint(run.best_checkpoint, eval_model.state_dict(), metadata(epoch + 1, val))
            save_last(epoch + 1, 0)
        progress_state["batch"] = 0
        stop_early = cfg.early_stop_patience > 0 and progress_state["since_best"] >= cfg.early_stop_patience
        if d.any(stop_early):
            log.info("early stop: no improvement for %d epochs", cfg.early_stop_patience)
            break
        if d.on:
            dist.barrier()
