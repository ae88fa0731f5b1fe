"""fer_core.storage: the one atomic writer, and standard JSON."""
from __future__ import annotations

import errno
import json
import math

import pytest

from fer_core.config import ENSEMBLE_ARCH
from fer_core.storage import (architecture_label, atomic_write, atomic_write_bytes, json_bytes, save_report,
                              temporaries_of)


def test_a_writer_that_fails_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old,content\n")
    with pytest.raises(RuntimeError, match="cut"):
        with atomic_write(target, "w") as f:
            f.write("new,rows\n" * 1000)
            raise RuntimeError("cut mid-way")
    assert target.read_text() == "old,content\n"
    assert temporaries_of(target) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_bytes(b'{"old": true}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fer_core.storage.os.fsync", no_space)   # the data reaches the disk at fsync
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b'{"new": true}')
    assert target.read_bytes() == b'{"old": true}' and temporaries_of(target) == []


def test_a_completed_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "sub" / "figure.png"     # the folder is made
    with atomic_write(target) as f:
        assert not target.exists()                # nothing is visible under the name until the end
        f.write(b"\x89PNG...")
    assert target.read_bytes() == b"\x89PNG..." and temporaries_of(target) == []
    with pytest.raises(ValueError, match="for writing"):
        with atomic_write(target, "a"):
            pass


def test_json_is_standard_without_nan_or_infinity(tmp_path):
    data = {"ece": math.nan, "values": [1.0, math.inf, -math.inf, (2.5, math.nan)], "ok": 3, "name": "x"}
    text = json_bytes(data).decode()

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse) == {"ece": None, "values": [1.0, None, None, [2.5, None]],
                                                       "ok": 3, "name": "x"}
    save_report({"accuracy": math.nan}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {"accuracy": None}


def test_architecture_label_names_a_model_or_counts_an_ensembles_members():
    assert architecture_label({"arch": "resnet18"}) == "resnet18"
    members = json.dumps([{"arch": "efficientnet_b0"}, {"arch": "resnet18"}, {"arch": "efficientnet_b0"}])
    assert architecture_label({"arch": ENSEMBLE_ARCH, "members": members}) == \
        "ensemble: 2× efficientnet_b0, resnet18"
    assert architecture_label({"arch": ENSEMBLE_ARCH, "members": "not json"}) == "ensemble (members unreadable)"
