"""The training recipe: set-up, resume, then per epoch ``train_one_epoch``, ``validate``, select and save.

The data set lives in memory as one uint8 tensor; each batch is indexed, augmented as a batch and mixed,
so no loader workers are needed. One process owns a run folder at a time (``Run.lock``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..checkpoint import save_checkpoint, to_model_input
from ..config import GREY_MEAN, GREY_STD, SELECT_KEYS, TrainConfig
from ..data import FerDataset, FerSplit
from ..metrics import macro_f1
from ..models import stage_modules
from ..runs import Run, RunStore
from .distributed import DistContext, init_distributed, shutdown_distributed
from .schedule import StepSchedule, apply_unfreezing, set_frozen_bn_eval, unfrozen_stage_count
from .setup import TrainData, TrainingParts, build_parts, prepare_data
from .state import EpochTotals, TrainState, load_last, save_last
from .targets import soft_target_loss
from .teacher import Teacher

log = logging.getLogger("fer_core.training")


class TrainingStopped(Exception):
    """A stop was requested (SIGTERM/SIGINT); the last checkpoint was saved."""


class StopFlag:
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


# --- the entry point -------------------------------------------------------------------------

def train(config: TrainConfig | None = None, runs_root: str | Path = "runs", run_id: str | None = None,
          resume: str | Path | None = None, dataset: FerDataset | None = None, progress: bool = True,
          epochs: int | None = None, clean_epochs: int | None = None) -> Run:
    """Train a model and return its run. ``resume`` (a run id or folder) continues from ``last``;
    ``epochs`` then extends (or shortens) the run, the cosine schedule stretching to the new end, and
    ``clean_epochs`` resets how many of the last epochs train without mixup and erasing.

    Launched under ``torchrun`` it trains with DDP, one process a GPU (or CPU process with gloo). A run
    folder already being trained by another process is refused (``RunError``) before anything is written.
    """
    d = init_distributed()
    try:
        with ExitStack() as owned:
            run = _open_run(RunStore(runs_root), config, run_id, resume, d, owned)
            config = _run_config(run, config, resume, d, epochs=epochs, clean_epochs=clean_epochs)
            with _logging_to(run if d.main else None):
                _train_and_record(config, run, d, dataset, resume is not None, progress)
        return run
    finally:
        shutdown_distributed(d)


def _open_run(store: RunStore, config: TrainConfig | None, run_id: str | None, resume, d: DistContext,
              owned: ExitStack) -> Run:
    """The run folder (new, or the one to resume), locked by the main process for as long as ``owned``."""
    run = None
    if resume is not None:
        run = store.get(resume)
    elif d.main:
        config.validate()
        run = store.create(config.to_dict(), run_id)
    if d.on and resume is None:
        box = [str(run.path) if run else None]
        dist.broadcast_object_list(box, src=0)
        run = Run(Path(box[0]))
    if d.main:
        owned.enter_context(run.lock())
    return run


def _run_config(run: Run, config: TrainConfig | None, resume, d: DistContext, **changes) -> TrainConfig:
    """The config to train with: the given one, or on resume the run's own with ``changes`` (epochs, clean
    epochs) applied and written back."""
    if resume is None:
        return config
    config = TrainConfig.from_dict(run.read_config())
    changed = {k: v for k, v in changes.items() if v is not None and v != getattr(config, k)}
    if changed:
        config = dataclasses.replace(config, **changed)
        config.validate()
        if d.main:
            run.write_json(run.config_path, config.to_dict())
    return config


class _logging_to:
    """``fer_core``'s log records also go to the run's ``train.log`` (main process only)."""

    def __init__(self, run: Run | None):
        self.run, self.handler = run, None

    def __enter__(self):
        logging.getLogger("fer_core").setLevel(logging.INFO)
        if self.run is not None:
            self.handler = logging.FileHandler(self.run.log_path)
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logging.getLogger("fer_core").addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        if self.handler is not None:
            logging.getLogger("fer_core").removeHandler(self.handler)
            self.handler.close()


def _train_and_record(cfg: TrainConfig, run: Run, d: DistContext, dataset: FerDataset | None, resuming: bool,
                      progress: bool) -> None:
    """Run the recipe, keeping ``status.json`` true: running, then finished, stopped or failed."""
    try:
        if d.main:
            run.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), error=None,
                              started=time.time())
        with StopFlag() as stop:
            fit(cfg, run, d, stop, dataset, resuming, progress)
        if d.main:
            run.update_status(state="finished", ended=time.time(), progress=None)
        d.barrier()   # the other processes return (and read the status) only once it is written
    except TrainingStopped:
        if d.main:
            run.update_status(state="stopped", ended=time.time())
        d.barrier()
        log.info("stopped; resume with: python -m fer_core train --resume %s", run.path)
    except BaseException as e:
        if d.main:
            run.update_status(state="failed", ended=time.time(), error=f"{type(e).__name__}: {e}")
        log.error("training failed: %s: %s", type(e).__name__, e)
        raise


# --- the recipe ------------------------------------------------------------------------------

def fit(cfg: TrainConfig, run: Run, d: DistContext, stop: StopFlag, dataset: FerDataset | None, resuming: bool,
        progress: bool) -> None:
    """Set-up, resume, then per epoch: train, validate, select and save, stop early."""
    _seed(cfg, d)
    device = d.train_device()
    data = prepare_data(cfg, dataset, device)
    if d.main:
        _record_data(run, data, cfg)
    parts = build_parts(cfg, data, device)
    if parts.teacher is not None and d.main:
        log.info("distilling from %s (%s of the targets)", cfg.teacher, cfg.distill_weight)
    if cfg.distill_cached:
        _cache_teacher_targets(parts.teacher, data.train.images, run, stop, d)
    schedule = StepSchedule.of(cfg, len(data.train), d.world)
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + d.rank)
    state = resume_run(run, parts, rng, d) if resuming else TrainState()
    for epoch in range(state.epoch, cfg.epochs):
        totals = train_one_epoch(parts, data, schedule, state, epoch, rng, stop, d, run, progress)
        if d.main:
            _end_epoch(run, parts, data, schedule, state, epoch, totals, rng, d.world)
        state.batch, state.partial = 0, None
        stop_early = cfg.early_stop_patience > 0 and state.since_best >= cfg.early_stop_patience
        if d.any(stop_early):
            log.info("early stop: no improvement for %d epochs", cfg.early_stop_patience)
            break
        d.barrier()


def _cache_teacher_targets(teacher: Teacher, images: torch.Tensor, run: Run, stop: StopFlag, d: DistContext) -> None:
    """The teacher's table of targets, computed (or read back) by the main process alone and handed to the
    others: one teacher pass for the run, not one a process. A stop during the pass stops every process before
    any step; the resume starts the run from its beginning."""
    whole = not d.main or teacher.cache_targets(images, run.teacher_targets_path, lambda: stop.requested)
    if d.any(not whole):
        raise TrainingStopped()
    if d.on:
        teacher.table = d.from_main(teacher.table if d.main else torch.empty(len(images), len(teacher.index)))


def _seed(cfg: TrainConfig, d: DistContext) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)


def _record_data(run: Run, data: TrainData, cfg: TrainConfig) -> None:
    """Log what the run trains on, and write it as data (``data.json``) for the views."""
    info = data.info()
    log.info("data %s: %d training, %d validation (%s) images, classes %s", info["source"], info["training_images"],
             info["validation_images"], info["validation_split"], ", ".join(info["class_names"]))
    if info["class_weights"]:
        log.info("class weights (power %.2f, cap %.1f): %s", cfg.class_weight_power, cfg.class_weight_cap,
                 ", ".join(f"{c}={w:.2f}" for c, w in info["class_weights"].items()))
    run.write_json(run.data_path, info)


def resume_run(run: Run, parts: TrainingParts, rng: torch.Generator, d: DistContext) -> TrainState:
    """Continue from ``last``: weights, optimizer, EMA, generator and progress. Metrics rows beyond what
    ``last`` holds (a kill between an epoch's row and its checkpoint) are dropped, and the temporary files
    of a killed writer removed."""
    state = TrainState()
    if run.last_checkpoint.exists():
        # only rank 0's generator is saved; the others must not all continue rank 0's stream
        state = load_last(run.last_checkpoint, parts.model, parts.optimizer, parts.ema, rng if d.rank == 0 else None)
        if d.rank:
            rng.manual_seed(parts.cfg.seed * 1000 + d.rank + 7919 * state.step)
        parts.guard.load(state.guard)
    if d.main:
        run.remove_stale_temporaries()
        run.truncate_metrics(state.epoch)
        log.info("resumed from %s at epoch %d batch %d", run.last_checkpoint if state.epoch or state.batch
                 else "the start (no last checkpoint)", state.epoch + 1, state.batch)
    return state


def train_one_epoch(parts: TrainingParts, data: TrainData, schedule: StepSchedule, state: TrainState, epoch: int,
                    rng: torch.Generator, stop: StopFlag, d: DistContext, run: Run, progress: bool) -> EpochTotals:
    """One pass over this process's shard of the training split (from ``state.batch`` when resuming mid-epoch).
    A stop request saves ``last`` after the current batch and raises ``TrainingStopped``."""
    cfg = parts.cfg
    ddp_model = _prepare_epoch(parts, epoch, d)
    shard = _epoch_shard(cfg, epoch, len(data.train), d)
    first = state.batch if epoch == state.epoch else 0
    totals = state.partial if first and state.partial else EpochTotals()
    started = time.time() - totals.seconds
    bar = _progress_bar(schedule, first, epoch, cfg.epochs) if progress and d.main else None
    last_status = 0.0
    for b in range(first, schedule.steps_per_epoch):
        step = epoch * schedule.steps_per_epoch + b
        schedule.set_lr(parts.optimizer, step, parts.guard.lr_scale)
        idx = shard[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        train_step(parts, ddp_model, data, idx, epoch, b, step, rng, totals, d)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{totals.loss:.3f}", acc=f"{totals.accuracy:.3f}")
        if d.main and time.time() - last_status > 2:
            last_status = time.time()
            run.update_status(state="running", pid=os.getpid(), progress={
                "epoch": epoch + 1, "epochs": cfg.epochs, "batch": b + 1, "batches": schedule.steps_per_epoch})
        if d.any(stop.requested):
            totals.seconds = time.time() - started
            _stop_mid_epoch(parts, data, state, epoch, b + 1, step + 1, totals, rng, run, d, bar)
    if bar is not None:
        bar.close()
    totals.seconds = time.time() - started
    return totals


def _prepare_epoch(parts: TrainingParts, epoch: int, d: DistContext) -> torch.nn.Module:
    """Unfreeze this epoch's stages, set train mode (frozen BatchNorm in eval), and wrap in DDP when distributed;
    the module to call forward on."""
    cfg, model = parts.cfg, parts.model
    if cfg.clean_epochs and epoch == cfg.epochs - cfg.clean_epochs and d.main:
        log.info("epoch %d on: no mixup, cutmix or random erasing (clean_epochs=%d)", epoch + 1, cfg.clean_epochs)
    count = unfrozen_stage_count(cfg, epoch, parts.num_stages)
    apply_unfreezing(model, count)
    model.train()
    set_frozen_bn_eval(model, count)
    if not d.on:
        return model
    # DDP tracks the trainable set it was built with: a new wrapper each epoch (cheap next to an epoch)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[parts.device] if parts.device.type == "cuda" else None, broadcast_buffers=True)


def _epoch_shard(cfg: TrainConfig, epoch: int, n: int, d: DistContext) -> torch.Tensor:
    """This process's image order for ``epoch``: one seeded permutation a epoch, dealt out across processes."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7919 * epoch))
    per_rank = n // d.world
    return order[:per_rank * d.world][d.rank::d.world]


def _progress_bar(schedule: StepSchedule, first: int, epoch: int, epochs: int):
    from tqdm import tqdm

    return tqdm(total=schedule.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                dynamic_ncols=True)


def train_step(parts: TrainingParts, ddp_model: torch.nn.Module, data: TrainData, idx: torch.Tensor, epoch: int,
               batch: int, step: int, rng: torch.Generator, totals: EpochTotals, d: DistContext) -> None:
    """Augment, mix, forward, loss, and (when the loss and gradients are finite) one optimizer step."""
    cfg, device, where = parts.cfg, parts.device, f"at epoch {epoch + 1} batch {batch + 1}"
    aug = parts.augmentation(epoch)
    x = aug.augment(data.train.images[idx], rng).to(device, non_blocking=True)
    y = data.train.labels[idx].to(device)
    teacher = parts.teacher
    x, soft, taught = aug.mixer(x, y, teacher.cached(idx) if teacher is not None else None)
    class_w, sample_w = data.class_weights, None
    if teacher is not None:
        soft, sample_w = teacher.soft_targets(x, soft, data.class_weights, cfg.distill_weight, taught)
        class_w = None
    with torch.autocast(device.type, dtype=parts.amp_dtype, enabled=parts.use_amp):
        logits = ddp_model(x)
    logits = logits.float()   # the loss in full precision, whatever autocast computed the logits in
    loss = soft_target_loss(logits, soft, class_w, sample_w)
    parts.optimizer.zero_grad(set_to_none=True)
    if not parts.guard.ok(not d.any(not torch.isfinite(loss).item()), where):
        return
    parts.scaler.scale(loss).backward()
    parts.scaler.unscale_(parts.optimizer)
    trainable = [p for p in parts.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    # with a GradScaler, an overflow is the scaler's to skip (and it lowers its scale)
    if parts.guard.ok(bool(torch.isfinite(norm)) or parts.scaler.is_enabled(), f"(gradients) {where}"):
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        if parts.ema is not None:
            parts.ema.update(parts.model, step=step)
    totals.add(loss.item(), (logits.argmax(1) == y).sum().item(), len(y))


def _stop_mid_epoch(parts: TrainingParts, data: TrainData, state: TrainState, epoch: int, batch: int, step: int,
                    totals: EpochTotals, rng: torch.Generator, run: Run, d: DistContext, bar) -> None:
    state.batch, state.step, state.partial, state.guard = batch, step, totals, parts.guard.state()
    if d.main:
        state.epoch = epoch
        save_last(run.last_checkpoint, parts.model, parts.optimizer, parts.ema, rng, state,
                  parts.metadata(data.dataset.class_names, epoch))
    if bar is not None:
        bar.close()
    raise TrainingStopped()


@torch.no_grad()
def validate(model: torch.nn.Module, split: FerSplit, cfg: TrainConfig, device: torch.device,
             batch_size: int = 256) -> dict:
    """Validation loss, accuracy and macro-F1 (over the classes the split holds) of ``model`` on ``split``."""
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
            "val_macro_f1": macro_f1(true, pred)}


def _end_epoch(run: Run, parts: TrainingParts, data: TrainData, schedule: StepSchedule, state: TrainState,
               epoch: int, totals: EpochTotals, rng: torch.Generator, world: int) -> None:
    """Validate, select by ``select_metric``, then write the epoch's row, ``best`` (when it improved) and ``last``.
    The row goes first: a kill before ``last`` is written leaves a row that resume drops."""
    cfg, names = parts.cfg, data.dataset.class_names
    val = validate(parts.eval_model, data.val, cfg, parts.device)
    improved = state.select(val[SELECT_KEYS[cfg.select_metric]], epoch + 1)
    row = _metrics_row(parts, epoch, totals, val, improved, world)
    run.append_metrics(row)
    log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f | %.0fs%s",
             epoch + 1, cfg.epochs, row["train_loss"], row["train_acc"], val["val_loss"], val["val_acc"],
             val["val_macro_f1"], totals.seconds, " (best)" if improved else "")
    if improved:
        save_checkpoint(run.best_checkpoint, parts.eval_model.state_dict(), parts.metadata(names, epoch + 1, val))
        run.update_status(best_epoch=epoch + 1, best_score=state.best, select_metric=cfg.select_metric)
    state.epoch, state.batch, state.step = epoch + 1, 0, (epoch + 1) * schedule.steps_per_epoch
    state.partial, state.guard = None, parts.guard.state()
    save_last(run.last_checkpoint, parts.model, parts.optimizer, parts.ema, rng, state,
              parts.metadata(names, epoch + 1))


def _metrics_row(parts: TrainingParts, epoch: int, totals: EpochTotals, val: dict, improved: bool,
                 world: int) -> dict:
    """One line of ``metrics.jsonl``: the epoch's training and validation figures, learning rate per stage,
    what was trainable, and ``best`` (this epoch's weights are in ``best.safetensors``)."""
    cfg = parts.cfg
    count = unfrozen_stage_count(cfg, epoch, parts.num_stages)
    unfrozen = [name for name, _ in stage_modules(parts.model)][-count:]
    return {"epoch": epoch + 1, "train_loss": totals.loss, "train_acc": totals.accuracy, **val,
            "lr": {g["stage"]: g["lr"] for g in parts.optimizer.param_groups},
            "unfrozen_stages": len(unfrozen), "unfrozen": unfrozen, "clean": epoch >= cfg.epochs - cfg.clean_epochs,
            "seconds": totals.seconds, "images_per_s": totals.seen * world / max(totals.seconds, 1e-9),
            "nonfinite_steps": parts.guard.total, "best": improved, "time": time.time()}
