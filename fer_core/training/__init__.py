"""Training, one concern a module (as timm spreads it over its packages):

- ``loop``: the recipe, ``train()``: set-up, resume, then per epoch ``train_one_epoch``, ``validate``, select
  and save; ``TrainingStopped`` and the stop flag.
- ``setup``: the data (splits, class weights) and the parts that train (model, optimizer, EMA, augmentation,
  teacher, AMP).
- ``state``: ``TrainState`` (the progress record) and the ``last`` checkpoint that carries it.
- ``augment``: ``BatchAugment``. ``targets``: ``TargetMixer``, ``class_weights``, ``soft_target_loss``.
- ``teacher``: ``Teacher`` (distillation). ``guard``: ``NonFiniteLossGuard``, ``TrainingDiverged``.
- ``schedule``: unfreezing, parameter groups, the learning-rate schedule. ``distributed``: DDP under torchrun.

``from fer_core.training import train, TrainConfig`` keeps working: the config itself lives in
:mod:`fer_core.config` (torch-free), re-exported here for that import only.
"""
from ..config import PRESETS, TrainConfig  # noqa: F401  (the documented `from fer_core.training import ...`)
from .augment import BatchAugment
from .guard import NonFiniteLossGuard, TrainingDiverged
from .loop import TrainingStopped, train, validate
from .setup import native_cpu_bf16
from .schedule import apply_unfreezing, lr_factor, param_groups, set_frozen_bn_eval, unfrozen_stage_count
from .targets import TargetMixer, class_weights, soft_target_loss
from .teacher import Teacher

__all__ = ["PRESETS", "BatchAugment", "NonFiniteLossGuard", "TargetMixer", "Teacher", "TrainConfig",
           "TrainingDiverged", "TrainingStopped", "apply_unfreezing", "class_weights", "lr_factor", "native_cpu_bf16",
           "param_groups", "set_frozen_bn_eval", "soft_target_loss", "train", "unfrozen_stage_count", "validate"]
