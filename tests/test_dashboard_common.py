"""dashboard/common.py: the data folders a path typed into the dashboard may point into, and the models it lists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_folder_dataset
from dashboard import common


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A checkout at ``tmp/repo`` with FER-2013 in ``repo/data/fer2013`` (named by $FER2013_PATH) and a shared
    ``tmp/shared/data``; a secret file and a data set outside every data folder, in ``tmp/outside``."""
    tmp_path = tmp_path.resolve()   # the paths confine_data_path returns are resolved
    repo = tmp_path / "repo"
    monkeypatch.setattr(common, "ROOT", repo)
    data = make_folder_dataset(repo / "data" / "fer2013", per_class=1)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    outside = make_folder_dataset(tmp_path / "outside" / "fer2013", per_class=1).parent
    (outside / "secret.txt").write_text("SECRET-CONTENT\n")
    monkeypatch.setenv("FER2013_PATH", str(data))
    monkeypatch.delenv(common.DATA_ROOTS_SETTING, raising=False)
    return tmp_path


def refusal(text: str) -> str:
    with pytest.raises(ValueError) as e:
        common.confine_data_path(text)
    return str(e.value)


def test_the_allowed_roots_are_the_data_folders_and_the_setting(checkout, monkeypatch):
    data = checkout / "repo" / "data"
    assert common.allowed_data_roots() == [data, checkout / "shared" / "data", data / "fer2013"]
    extra = checkout / "more"
    extra.mkdir()
    monkeypatch.setenv(common.DATA_ROOTS_SETTING, os.pathsep.join([str(extra), str(checkout / "missing"), ""]))
    assert common.allowed_data_roots()[-1] == extra   # the missing folder and the empty entry are left out


def test_fer2013_path_outside_the_checkout_allows_that_data_set_not_the_folder_around_it(checkout, monkeypatch):
    outside = checkout / "outside"
    monkeypatch.setenv("FER2013_PATH", str(outside / "fer2013"))
    assert common.confine_data_path(str(outside / "fer2013" / "train")) == outside / "fer2013" / "train"
    assert "SECRET-CONTENT" not in refusal(str(outside / "secret.txt"))
    csv = outside / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n")
    monkeypatch.setenv("FER2013_PATH", str(csv))
    assert csv in common.allowed_data_roots()
    assert common.confine_data_path(str(csv)) == csv
    refusal(str(outside / "fer2013"))   # the CSV, not its neighbours


def test_a_data_set_inside_a_root_is_accepted_resolved(checkout, monkeypatch):
    data = checkout / "repo" / "data" / "fer2013"
    assert common.confine_data_path(str(data)) == data
    assert common.confine_data_path(f"  {data}/../fer2013/train  ") == data / "train"   # `..` that stays inside
    assert common.confine_data_path("data/fer2013") == data   # relative to the checkout
    monkeypatch.setenv("HOME", str(checkout / "repo"))
    assert common.confine_data_path("~/data/fer2013") == data


def test_system_files_are_refused_with_the_roots_and_the_setting_named(checkout):
    message = refusal("/etc/shadow")
    assert "`/etc/shadow` is outside the data folders" in message
    assert str(checkout / "repo" / "data") in message and common.DATA_ROOTS_SETTING in message


def test_dot_dot_cannot_escape_a_root(checkout):
    escape = f"{checkout / 'repo' / 'data' / 'fer2013'}/../../../outside/secret.txt"
    message = refusal(escape)
    assert "outside the data folders" in message and "SECRET-CONTENT" not in message
    refusal("data/../../outside/fer2013")


def test_a_symlink_inside_a_root_cannot_point_outside(checkout):
    data = checkout / "repo" / "data"
    (data / "link").symlink_to(checkout / "outside", target_is_directory=True)
    (data / "secret.txt").symlink_to(checkout / "outside" / "secret.txt")
    assert "SECRET-CONTENT" not in refusal(str(data / "link" / "fer2013"))
    refusal(str(data / "secret.txt"))
    (data / "inside").symlink_to(data / "fer2013", target_is_directory=True)   # a link within the folder is fine
    assert common.confine_data_path(str(data / "inside")) == data / "fer2013"


def test_a_folder_added_by_the_setting_is_accepted(checkout, monkeypatch):
    elsewhere = checkout / "outside" / "fer2013"
    refusal(str(elsewhere))
    monkeypatch.setenv(common.DATA_ROOTS_SETTING, str(checkout / "outside"))
    assert common.confine_data_path(str(elsewhere)) == elsewhere
    refusal(str(checkout / "repo"))   # still not the folders around it


@pytest.mark.parametrize("text", ["", "   ", "data/\0fer2013"])
def test_no_path_or_an_unusable_one_is_refused(checkout, text):
    assert common.DATA_ROOTS_SETTING in refusal(text)


def test_the_default_model_leads_the_bundled_list_whatever_sorts_before_it(tmp_path, monkeypatch):
    """The pages preselect the first choice: a bundled file named before the default model must not displace it."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("fer2013_4class_ensemble", common.BUNDLED_CHECKPOINT.stem, "zz_other", "aa_other"):
        (folder / f"{name}.safetensors").write_bytes(b"")
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(folder))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(tmp_path / "runs"))
    names = [p.stem for p in common.checkpoint_choices().values()]
    assert names == [common.BUNDLED_CHECKPOINT.stem, "aa_other", "fer2013_4class_ensemble", "zz_other"]


def test_home_checkpoint_table_names_files_by_stem_and_sizes_an_ensemble_in_kb():
    from dashboard import tables

    ensemble = common.BUNDLED_DIR / "fer2013_4class_ensemble.safetensors"
    if not (ensemble.exists() and common.BUNDLED_CHECKPOINT.exists()):
        pytest.skip("the bundled checkpoints are not in checkpoints/")
    table = tables.checkpoints([common.BUNDLED_CHECKPOINT, ensemble], lambda path: {}).set_index("Checkpoint")
    assert list(table.index) == [common.BUNDLED_CHECKPOINT.stem, ensemble.stem]   # as the model pickers name them
    assert table.loc[ensemble.stem, "Model"] == "ensemble: 2× efficientnet_b0, resnet18"
    assert table.loc[ensemble.stem, "Size"] == f"{round(ensemble.stat().st_size / 1e3)} KB"
    default = common.BUNDLED_CHECKPOINT
    assert table.loc[default.stem, "Size"] == f"{default.stat().st_size / 1e6:.1f} MB"
    assert tables.file_size(400) == "1 KB" and tables.file_size(99_000) == "99 KB"
