"""Model factory: EfficientNet-B0 (default), ResNet-18/50 baselines and RepVGG-A0 from ``timm``.

Grey input: the stem takes one channel (``in_chans=1``). Pretrained RGB stems are adapted by
summing their three input filters (timm's ``adapt_input_conv``), which gives the same response to
a grey image as the RGB network gives to that image replicated three times, at a third of the cost.

Small input: a 48 px face through the usual total stride of 32 leaves a 2x2 map. Below 112 px the
factory sets ``output_stride=16``: the last stride-2 stage runs at stride 1, so the final map is
3x3 at 48 px (4x4 at 64 px) for about 10% more compute. Strides are removed rather than dilated
(timm's way): at these sizes the receptive field already spans the face, and dilated depthwise
convolutions run at about 60% of the speed on CPUs.

What the code knows of each family (its stages, its CAM layer) lives in one table, ``ARCHITECTURES``,
keyed by timm's model class; the output stride is reduced through the stages it lists. Adding a family
is one entry there (and its model names in ``config.MODEL_NAMES``).
"""
from __future__ import annotations

import logging
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.byobnet import ByobNet
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from torch import nn

from .config import MODEL_NAMES

log = logging.getLogger(__name__)

IN_CHANS = 1


class ModelError(ValueError):
    """A model name or weights file that cannot be used."""


def default_output_stride(img_size: int) -> int:
    return 16 if img_size < 112 else 32


def create_model(name: str = "efficientnet_b0", num_classes: int = 7, pretrained: bool = False,
                 weights_path: str | Path | None = None, drop_rate: float = 0.2, img_size: int = 48,
                 output_stride: int | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """Build a classifier for ``img_size`` grey faces.

    ``pretrained`` downloads timm's ImageNet weights (falling back to random initialisation with a
    warning when offline); ``weights_path`` loads a local file instead (safetensors, or a PyTorch
    state dict read with ``weights_only=True``), in timm's or torchvision's parameter naming.
    """
    if name not in MODEL_NAMES:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    output_stride = output_stride or default_output_stride(img_size)
    if output_stride not in (8, 16, 32):
        raise ModelError(f"output_stride must be 8, 16 or 32, not {output_stride}")
    kwargs = dict(num_classes=num_classes, in_chans=IN_CHANS, drop_rate=drop_rate)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained and weights_path is None:
        try:
            return _reduce_stride(_init_head(timm.create_model(name, pretrained=True, **kwargs)), output_stride)
        except Exception as e:  # offline, hub unreachable, or no cached weights
            warnings.warn(f"could not download pretrained weights for {name} ({type(e).__name__}: {e}); "
                          "training from random initialisation. Pass --weights PATH to use a local file.",
                          stacklevel=2)
    model = _init_head(timm.create_model(name, pretrained=False, **kwargs))
    if weights_path is not None:
        load_backbone_weights(model, weights_path)
    return _reduce_stride(model, output_stride)


def fused_for_inference(model: nn.Module) -> nn.Module:
    """The model with its training-time branches folded into single convolutions, in place (RepVGG's 3x3, 1x1 and
    identity branches into one 3x3 each: the same outputs for less compute). A no-op for families without them.
    Its state dict no longer matches a checkpoint's, so only models built to answer, never to train, are fused."""
    from timm.utils import reparameterize_model

    return reparameterize_model(model, inplace=True)


def _init_head(model: nn.Module) -> nn.Module:
    """A new classifier starts near zero, so the first loss is about ln(num_classes). timm's
    EfficientNet head init (uniform in +-1/sqrt(num_classes)) suits 1,000 classes; for 7 it gives
    logits large enough to start training at a loss of 3.4 instead of 1.95."""
    head = model.get_classifier()
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return model


def _reduce_stride(model: nn.Module, output_stride: int) -> nn.Module:
    """Run the last log2(32 / output_stride) downsampling stages at stride 1.

    A downsampling stage is one of the model's stages (after the stem) with a convolution of stride 2:
    EfficientNet's first block of a stage, ResNet's first block and its shortcut."""
    body = stage_modules(model)[1:-1]
    down = [convs for convs in ([m for m in stage.modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
                                for _, stage in body) if convs]
    for convs in down[len(down) - {32: 0, 16: 1, 8: 2}[output_stride]:]:
        for conv in convs:
            conv.stride = (1, 1)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch_file(path)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own error type, or an OSError, says little without the file name
        raise ModelError(f"{path} is not a readable safetensors file ({textwrap.shorten(str(e), 100)}); "
                         "it may be truncated or not a safetensors file at all") from None


def _read_torch_file(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ModelError(f"could not read {path}: {e.strerror or e}") from None
    except Exception:
        # torch's message ends in advice to retry with weights_only=False, which would run whatever code the
        # file holds: it is not passed on
        raise ModelError(f"{path} is not a plain tensor file PyTorch can read safely: it holds other Python objects "
                         "than tensors, or is not a PyTorch file. Save weights with torch.save(model.state_dict(), "
                         "path) or as .safetensors") from None


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load ImageNet-style weights into ``model``, adapting the stem and skipping a mismatched head.

    Names are matched directly (timm checkpoints); otherwise (torchvision checkpoints) the two
    parameter lists are paired in order, which holds for the architectures in ``MODEL_NAMES``.
    """
    source = {k: v for k, v in read_state_dict(path).items() if not k.endswith("num_batches_tracked")}
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if set(source) != set(target):
        if len(source) != len(target):
            raise ModelError(f"{path}: {len(source)} tensors do not map onto this model's {len(target)}")
        source = dict(zip(target, source.values()))
    head = _classifier_keys(model)
    loaded, skipped = {}, []
    for key, value in source.items():
        want = target[key].shape
        if value.shape == want:
            loaded[key] = value
        elif value.ndim == 4 and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
            loaded[key] = timm.models.adapt_input_conv(want[1], value)  # RGB stem -> grey
        elif key in head:
            skipped.append(key)
        else:
            raise ModelError(f"{path}: tensor for {key} has shape {tuple(value.shape)}, model needs {tuple(want)}")
    model.load_state_dict(loaded, strict=False)
    log.info("loaded %d tensors from %s; new classifier head (%s)", len(loaded), path, ", ".join(skipped) or "kept")


def _classifier_keys(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in head.parameters()}


@dataclass(frozen=True)
class Architecture:
    """What FER Studio needs to know of one family of timm models; ``ARCHITECTURES`` maps its class to it.

    ``stages`` cuts a model into named stages from input to output, the classifier head last: gradual
    unfreezing, per-stage learning rates and the output stride (its downsampling stages) all work on it.
    ``cam_layer`` is the layer class-activation maps are computed on (the last convolutional stage).
    """

    stages: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    cam_layer: Callable[[nn.Module], nn.Module]


def _efficientnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("stem", nn.ModuleList([m.conv_stem, m.bn1])), *[(f"block{i}", b) for i, b in enumerate(m.blocks)],
            ("conv_head", nn.ModuleList([m.conv_head, m.bn2])), ("classifier", m.get_classifier())]


def _resnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("stem", nn.ModuleList([m.conv1, m.bn1])), ("layer1", m.layer1), ("layer2", m.layer2),
            ("layer3", m.layer3), ("layer4", m.layer4), ("classifier", m.get_classifier())]


def _byobnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("stem", m.stem), *[(f"stage{i}", s) for i, s in enumerate(m.stages)], ("final_conv", m.final_conv),
            ("classifier", m.get_classifier())]


def _byobnet_cam_layer(m: nn.Module) -> nn.Module:
    # RepVGG has no final 1x1 conv (an Identity): its last stage is the last convolutional layer
    return m.stages[-1] if isinstance(m.final_conv, nn.Identity) else m.final_conv


# One entry per family; the names of config.MODEL_NAMES are timm models of these classes.
ARCHITECTURES: dict[type[nn.Module], Architecture] = {
    EfficientNet: Architecture(_efficientnet_stages, cam_layer=lambda m: m.bn2),
    ResNet: Architecture(_resnet_stages, cam_layer=lambda m: m.layer4[-1]),
    ByobNet: Architecture(_byobnet_stages, cam_layer=_byobnet_cam_layer),
}


def architecture_of(model: nn.Module) -> Architecture:
    """The model's entry in ``ARCHITECTURES``, found by its class (or the nearest base class listed)."""
    for cls in type(model).__mro__:
        if cls in ARCHITECTURES:
            return ARCHITECTURES[cls]
    known = ", ".join(cls.__name__ for cls in ARCHITECTURES)
    raise ModelError(f"no architecture known for {type(model).__name__} (FER Studio knows {known})")


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model cut into named stages from input to output; the last one is the classifier head."""
    return architecture_of(model).stages(model)


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations class-activation maps are computed on (the last conv stage)."""
    return architecture_of(model).cam_layer(model)
