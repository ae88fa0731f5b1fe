"""What a run is made of before its first step: the data (splits, class weights) and the parts that train
(model, optimizer, EMA, augmentation and targets for the mixed and the clean epochs, teacher, AMP)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from timm.utils import ModelEmaV3

from ..config import GREY_MEAN, GREY_STD, TrainConfig
from ..data import FerDataset, FerSplit, load_dataset
from ..models import create_model, default_output_stride, stage_modules
from ..storage import model_metadata
from .augment import BatchAugment
from .guard import NonFiniteLossGuard
from .schedule import param_groups
from .targets import TargetMixer, class_weights
from .teacher import Teacher

log = logging.getLogger("fer_core.training")


@dataclass
class TrainData:
    dataset: FerDataset
    train: FerSplit
    val: FerSplit
    class_weights: torch.Tensor | None     # on the training device

    def info(self) -> dict:
        """What the run's ``data.json`` records (the Train page reads it)."""
        names = self.dataset.class_names
        weights = self.class_weights.tolist() if self.class_weights is not None else None
        return {"source": self.dataset.source, "class_names": list(names),
                "training_counts": dict(zip(names, self.train.class_counts(len(names)))),
                "training_images": len(self.train), "validation_split": self.dataset.validation_split,
                "validation_images": len(self.val),
                "class_weights": dict(zip(names, weights)) if weights is not None else None}


def prepare_data(cfg: TrainConfig, dataset: FerDataset | None, device: torch.device) -> TrainData:
    """The training and validation splits (a seeded subset of Training when asked) and the class weights."""
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
    weights = None
    if cfg.class_weight_power:
        counts = train_split.class_counts(dataset.num_classes)
        weights = class_weights(counts, cfg.class_weight_power, cfg.class_weight_cap).to(device)
    return TrainData(dataset, train_split, val_split, weights)


@dataclass
class Augmentation:
    """The augmentation and the targets of one kind of epoch."""

    augment: BatchAugment
    mixer: TargetMixer

    @classmethod
    def of(cls, cfg: TrainConfig, num_classes: int) -> Augmentation:
        return cls(BatchAugment(cfg), TargetMixer(cfg, num_classes))


@dataclass
class TrainingParts:
    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: ModelEmaV3 | None
    guard: NonFiniteLossGuard
    mixed: Augmentation                     # the usual epochs
    clean: Augmentation                     # the last ``clean_epochs``: no mixup, cutmix or erasing
    teacher: Teacher | None
    device: torch.device
    amp_dtype: torch.dtype
    use_amp: bool
    scaler: torch.amp.GradScaler
    num_stages: int

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated and saved as ``best``: the EMA weights when the run keeps them."""
        return self.ema.module if self.ema is not None else self.model

    def augmentation(self, epoch: int) -> Augmentation:
        return self.clean if epoch >= self.cfg.epochs - self.cfg.clean_epochs else self.mixed

    def metadata(self, class_names, epoch: int, metrics: dict | None = None) -> dict[str, str]:
        cfg = self.cfg
        return model_metadata(cfg.model, class_names, cfg.img_size, GREY_MEAN, GREY_STD,
                              cfg.output_stride or default_output_stride(cfg.img_size), cfg.drop_rate,
                              cfg.to_dict(), epoch, metrics)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where ``cpu_bf16`` pays."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_mode(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast on?, its dtype): fp16 or bf16 on CUDA with ``amp``; bf16 on the CPU with ``cpu_bf16``."""
    if device.type == "cpu":
        if cfg.cpu_bf16 and not native_cpu_bf16():
            log.warning("--cpu-bf16: this CPU has no native bfloat16, so training will be slower, not faster")
        return cfg.cpu_bf16, torch.bfloat16
    use_amp = cfg.amp and device.type == "cuda"
    return use_amp, torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16


def build_parts(cfg: TrainConfig, data: TrainData, device: torch.device) -> TrainingParts:
    num_classes = data.dataset.num_classes
    model = create_model(cfg.model, num_classes=num_classes, pretrained=cfg.pretrained, weights_path=cfg.weights,
                         drop_rate=cfg.drop_rate, img_size=cfg.img_size, output_stride=cfg.output_stride,
                         drop_path_rate=cfg.drop_path_rate)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
    # the last clean_epochs fit the undistorted data (as YOLOX drops mosaic and mixup at the end)
    clean_cfg = dataclasses.replace(cfg, mixup_alpha=0.0, cutmix_alpha=0.0, erase_prob=0.0)
    teacher = Teacher(cfg.teacher, data.dataset.class_names, device) if cfg.teacher else None
    use_amp, amp_dtype = autocast_mode(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return TrainingParts(cfg, model, optimizer, ema, NonFiniteLossGuard(cfg.max_nonfinite, cfg.nonfinite_lr_cut),
                         Augmentation.of(cfg, num_classes), Augmentation.of(clean_cfg, num_classes), teacher,
                         device, amp_dtype, use_amp, scaler, len(stage_modules(model)))
