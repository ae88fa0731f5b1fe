"""Checkpoints are not taken on trust: metadata checked field by field on load, weights and outputs
checked for NaN and infinity; training's own checkpoints (fp32, fp16, last with its training state) load."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fer_core.checkpoint import FerClassifier, read_tensors, save_checkpoint
from fer_core.config import GREY_MEAN, GREY_STD
from fer_core.evaluation import predict_split
from fer_core.models import create_model
from fer_core.storage import CheckpointError, model_metadata, read_metadata

NAMES = ("angry", "happy", "sad")
GOOD = model_metadata("efficientnet_b0", NAMES, 48, GREY_MEAN, GREY_STD, 16, 0.2, config={"epochs": 2}, epoch=1,
                      metrics={"val_acc": 0.5})


def write(path, tensors=None, **changes):
    """A safetensors file with GOOD's metadata and ``changes`` (a None value deletes the key)."""
    meta = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    save_file(tensors if tensors is not None else {"w": torch.zeros(2)}, str(path), metadata=meta)
    return path


BAD_FIELDS = [   # field, stored text, what the error says it must be
    ("arch", None, "has no 'arch'"),
    ("arch", "vgg16", "one of efficientnet_b0, resnet18"),
    ("class_names", None, "has no 'class_names'"),
    ("class_names", '["happy", "happy"]', "different names"),
    ("class_names", '["happy"]', "2 to 100"),
    ("class_names", '["happy", ""]', "1 to 100 characters"),
    ("class_names", '["happy", 3]', "different names"),
    ("class_names", json.dumps([f"c{i}" for i in range(101)]), "2 to 100"),
    ("class_names", '{"happy": 0, "sad": 1}', "a JSON list"),
    ("class_names", '["happy", "sad"', "a JSON list"),
    ("img_size", "100000", "from 16 to 512"),
    ("img_size", "15", "from 16 to 512"),
    ("img_size", "sixty-four", "a whole number"),
    ("img_size", "64.0", "a whole number"),
    ("in_chans", "3", "1 (grey input)"),
    ("mean", None, "has no 'mean'"),
    ("mean", "[]", "one finite number"),
    ("mean", "[NaN]", "one finite number"),
    ("mean", '["0.449"]', "one finite number"),
    ("mean", "[0.4, 0.5]", "one finite number"),
    ("mean", "[true]", "one finite number"),
    ("std", "[0]", "above 0"),
    ("std", "[-0.226]", "above 0"),
    ("std", "[Infinity]", "above 0"),
    ("std", "[1e999]", "above 0"),
    ("output_stride", "4", "8, 16 or 32"),
    ("output_stride", None, "has no 'output_stride'"),
    ("drop_rate", "1", "from 0 to below 1"),
    ("drop_rate", "-0.1", "from 0 to below 1"),
    ("drop_rate", "nan", "from 0 to below 1"),
    ("drop_rate", "high", "from 0 to below 1"),
    ("epoch", "-1", "a whole number from 0"),
    ("epoch", "1.5", "a whole number from 0"),
    ("config", "{bad json", "a JSON object"),
    ("config", "[1, 2]", "a JSON object"),
    ("metrics", "{bad json", "a JSON object"),
]


@pytest.mark.parametrize("field,text,expected", BAD_FIELDS)
def test_bad_metadata_is_one_clear_error(tmp_path, field, text, expected):
    path = write(tmp_path / "bad.safetensors", **{field: text})
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and f"'{field}'" in message and expected in message, message
    assert len(message) < len(str(path)) + 250


@pytest.mark.parametrize("field,text", [("class_names", "x" * 1_000_000), ("config", "[" * 100_000),
                                        ("format", "y" * 10_000)])
def test_long_or_deep_values_are_not_echoed(tmp_path, field, text):
    path = write(tmp_path / "long.safetensors", **{field: text})
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert len(str(e.value)) < len(str(path)) + 250 and text[:50] not in str(e.value), str(e.value)[:500]


def test_good_metadata_is_typed_and_other_keys_stay_text(tmp_path):
    meta = read_metadata(write(tmp_path / "good.safetensors", optimizer_groups="[{}]", progress='{"epoch": 3}'))
    assert meta["arch"] == "efficientnet_b0" and meta["class_names"] == list(NAMES)
    assert (meta["img_size"], meta["in_chans"], meta["output_stride"], meta["epoch"]) == (48, 1, 16, 1)
    assert meta["mean"] == [GREY_MEAN] and meta["std"] == [GREY_STD] and meta["drop_rate"] == 0.2
    assert meta["config"] == {"epochs": 2} and meta["metrics"] == {"val_acc": 0.5}
    assert (meta["optimizer_groups"], meta["progress"]) == ("[{}]", '{"epoch": 3}')
    # the optional fields may be absent; drop_rate then reads as 0
    bare = read_metadata(write(tmp_path / "bare.safetensors", drop_rate=None, epoch=None, config=None,
                               metrics=None, in_chans=None))
    assert bare["drop_rate"] == 0.0 and not {"epoch", "config", "metrics", "in_chans"} & set(bare)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("efficientnet_b0", num_classes=len(NAMES), img_size=48).state_dict()


def save(path, weights, half=False, train_state=None, **extra_meta):
    save_checkpoint(path, weights, {**GOOD, **extra_meta}, train_state, half=half)
    return path


@pytest.mark.parametrize("half", [False, True])
def test_fp32_fp16_and_last_checkpoints_load(tmp_path, weights, half):
    last = save(tmp_path / "last.safetensors", weights, half, train_state={"rng": torch.zeros(8, dtype=torch.uint8)},
                optimizer_groups=json.dumps([{"lr": 1e-3}]), progress=json.dumps({"epoch": 1, "batch": 0}))
    clf = FerClassifier.from_checkpoint(last)
    assert clf.class_names == NAMES and clf.source == str(last)
    probs = clf.predict_proba(np.zeros((2, 48, 48), np.uint8))
    assert probs.shape == (2, 3) and np.isfinite(probs).all()


def test_export_ema_copies_the_weights_a_run_validates_not_the_raw_ones(tmp_path, weights, capsys):
    from fer_core import cli
    from fer_core.checkpoint import EMA_PREFIX

    ema = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    last = save(tmp_path / "last.safetensors", weights, train_state={EMA_PREFIX + k: v for k, v in ema.items()},
                optimizer_groups=json.dumps([{"lr": 1e-3}]), progress=json.dumps({"epoch": 1, "batch": 0}))
    assert cli.main(["export", str(last), str(tmp_path / "ema.safetensors"), "--ema"]) == 0
    assert cli.main(["export", str(last), str(tmp_path / "raw.safetensors")]) == 0
    for name, expected in (("ema", ema), ("raw", weights)):
        copied, state = read_tensors(tmp_path / f"{name}.safetensors")
        assert state == {} and copied.keys() == expected.keys()
        assert all(torch.equal(copied[k], expected[k]) for k in expected), name
    assert "progress" not in read_metadata(tmp_path / "ema.safetensors")

    best = save(tmp_path / "best.safetensors", weights)
    assert cli.main(["export", str(best), str(tmp_path / "never.safetensors"), "--ema"]) == 2
    assert "best.safetensors holds no EMA weights" in capsys.readouterr().err
    assert not (tmp_path / "never.safetensors").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, weights, bad):
    broken = {**weights, "bn2.running_var": weights["bn2.running_var"].clone()}
    broken["bn2.running_var"][5] = bad
    path = save(tmp_path / "nan.safetensors", broken)
    with pytest.raises(CheckpointError, match="NaN or infinite values .*bn2.running_var") as e:
        FerClassifier.from_checkpoint(path)
    assert str(e.value).startswith(str(path))


def test_a_weight_beyond_fp16_is_refused_in_the_fp16_file(tmp_path, weights):
    big = {**weights, "classifier.bias": torch.tensor([1e5, 0.0, 0.0])}   # fp16 tops out at 65504: inf
    FerClassifier.from_checkpoint(save(tmp_path / "fp32.safetensors", big))
    with pytest.raises(CheckpointError, match="classifier.bias"):
        FerClassifier.from_checkpoint(save(tmp_path / "fp16.safetensors", big, half=True))


def test_weights_of_another_model_and_unreadable_tensors(tmp_path):
    other = create_model("resnet18", num_classes=3).state_dict()
    path = save(tmp_path / "other.safetensors", other)
    with pytest.raises(CheckpointError, match="weights do not fit a efficientnet_b0") as e:
        FerClassifier.from_checkpoint(path)
    assert len(str(e.value)) < len(str(path)) + 400   # torch's list of every missing key is cut short
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="junk.safetensors: the weights cannot be read"):
        read_tensors(junk)


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory, weights) -> FerClassifier:
    """Finite weights whose outputs overflow float32: every logit is +inf, every probability NaN."""
    huge = {**weights, "bn2.weight": torch.full_like(weights["bn2.weight"], 1e30),
            "classifier.weight": torch.full_like(weights["classifier.weight"], 1e30)}
    return FerClassifier.from_checkpoint(save(tmp_path_factory.mktemp("huge") / "huge.safetensors", huge))


def test_non_finite_outputs_are_refused_not_turned_into_labels(overflowing):
    faces = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    with pytest.raises(CheckpointError, match="huge.safetensors: NaN or infinite outputs for 3 of 3 faces"):
        overflowing.predict_proba(faces)
    for tta in ("none", "flip"):
        with pytest.raises(CheckpointError, match="NaN or infinite outputs"):
            predict_split(overflowing, torch.from_numpy(faces), tta=tta)
    # a model restricted to some classes is checked the same way
    with pytest.raises(CheckpointError, match="NaN or infinite outputs"):
        overflowing.restricted_to(["happy", "sad"]).predict_proba(faces)


def test_one_bad_face_in_a_batch_is_counted(weights):
    class OneBad(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(x)
            out[1, 0] = float("nan")
            return out

    model = create_model("efficientnet_b0", num_classes=3, img_size=48).eval()
    clf = FerClassifier(model, NAMES, 48, GREY_MEAN, GREY_STD, "efficientnet_b0", {})
    assert np.isfinite(clf.predict_proba(np.zeros((3, 48, 48), np.uint8))).all()
    with pytest.raises(CheckpointError, match="^the model: NaN or infinite outputs for 1 of 3 faces"):
        dataclasses.replace(clf, model=OneBad(model)).predict_proba(np.zeros((3, 48, 48), np.uint8))
