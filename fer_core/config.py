"""Training configuration: ``TrainConfig`` and the named recipes (presets), and the names of the
models, test-time augmentations and CAM methods.

Plain data with no heavy imports, so that forms and command-line parsers can use it without
loading PyTorch, timm, scikit-learn or grad-cam.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODEL_NAMES = ("efficientnet_b0", "resnet18", "resnet50", "repvgg_a0")
ENSEMBLE_ARCH = "ensemble"                 # a checkpoint naming member checkpoints (fer_core.ensemble)
TTA_MODES = ("none", "flip", "flip+crops")                    # evaluation.tta_views
# Photos are classified over flip+crops by default: a detected face is re-framed from its landmarks, which
# costs about 2 points against FER-2013's own crops, and the ten views win that back on upright and tilted
# faces alike, for +23% of a one-face photo's time (docs/REAL_PHOTOS.md, "Test-time views").
PHOTO_TTA = "flip+crops"
# Grey-level normalisation of every model trained here: the mean of ImageNet's RGB statistics, which is what a
# pretrained RGB stem summed to one channel expects. Checkpoints store their own (``mean``/``std``).
GREY_MEAN, GREY_STD = 0.449, 0.226
# ``TrainConfig.select_metric`` -> the metrics-row key it selects the best epoch by (``runs.best_row`` reads the flag)
SELECT_KEYS = {"accuracy": "val_acc", "macro_f1": "val_macro_f1"}
# where a model runs (fer_core.runtime.load_classifier); auto: the fastest installed that matches PyTorch
RUNTIME_NAMES = ("auto", "torch", "onnxruntime")
CAM_METHOD_NAMES = ("gradcam", "gradcam++", "eigencam", "xgradcam", "layercam", "hirescam")   # explanation.CAM_METHODS
DETECTOR_NAMES = ("yunet", "haar")                            # detection.get_detector; the first is the default
DEFAULT_MIN_SCORE = 0.5          # YuNet's score threshold (docs/REAL_PHOTOS.md: recall and false positives)
FACE_MODEL_ENV = "FER_STUDIO_FACE_MODEL"                      # the YuNet model file, when not in the user cache


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` and in every checkpoint."""

    data: str = ""
    model: str = "efficientnet_b0"
    classes: list[str] | None = None          # a class subset, e.g. ["angry", "disgust", "fear", "happy"]
    img_size: int = 48                        # network input size (px)
    output_stride: int | None = None          # None: 16 below 112 px, else 32
    pretrained: bool = False                  # timm ImageNet weights (needs a network connection)
    weights: str | None = None                # local weights file instead
    epochs: int = 30
    batch_size: int = 32                      # per process
    lr: float = 1e-3                          # classifier head
    backbone_lr: float | None = None          # top backbone stage (None: same as lr)
    layer_decay: float = 1.0                  # lr multiplier per stage towards the input
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01                # cosine floor, as a fraction of each group's lr
    unfreeze_head_epochs: int = 0             # epochs training the head alone (0: all trainable at once)
    unfreeze_every: int = 1                   # then one more stage every N epochs (0: the rest at once)
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.1
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    flip_prob: float = 0.5
    rotate_deg: float = 10.0
    scale_jitter: float = 0.1
    translate: float = 0.1                    # fraction of the image size
    brightness_contrast: float = 0.2
    erase_prob: float = 0.0
    clean_epochs: int = 0                     # the last N epochs without mixup/cutmix and erasing
    class_weight_power: float = 0.5           # 0: no class weights, 1: inverse frequency
    class_weight_cap: float = 3.0             # weights are clipped to [1/cap, cap]
    ema_decay: float = 0.0                    # 0: no weight EMA
    grad_clip: float = 5.0
    early_stop_patience: int = 0              # epochs without improvement (0: off)
    select_metric: str = "accuracy"           # or "macro_f1", on the validation split
    max_nonfinite: int = 5                    # non-finite losses in a row before giving up
    nonfinite_lr_cut: float = 0.5
    seed: int = 0
    amp: bool = True                          # mixed precision on CUDA
    # bfloat16 autocast on the CPU: ResNet-18 trains 1.7x faster on a CPU with native bf16 (AVX512-BF16), but
    # EfficientNet-B0's depthwise convolutions run slower in it (docs/BENCHMARKS.md), so it is opt-in
    cpu_bf16: bool = False
    threads: int = 0                          # torch CPU threads (0: default)
    max_train_images: int = 0                 # a seeded random subset of Training (0: all)
    teacher: str | None = None                # a trained checkpoint to distil from (knowledge distillation)
    distill_weight: float = 0.5               # the teacher's share of the targets
    distill_cached: bool = False              # the teacher reads each training image once, not every batch
    preset: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrainConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "preset": name, **overrides})

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.batch_size % 2:
            raise ValueError("mixup/cutmix need an even batch size")
        if self.select_metric not in SELECT_KEYS:
            raise ValueError("select_metric must be accuracy or macro_f1")
        if self.class_weight_cap < 1:
            raise ValueError("class_weight_cap must be >= 1")
        if not 0 <= self.clean_epochs <= self.epochs:
            raise ValueError("clean_epochs must lie between 0 and epochs")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError("distill_weight must lie between 0 and 1")
        if self.distill_cached and not self.teacher:
            raise ValueError("distill_cached needs a teacher")


# The bundled model's recipe for the families without stochastic depth (ResNet, RepVGG): the baselines and ensemble
# members trained with the same budget
_DENSE_CNN_RECIPE = dict(img_size=64, epochs=65, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_epochs=2,
                         mixup_alpha=0.2, mixup_prob=0.5, label_smoothing=0.1, drop_rate=0.3, rotate_deg=10,
                         scale_jitter=0.1, translate=0.1, erase_prob=0.25, clean_epochs=15, class_weight_power=0.5,
                         class_weight_cap=3.0, ema_decay=0.999)

# Named recipes; a preset is data, chosen by name (``--preset``). Flags given with it override it.
PRESETS: dict[str, dict] = {
    # From random initialisation on a 2-core CPU (see docs/RESULTS.md): 64 px input, output
    # stride 16 (4x4 final map), all stages trainable from the start, light mixup; the last 15
    # epochs without mixup and erasing.
    "fer2013-effnet-b0": dict(model="efficientnet_b0", img_size=64, epochs=65, batch_size=64, lr=2e-3,
                              weight_decay=0.05, warmup_epochs=2, mixup_alpha=0.2, mixup_prob=0.5,
                              label_smoothing=0.1,
                              drop_rate=0.3, drop_path_rate=0.1, rotate_deg=10, scale_jitter=0.1,
                              translate=0.1, erase_prob=0.25, clean_epochs=15, class_weight_power=0.5,
                              class_weight_cap=3.0, ema_decay=0.999, unfreeze_head_epochs=0),
    # Fine-tuning ImageNet weights (online users, or --weights): head first, then stage by stage.
    "fer2013-effnet-b0-pretrained": dict(model="efficientnet_b0", pretrained=True, img_size=96, epochs=30,
                                         batch_size=64, lr=1e-3, backbone_lr=5e-4, layer_decay=0.8,
                                         unfreeze_head_epochs=1, unfreeze_every=1, mixup_alpha=0.2,
                                         label_smoothing=0.1, drop_rate=0.3, ema_decay=0.999),
    "fer2013-resnet18": dict(model="resnet18", **_DENSE_CNN_RECIPE),
    # A plain VGG-style network (3x3 convolutions, with 1x1 and identity branches while training), tried as an
    # ensemble member of another family; at 64 px from scratch it errs much as the two above do (docs/RESULTS.md)
    "fer2013-repvgg-a0": dict(model="repvgg_a0", **_DENSE_CNN_RECIPE),
    # A smoke test: a couple of minutes on a laptop CPU; it checks that training runs, not what it learns (the Train
    # page says so: PRESET_NOTES).
    "quick": dict(model="efficientnet_b0", img_size=48, epochs=2, batch_size=32, lr=2e-3,
                  max_train_images=2000, ema_decay=0.0),
}

# What each preset is for, in a sentence: the Train page shows it under the preset picker.
PRESET_NOTES: dict[str, str] = {
    "fer2013-effnet-b0": "The bundled model's recipe: EfficientNet-B0 from random initialisation, 64 px, 65 epochs "
                         "(2 hours on the 2-core development machine: docs/RESULTS.md).",
    "fer2013-effnet-b0-pretrained": "Fine-tunes ImageNet weights (downloaded, or a local file through --weights): "
                                    "96 px, the head first, then one stage at a time.",
    "fer2013-resnet18": "The ResNet-18 baseline with the bundled model's recipe.",
    "fer2013-repvgg-a0": "RepVGG-A0 (a plain VGG-style network) with the bundled model's recipe.",
    "quick": "A smoke test: 2 epochs of 2,000 training images at 48 px, to check that training works on this "
             "machine. Its model learns little.",
}
