"""Ensembles (fer_core.ensemble): a file naming member checkpoints that loads, predicts, explains, distils and
exports as one model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_folder_dataset
from fer_core import cli
from fer_core.checkpoint import FerClassifier, save_checkpoint
from fer_core.ensemble import EnsembleNet, choose_weights, ensemble_members, save_ensemble, weight_grid
from fer_core.models import create_model
from fer_core.storage import CheckpointError, model_metadata, read_metadata


def random_member(path: Path, class_names, arch: str = "resnet18", img_size: int = 48, seed: int = 0) -> Path:
    """A checkpoint of an untrained model (random weights answer differently from the tiny trained one)."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(class_names), img_size=img_size, drop_rate=0.0)
    torch.nn.init.normal_(model.get_classifier().weight, std=0.5)   # outputs that differ from face to face
    save_checkpoint(path, model.state_dict(), model_metadata(arch, class_names, img_size, 0.449, 0.226, 16))
    return path


@pytest.fixture
def members(tmp_path, tiny_checkpoint) -> list[Path]:
    names = read_metadata(tiny_checkpoint)["class_names"]
    first = tmp_path / "models" / "b0.safetensors"
    first.parent.mkdir()
    shutil.copy(tiny_checkpoint, first)
    return [first, random_member(tmp_path / "models" / "r18.safetensors", names)]


@pytest.fixture
def faces() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (6, 48, 48), dtype=np.uint8)


def geometric_mean(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    log = sum(w * np.log(p) for w, p in zip(weights, probs))
    out = np.exp(log - log.max(1, keepdims=True))
    return out / out.sum(1, keepdims=True)


def test_an_ensemble_answers_its_members_weighted_geometric_mean(members, tmp_path, faces):
    out = tmp_path / "ens.safetensors"
    save_ensemble(out, members, [3, 1])
    ensemble = FerClassifier.from_checkpoint(out)
    assert ensemble.arch == "ensemble" and isinstance(ensemble.model, EnsembleNet)
    own = [FerClassifier.from_checkpoint(m, calibrated=False).predict_proba(faces) for m in members]
    assert not np.allclose(own[0], own[1], atol=0.05)   # the members disagree: the mean is not either one
    np.testing.assert_allclose(ensemble.predict_proba(faces), geometric_mean(own, [0.75, 0.25]), atol=1e-5)


def test_a_member_of_weight_zero_leaves_the_other_alone(members, tmp_path, faces):
    out = tmp_path / "ens.safetensors"
    save_ensemble(out, members, [1, 0])
    np.testing.assert_allclose(FerClassifier.from_checkpoint(out).predict_proba(faces),
                               FerClassifier.from_checkpoint(members[0], calibrated=False).predict_proba(faces),
                               atol=1e-5)


def test_members_of_other_sizes_and_architectures_run_at_their_own_size(members, tmp_path, faces):
    names = read_metadata(members[0])["class_names"]
    big = random_member(tmp_path / "models" / "b0_64.safetensors", names, "efficientnet_b0", img_size=64, seed=1)
    out = tmp_path / "ens.safetensors"
    recorded = save_ensemble(out, [*members, big])
    assert [(m.arch, m.img_size) for m in recorded] == [("efficientnet_b0", 48), ("resnet18", 48),
                                                        ("efficientnet_b0", 64)]
    assert [m.weight for m in recorded] == pytest.approx([1 / 3] * 3, abs=1e-5)
    ensemble = FerClassifier.from_checkpoint(out)
    assert ensemble.img_size == 64 and ensemble.model.sizes == [48, 48, 64]
    probs = ensemble.predict_proba(faces)
    assert probs.shape == (6, len(names)) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_members_are_found_beside_the_ensemble_and_checked(members, tmp_path, faces):
    out = tmp_path / "models" / "ens.safetensors"
    save_ensemble(out, members)
    assert [m.file for m in ensemble_members(out)] == ["b0.safetensors", "r18.safetensors"]
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "models", moved)    # the folder moves as a whole: still loads
    assert FerClassifier.from_checkpoint(moved / "ens.safetensors").predict_proba(faces).shape[0] == 6
    names = read_metadata(members[0])["class_names"]
    random_member(moved / "r18.safetensors", names, seed=5)     # a member retrained in place
    with pytest.raises(CheckpointError, match="r18.safetensors has changed since the ensemble was built"):
        FerClassifier.from_checkpoint(moved / "ens.safetensors")
    (moved / "r18.safetensors").unlink()
    with pytest.raises(CheckpointError, match="member r18.safetensors not found"):
        FerClassifier.from_checkpoint(moved / "ens.safetensors")


def test_members_must_share_class_names_and_be_checkpoints(members, tmp_path):
    names = read_metadata(members[0])["class_names"]
    other = random_member(tmp_path / "four.safetensors", names[:4])
    with pytest.raises(ValueError, match="members must share class names"):
        save_ensemble(tmp_path / "ens.safetensors", [members[0], other])
    ens = tmp_path / "models" / "ens.safetensors"
    save_ensemble(ens, members)
    with pytest.raises(ValueError, match="is an ensemble itself"):
        save_ensemble(tmp_path / "nested.safetensors", [ens, members[0]])
    with pytest.raises(ValueError, match="one weight of 0 or more per member"):
        save_ensemble(tmp_path / "bad.safetensors", members, [1.0, -1.0])
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_malformed_member_list_is_a_clear_error(members, tmp_path):
    from safetensors.torch import save

    meta = model_metadata("ensemble", read_metadata(members[0])["class_names"], 48, 0.0, 1.0, 16)
    meta["members"] = "[{\"file\": 3}]"
    (tmp_path / "bad.safetensors").write_bytes(save({}, metadata=meta))
    with pytest.raises(CheckpointError, match="'members' metadata is missing or malformed"):
        FerClassifier.from_checkpoint(tmp_path / "bad.safetensors")


def test_weights_are_chosen_on_a_grid_by_validation_accuracy():
    assert len(weight_grid(3)) == 66 and all(sum(w) == pytest.approx(1) for w in weight_grid(3))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    right = np.log(np.full((200, 4), 0.1))
    right[np.arange(200), labels] = np.log(0.7)
    noise = np.log(rng.dirichlet(np.ones(4), 200))
    choice = choose_weights(np.stack([noise, right]), labels)
    assert choice["accuracy"] == 1.0 and choice["weights"][1] >= 0.5
    assert choice["member_accuracy"][1] == 1.0 and choice["member_accuracy"][0] < 0.5


def test_the_equal_weighting_is_a_candidate_even_off_the_grid():
    # Two classes; each face's margins (log p(true) - log p(other)) per member are such that the three members
    # weighted equally get all four faces right, and any weighting in tenths (which cannot be equal for three)
    # gets at least one wrong: faces 1-2 need w1 == w2, faces 3-4 need w2 == w3, within 0.01.
    delta = 0.01
    margins = np.array([[1, -1, 0], [-1, 1, 0], [0, 1, -1], [0, -1, 1]], dtype=float) + delta
    log_probs = np.stack([-np.logaddexp(0, -margins), -np.logaddexp(0, margins)], axis=-1).transpose(1, 0, 2)
    labels = np.zeros(4, dtype=int)
    choice = choose_weights(log_probs, labels)
    assert choice["weights"] == pytest.approx([1 / 3] * 3)
    assert choice["accuracy"] == choice["equal_weights_accuracy"] == 1.0


def test_explain_gives_a_map_per_member_and_their_mean(members, tmp_path, faces):
    from fer_core.explanation import explain

    out = tmp_path / "ens.safetensors"
    save_ensemble(out, members)
    maps = explain(FerClassifier.from_checkpoint(out), faces[:2], display_size=96)
    assert len(maps) == 2 and len(maps[0].member_heatmaps) == 2
    for m in maps:
        assert m.heatmap.shape == (96, 96) and 0 <= m.heatmap.min() and m.heatmap.max() <= 1
        assert all(h.shape == (96, 96) for h in m.member_heatmaps)
    single = explain(FerClassifier.from_checkpoint(members[0]), faces[:1])
    assert single[0].member_heatmaps is None
    # a model restricted to some classes (a 4-class protocol) is explained through the same layers
    names = FerClassifier.from_checkpoint(out).class_names[:4]
    restricted = explain(FerClassifier.from_checkpoint(out).restricted_to(names), faces[:1])
    assert restricted[0].target in names


def test_an_ensemble_teaches_and_exports_as_one_model(members, tmp_path, faces):
    from fer_core.onnx_export import export_onnx
    from fer_core.runtime import OnnxClassifier
    from fer_core.training import Teacher

    out = tmp_path / "ens.safetensors"
    save_ensemble(out, members, [1, 2])
    ensemble = FerClassifier.from_checkpoint(out)
    teacher = Teacher(out, ensemble.class_names)
    x = (torch.as_tensor(faces).unsqueeze(1).float() / 255 - 0.449) / 0.226
    probs = teacher(x)
    assert probs.shape == (6, len(ensemble.class_names)) and torch.allclose(probs.sum(1), torch.ones(6), atol=1e-5)
    result = export_onnx(ensemble, tmp_path / "ens.onnx", faces)
    assert result.max_difference < 1e-4
    graph = OnnxClassifier.from_file(tmp_path / "ens.onnx")
    assert graph.arch == "ensemble" and len(json.loads(graph.metadata["members"])) == 2
    np.testing.assert_allclose(graph.predict_proba(faces), ensemble.predict_proba(faces), atol=1e-4)


def test_cli_builds_an_ensemble_with_weights_chosen_on_publictest(members, tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "models" / "ens.safetensors"
    rc = cli.main(["ensemble", str(out), *map(str, members), "--weights-from", "PublicTest", "--data", str(data)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "an ensemble of 2" in printed and "PublicTest accuracy" in printed
    choice = read_metadata(out)["metrics"]["weights_chosen"]
    assert choice["split"] == "PublicTest" and sum(choice["weights"]) == pytest.approx(1)
    assert [m.weight for m in ensemble_members(out)] == pytest.approx(choice["weights"], abs=1e-5)
    assert cli.main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--split", "PrivateTest",
                     "--runtime", "torch", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["checkpoint_arch"] == "ensemble"


def test_cli_refuses_to_choose_weights_on_a_test_split_or_copy_an_ensemble(members, tmp_path, capsys):
    out = tmp_path / "models" / "ens.safetensors"
    assert cli.main(["ensemble", str(out), *map(str, members), "--weights-from", "PrivateTest",
                     "--data", str(tmp_path)]) == 2
    assert "not on the one you report" in capsys.readouterr().err and not out.exists()
    assert cli.main(["ensemble", str(out), *map(str, members)]) == 0
    assert cli.main(["export", str(out), str(tmp_path / "copy.safetensors")]) == 2
    assert "export OUT.onnx" in capsys.readouterr().err


@pytest.fixture
def four_class_members(members, tmp_path) -> tuple[list[Path], list[str]]:
    """A 7-class member and a 4-class one: an ensemble over the four classes they share (the 4-class protocol)."""
    names = list(read_metadata(members[0])["class_names"])
    four = random_member(tmp_path / "models" / "four.safetensors", names[:4], seed=3)
    return [members[0], four], names[:4]


def test_an_ensemble_over_some_classes_has_each_member_choose_among_them(four_class_members, tmp_path, faces):
    from fer_core.onnx_export import export_onnx
    from fer_core.runtime import OnnxClassifier

    files, four = four_class_members
    out = tmp_path / "models" / "ens4.safetensors"
    save_ensemble(out, files, [1, 3], classes=four[::-1])   # given in any order: kept in the members' order
    ensemble = FerClassifier.from_checkpoint(out)
    assert list(ensemble.class_names) == four
    seven = FerClassifier.from_checkpoint(files[0], calibrated=False)
    own = [seven.restricted_to(four).predict_proba(faces),
           FerClassifier.from_checkpoint(files[1], calibrated=False).predict_proba(faces)]
    assert not np.allclose(seven.predict_proba(faces)[:, :4], own[0], atol=1e-3)   # renormalised over the four
    np.testing.assert_allclose(ensemble.predict_proba(faces), geometric_mean(own, [0.25, 0.75]), atol=1e-5)
    export_onnx(ensemble, tmp_path / "ens4.onnx", faces)
    np.testing.assert_allclose(OnnxClassifier.from_file(tmp_path / "ens4.onnx").predict_proba(faces),
                               ensemble.predict_proba(faces), atol=1e-4)


def test_an_ensemble_over_some_classes_needs_every_member_to_know_them_in_order(four_class_members, tmp_path):
    files, four = four_class_members
    with pytest.raises(ValueError, match="members must share class names"):
        save_ensemble(tmp_path / "e.safetensors", files)              # no classes given: they must be the same
    seven = list(read_metadata(files[0])["class_names"])
    with pytest.raises(ValueError, match="lacks"):
        save_ensemble(tmp_path / "e.safetensors", files, classes=seven[:5])
    with pytest.raises(ValueError, match="two or more"):
        save_ensemble(tmp_path / "e.safetensors", files, classes=seven[:1])
    reordered = random_member(tmp_path / "reordered.safetensors", four[::-1])
    with pytest.raises(ValueError, match="in the same order"):
        save_ensemble(tmp_path / "e.safetensors", [files[0], reordered], classes=four)
    assert not (tmp_path / "e.safetensors").exists()


def test_explain_maps_each_member_of_an_ensemble_over_some_classes(four_class_members, tmp_path, faces):
    from fer_core.explanation import explain

    files, four = four_class_members
    out = tmp_path / "models" / "ens4.safetensors"
    save_ensemble(out, files, classes=four)
    maps = explain(FerClassifier.from_checkpoint(out), faces[:2], display_size=64)
    assert [len(m.member_heatmaps) for m in maps] == [2, 2] and all(m.predicted in four for m in maps)
    assert not np.allclose(maps[0].member_heatmaps[0], maps[0].member_heatmaps[1])


def test_weights_can_be_chosen_by_macro_f1_where_accuracy_favours_the_majority_class():
    # 90 faces of class 0, 10 of class 1. Member a calls every face class 0 (accuracy 0.90, macro-F1 0.47);
    # member b finds every class-1 face and 72 of the 90 others (accuracy 0.82, macro-F1 0.71)
    labels = np.array([0] * 90 + [1] * 10)
    says_0, says_1 = np.log([0.9, 0.1]), np.log([0.1, 0.9])
    a = np.tile(says_0, (100, 1))
    b = np.stack([says_0] * 72 + [says_1] * 18 + [says_1] * 10)
    by_accuracy = choose_weights(np.stack([a, b]), labels)
    by_f1 = choose_weights(np.stack([a, b]), labels, metric="macro_f1")
    assert by_accuracy["weights"][0] >= 0.5 and by_accuracy["accuracy"] == pytest.approx(0.9)
    assert by_f1["weights"][1] > 0.5 and by_f1["macro_f1"] == pytest.approx(by_f1["member_macro_f1"][1])
    assert by_f1["member_macro_f1"][1] > 0.7 > 0.5 > by_f1["member_macro_f1"][0]
    with pytest.raises(ValueError, match="metric must be one of"):
        choose_weights(np.stack([a, b]), labels, metric="auc")


def test_cli_builds_a_four_class_ensemble_chosen_by_macro_f1(four_class_members, tmp_path, capsys):
    files, four = four_class_members
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "models" / "ens4.safetensors"
    rc = cli.main(["ensemble", str(out), *map(str, files), "--classes", ",".join(four), "--weights-from",
                   "PublicTest", "--metric", "macro_f1", "--data", str(data)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"over {','.join(four)}" in printed and "PublicTest macro_f1" in printed
    assert read_metadata(out)["metrics"]["weights_chosen"]["metric"] == "macro_f1"
    assert cli.main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--split", "PrivateTest",
                     "--runtime", "torch", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["class_names"] == four and report["num_images"] == 4 * 4
    assert cli.main(["ensemble", str(out), *map(str, files)]) == 2
    assert "members must share class names" in capsys.readouterr().err
