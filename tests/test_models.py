"""The model factory: shapes, output stride, offline fallback, local weights files, stage layout."""
from __future__ import annotations

import pathlib

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from fer_core import models
from fer_core.models import (ARCHITECTURES, MODEL_NAMES, Architecture, ModelError, architecture_of, cam_target_layer,
                             create_model, default_output_stride, fused_for_inference, stage_modules)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # forward passes only; faster, and nothing here needs gradients
        yield


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [48, 64])
def test_output_shape_for_grey_input(name, size):
    model = create_model(name, num_classes=5, img_size=size).eval()
    first_conv = next(m for m in stage_modules(model)[0][1].modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    out = model(torch.randn(3, 1, size, size))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("stride,side", [(32, 2), (16, 3), (8, 6)])
def test_output_stride_sets_final_map(name, stride, side):
    model = create_model(name, num_classes=7, img_size=48, output_stride=stride).eval()
    feats = model.forward_features(torch.randn(1, 1, 48, 48))
    assert feats.shape[-2:] == (side, side)
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 7)


def test_default_output_stride_below_112_px_is_16():
    assert default_output_stride(48) == 16 and default_output_stride(111) == 16
    assert default_output_stride(112) == 32 and default_output_stride(224) == 32
    feats = create_model("efficientnet_b0", img_size=64).eval().forward_features(torch.randn(1, 1, 64, 64))
    assert feats.shape[-2:] == (4, 4)


def test_unknown_model_and_bad_stride_raise_model_error():
    with pytest.raises(ModelError, match="unknown model 'vgg16'"):
        create_model("vgg16")
    with pytest.raises(ModelError, match="output_stride"):
        create_model("resnet18", output_stride=4)


def test_pretrained_offline_falls_back_to_random_init(monkeypatch):
    real = timm.create_model
    calls = []

    def fake_create_model(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        if pretrained:
            raise ConnectionError("hub unreachable (test)")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    with pytest.warns(UserWarning, match="could not download pretrained weights.*ConnectionError"):
        model = create_model("efficientnet_b0", num_classes=4, pretrained=True, img_size=48)
    assert calls == [True, False]
    model.eval()
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 4)
    # the fallback still gets the small-input stride
    assert model.forward_features(torch.randn(1, 1, 48, 48)).shape[-2:] == (3, 3)


def test_pretrained_is_not_attempted_with_a_weights_file(monkeypatch, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(timm.create_model("resnet18", num_classes=7, in_chans=1).state_dict(), str(path))
    real = timm.create_model

    def fake_create_model(name, pretrained=False, **kwargs):
        assert not pretrained, "a weights file must not trigger a download"
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    create_model("resnet18", pretrained=True, weights_path=path)


def test_torchvision_efficientnet_state_dict_maps_onto_timm(tmp_path):
    tv = torchvision.models.efficientnet_b0(weights=None)
    for m in tv.modules():  # non-trivial BatchNorm statistics, so a mis-pairing would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    sd = tv.state_dict()
    path = tmp_path / "tv_effb0.pth"
    torch.save(sd, path)
    model = create_model("efficientnet_b0", num_classes=7, weights_path=path, img_size=48)
    stem = sd["features.0.0.weight"]
    assert stem.shape[1] == 3 and model.conv_stem.weight.shape[1] == 1
    torch.testing.assert_close(model.conv_stem.weight, stem.sum(1, keepdim=True))
    torch.testing.assert_close(model.bn1.running_mean, sd["features.0.1.running_mean"])
    torch.testing.assert_close(model.blocks[3][1].conv_pw.weight, sd["features.4.1.block.0.0.weight"])
    torch.testing.assert_close(model.blocks[1][0].se.conv_reduce.weight, sd["features.2.0.block.2.fc1.weight"])
    torch.testing.assert_close(model.conv_head.weight, sd["features.8.0.weight"])
    torch.testing.assert_close(model.bn2.running_var, sd["features.8.1.running_var"])
    # the 1000-class ImageNet head does not fit 7 classes: a new head is kept
    assert model.classifier.weight.shape == (7, 1280)


def test_torchvision_resnet18_state_dict_loads_by_name(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "tv_r18.pt"
    torch.save(tv.state_dict(), path)
    model = create_model("resnet18", num_classes=3, weights_path=path)
    torch.testing.assert_close(model.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    torch.testing.assert_close(model.layer4[0].downsample[0].weight, tv.layer4[0].downsample[0].weight)
    assert model.fc.weight.shape == (3, 512)
    model.eval()
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 3)


def test_safetensors_and_wrapped_state_dicts_load(tmp_path):
    source = timm.create_model("resnet18", num_classes=7, in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model("resnet18", num_classes=7, weights_path=path)
    for k, v in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)

    # a training checkpoint: {"state_dict": {"module.<name>": tensor}} as DDP saves it
    wrapped = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "epoch": 3}, wrapped)
    model = create_model("resnet18", num_classes=7, weights_path=wrapped)
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


class _Payload:
    """Unpickling this would create a marker file: proof that arbitrary code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = timm.create_model("resnet18", num_classes=7, in_chans=1).state_dict()
    torch.save({**state, "payload": _Payload(marker)}, path)
    with pytest.raises(ModelError, match="not a plain tensor file PyTorch can read safely") as e:
        create_model("resnet18", weights_path=path)
    assert not marker.exists()
    # torch's own message advises weights_only=False, which would run the payload: it must not reach the user
    assert "weights_only" not in str(e.value) and str(path) in str(e.value)


def test_unreadable_weights_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a PyTorch file at all" * 10)
    with pytest.raises(ModelError, match="not a plain tensor file") as e:
        create_model("resnet18", weights_path=garbage)
    assert str(garbage) in str(e.value) and "weights_only" not in str(e.value)
    good = tmp_path / "good.safetensors"
    save_file(timm.create_model("resnet18", num_classes=7, in_chans=1).state_dict(), str(good))
    for name, data in (("corrupt", b"\xff" * 64), ("truncated", good.read_bytes()[:100_000])):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ModelError, match="not a readable safetensors file") as e:
            create_model("resnet18", weights_path=path)
        assert str(path) in str(e.value) and len(str(e.value)) < 400


def test_non_tensor_values_and_missing_file_are_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"conv1.weight": torch.zeros(1), "lr": 0.1}, path)
    with pytest.raises(ModelError, match="does not hold a state dict of tensors"):
        create_model("resnet18", weights_path=path)
    with pytest.raises(ModelError, match="not found"):
        create_model("resnet18", weights_path=tmp_path / "missing.pth")


def test_mismatched_weights_raise_model_error(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match="do not map onto"):
        create_model("efficientnet_b0", weights_path=path)
    # same names, but a backbone tensor of the wrong shape
    state = timm.create_model("resnet18", num_classes=7, in_chans=1).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(ModelError, match="layer2.0.conv1.weight"):
        create_model("resnet18", weights_path=bad)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_stage_modules_cover_every_parameter_once(name):
    model = create_model(name, num_classes=7)
    stages = stage_modules(model)
    assert stages[0][0] == "stem" and stages[-1][0] == "classifier"
    assert stages[-1][1] is model.get_classifier()
    seen: dict[int, int] = {}
    for _, module in stages:
        for p in module.parameters():
            seen[id(p)] = seen.get(id(p), 0) + 1
    params = {id(p) for p in model.parameters()}
    assert set(seen) == params
    assert all(n == 1 for n in seen.values())
    assert len(set(n for n, _ in stages)) == len(stages)


def test_architecture_comes_from_the_model_class_not_its_attributes():
    class LooksLikeEfficientNet(torch.nn.Module):   # has .blocks, as a ViT does, but is no EfficientNet
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    for ask in (stage_modules, cam_target_layer):
        with pytest.raises(ModelError, match="no architecture known for LooksLikeEfficientNet"):
            ask(LooksLikeEfficientNet())
    effnet = create_model("efficientnet_b0", num_classes=3)
    assert architecture_of(effnet) is ARCHITECTURES[type(effnet)]
    assert cam_target_layer(effnet) is effnet.bn2
    resnet = create_model("resnet50", num_classes=3)
    assert cam_target_layer(resnet) is resnet.layer4[-1]

    class Subclass(type(effnet)):   # a subclass finds its base class's entry
        pass

    effnet.__class__ = Subclass
    assert [n for n, _ in stage_modules(effnet)][:2] == ["stem", "block0"]


def test_a_new_family_is_one_table_entry(monkeypatch):
    """MobileNetV3 gets stages, a CAM layer and the small-input output stride from one entry."""
    from timm.models.mobilenetv3 import MobileNetV3

    def stages(m):
        blocks = [(f"block{i}", b) for i, b in enumerate(m.blocks)]
        return [("stem", torch.nn.ModuleList([m.conv_stem, m.bn1])), *blocks, ("conv_head", m.conv_head),
                ("classifier", m.get_classifier())]

    monkeypatch.setitem(ARCHITECTURES, MobileNetV3, Architecture(stages, cam_layer=lambda m: m.blocks[-1]))
    monkeypatch.setattr(models, "MODEL_NAMES", (*MODEL_NAMES, "mobilenetv3_small_050"))
    model = create_model("mobilenetv3_small_050", num_classes=4, img_size=48).eval()
    assert model.forward_features(torch.randn(1, 1, 48, 48)).shape[-2:] == (3, 3)   # output stride 16
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 4)
    assert [n for n, _ in stage_modules(model)][-2:] == ["conv_head", "classifier"]
    assert cam_target_layer(model) is model.blocks[-1]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fusing_for_inference_keeps_the_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, img_size=48)
    for m in model.modules():   # BN statistics away from the defaults, so a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        before = model(x)
        fused = fused_for_inference(model)
        after = fused(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules())
    if name == "repvgg_a0":   # one 3x3 convolution left in each of its 22 blocks
        assert convs == 22
