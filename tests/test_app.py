"""The home page starts and reports what it finds (Streamlit's AppTest, no browser)."""

import ast
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

from streamlit.testing.v1 import AppTest

import pytest

from conftest import HEAVY_LIBRARIES, ROOT, heavy_libraries_loaded_by, make_folder_dataset, needs_fer
from fer_core.data import load_dataset

APP = str(ROOT / "app.py")
CONFIG = ROOT / ".streamlit" / "config.toml"


def test_home_without_data_set(monkeypatch, tmp_path):
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("FER-2013 was not found" in i.value for i in at.info)


@needs_fer
def test_home_with_data_set_shows_counts(fer_root, monkeypatch):
    monkeypatch.setenv("FER2013_PATH", str(fer_root))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("35,887 images" in m.value for m in at.markdown)


def test_home_renders_counts_checkpoints_and_runs_without_importing_pytorch(monkeypatch, tmp_path):
    """Home's first render needs no model, so it does not pay for importing PyTorch (about a second)."""
    data = make_folder_dataset(tmp_path / "fer", per_class=3)
    load_dataset(data)   # fills the cache, as any earlier visit or command would
    monkeypatch.setenv("FER2013_PATH", str(data))
    code = ("import dashboard.warm_up\n"
            "dashboard.warm_up.WARM_UP_IDLE_S = 600   # the background imports would load PyTorch\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app.py', default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "assert any('63 images' in m.value for m in at.markdown), [m.value for m in at.markdown]\n"
            "table = next(d.value for d in at.dataframe if 'Checkpoint' in d.value.columns)\n"
            "assert 'fer2013_effnet_b0' in table['Checkpoint'].tolist()\n")
    assert heavy_libraries_loaded_by(code, libraries=("torch",)) == []


def test_home_is_a_landing_page_with_the_bundled_models_scores(monkeypatch, tmp_path):
    """What the bundled model scores (its saved single-model report of the test split), a link to try a photo,
    the checkpoints with their accuracy, and no 'None' cell; all of it before the data set is read."""
    from fer_core.storage import load_report

    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    saved = load_report(ROOT / "checkpoints" / "fer2013_effnet_b0.PrivateTest.json")
    cards = {m.label: m.value for m in at.metric}
    assert cards["Accuracy on PrivateTest"] == f"{saved['accuracy']:.1%}"
    assert cards["Macro-F1"] == f"{saved['macro']['f1']:.3f}"
    assert any(link.proto.label == "Try it on a photo" and link.proto.page.endswith("Predict")
               for link in at.get("page_link"))
    table = next(d.value for d in at.dataframe if "Checkpoint" in d.value.columns)
    row = table.set_index("Checkpoint").loc["fer2013_effnet_b0"]
    assert row["Accuracy"] == f"{saved['accuracy']:.1%}" and row["Measured on"] == "PrivateTest"
    assert not any(d.value.isna().any().any() or d.value.isin(["None"]).any().any() for d in at.dataframe)
    assert [h.value for h in at.header] == ["The bundled model", "Pages", "Checkpoints", "Runs", "Data set"]


def test_home_decodes_an_uncached_data_set_with_a_progress_bar(monkeypatch, tmp_path):
    import dashboard.common as common

    data = make_folder_dataset(tmp_path / "fer", per_class=3)
    monkeypatch.setenv("FER2013_PATH", str(data))
    calls = []

    def summarize(path, progress=None):
        calls.append(progress)
        progress(30, 63)
        return common.summarize_dataset.__wrapped__(path, progress=progress)

    summarize.__wrapped__ = common.summarize_dataset
    monkeypatch.setattr(common, "summarize_dataset", summarize)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert len(calls) == 1 and isinstance(calls[0], common.DecodingProgress)
    assert any("63 images" in m.value for m in at.markdown)
    assert not at.get("progress")   # removed once every image is decoded


def test_home_links_every_page(monkeypatch, tmp_path):
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    pages = {"Train": "pages/1_Train.py", "Metrics": "pages/2_Metrics.py", "Grad-CAM": "pages/3_Grad-CAM.py",
             "Predict": "pages/4_Predict.py", "Video": "pages/5_Video.py"}
    assert [link.proto.page for link in at.get("page_link")][-5:] == list(pages)   # after "Try it on a photo"
    for title, script in pages.items():
        at.switch_page(script).run()
        assert not at.exception
        assert at.title[0].value.startswith(title)


def test_home_train_and_metrics_imports_leave_out_timm_sklearn_and_gradcam():
    """A page's first render pays for its imports; the heavy libraries wait for the pages that use them."""
    assert heavy_libraries_loaded_by("import dashboard.common, dashboard.warm_up, dashboard.training_charts, "
                                     "dashboard.charts\n"
                                     "import fer_core.config, fer_core.data, fer_core.runs, fer_core.evaluation") == []


def test_the_first_page_starts_the_heavy_imports_and_preloads_in_the_background(monkeypatch, tmp_path):
    """After the home page has run, a thread imports timm, scikit-learn and grad-cam for the other pages, then
    loads the first checkpoint and the data set into the pages' caches."""
    data = make_folder_dataset(tmp_path / "fer", per_class=3)
    load_dataset(data)   # cached
    monkeypatch.setenv("FER2013_PATH", str(data))
    code = ("import threading\n"
            "import dashboard.common as common\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app.py', default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "warm_up = [t for t in threading.enumerate() if t.name == 'fer-studio-warm-up']\n"
            "assert len(warm_up) == 1, warm_up\n"
            "warm_up[0].join(120)\n"
            "assert not warm_up[0].is_alive()\n"
            "def not_again(*args, **kwargs):\n"
            "    raise AssertionError('loaded again: the warm-up did not fill the cache')\n"
            "import fer_core.checkpoint\n"
            "fer_core.checkpoint.FerClassifier.from_checkpoint = not_again\n"
            "common.load_dataset = not_again\n"
            "model = common.load_classifier(next(iter(common.checkpoint_choices().values())))\n"
            f"assert len(common.dataset({str(data)!r}, tuple(model.class_names)).split('Training')) == 21\n")
    assert heavy_libraries_loaded_by(code, timeout_s=240) == list(HEAVY_LIBRARIES)


def test_background_imports_wait_while_a_page_script_runs_and_then_for_a_quiet_spell(tmp_path, monkeypatch):
    """On two cores an import beside a loading page slows that page: the warm-up waits for the pages."""
    from dashboard import warm_up

    (tmp_path / "fer_studio_probe_module.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fer_studio_probe_module", raising=False)
    with warm_up.page_script_running():
        with warm_up.page_script_running():   # two sessions' scripts
            thread = threading.Thread(target=warm_up.import_when_idle, args=(("fer_studio_probe_module",), 1.0))
            thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and "fer_studio_probe_module" not in sys.modules   # one script still runs
    ended = time.monotonic()
    thread.join(30)
    assert time.monotonic() - ended >= 1.0   # a quiet second after the last script
    assert not thread.is_alive() and sys.modules["fer_studio_probe_module"].LOADED


def test_the_server_listens_on_this_machine_only():
    """`streamlit run app.py` serves 127.0.0.1, answers only to its local names, and leaves Streamlit's request
    protections on; uploads are sized for photos (and videos to come), not for a data set."""
    config = tomllib.loads(CONFIG.read_text())
    server = config["server"]
    assert server["address"] == "127.0.0.1"
    assert server["allowedHosts"] == ["localhost", "127.0.0.1"]
    assert server["headless"] is True and server["runOnSave"] is False
    assert server["fileWatcherType"] == "none"
    assert server["maxUploadSize"] == 200
    assert server.get("enableXsrfProtection", True) is True and server.get("enableCORS", True) is True
    assert server.get("enableStaticServing", False) is False
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "minimal"


def test_streamlit_reads_the_config_as_written():
    """Every setting names a Streamlit option (a misspelt one would be ignored) and Streamlit reads its value."""
    config = tomllib.loads(CONFIG.read_text())
    written = {f"{section}.{name}": value for section, options in config.items() for name, value in options.items()}
    code = ("import json, sys\n"
            "from streamlit import config\n"
            "options = config.get_config_options(force_reparse=True)\n"
            "names = json.loads(sys.argv[1])\n"
            "print(json.dumps({n: config.get_option(n) if n in options else 'UNKNOWN OPTION' for n in names}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}   # no overrides
    out = subprocess.run([sys.executable, "-c", code, json.dumps(list(written))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == written


# the Streamlit calls that make a widget (a value, an event or a selection the page reads), keyed per page
WIDGETS = {"button", "download_button", "link_button", "checkbox", "toggle", "radio", "selectbox", "multiselect",
           "select_slider", "slider", "text_input", "number_input", "text_area", "date_input", "time_input",
           "datetime_input", "file_uploader", "camera_input", "audio_input", "color_picker", "data_editor",
           "dataframe", "plotly_chart", "altair_chart", "vega_lite_chart", "pydeck_chart", "tabs",
           "form_submit_button", "pills", "segmented_control", "feedback", "chat_input"}
KEY_PREFIXES = {"app.py": "home_", "pages/1_Train.py": "train_", "pages/2_Metrics.py": "metrics_",
                "pages/3_Grad-CAM.py": "gradcam_", "pages/4_Predict.py": "predict_",
                "pages/5_Video.py": "video_"}


def widget_keys(script: str) -> list[tuple[int, str, str | None]]:
    """(line, call, the key's literal start or None) of each widget call in ``script``; a key held in a variable
    is followed to its assignment in the same file."""
    tree = ast.parse((ROOT / script).read_text())
    assigned = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}

    def literal_start(node) -> str | None:
        node = assigned.get(node.id, node) if isinstance(node, ast.Name) else node
        if isinstance(node, ast.JoinedStr) and node.values:
            node = node.values[0]
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    return [(node.lineno, node.func.attr,
             next((literal_start(k.value) for k in node.keywords if k.arg == "key"), None))
            for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in WIDGETS]


def test_every_widget_has_a_key_named_after_its_page():
    """AppTest finds widgets by key, and keys shared between pages share their state: each page's own prefix."""
    for script, prefix in KEY_PREFIXES.items():
        found = widget_keys(script)
        assert found or script == "app.py", script
        unprefixed = [(line, call, key) for line, call, key in found if not (key or "").startswith(prefix)]
        assert unprefixed == [], f"{script}: widgets without a key starting with {prefix!r}"


def _cpu_seconds(pid: int) -> float:
    fields = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def _inotify_watches(pid: int) -> int:
    """The inotify watches the process holds (one a watched folder): each is a line of its inotify fds' fdinfo."""
    watches = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            watches += info.read_text().count("inotify wd:")
        except OSError:   # an fd closed meanwhile
            pass
    return watches


@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="reads the server's CPU time from /proc")
def test_a_served_app_with_a_large_folder_beside_it_stays_idle(tmp_path):
    """With the repository's config the server watches no files: a folder of thousands beside the app (the
    quick start's .venv) costs no inotify watches, and the server sits idle after a page while files change
    there (a training run writing its logs)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    from dashboard.live_server import streamlit_server

    (tmp_path / "app.py").write_text("import streamlit as st\nst.title('idle')\n")
    for d in range(600):   # 600 folders, as a virtual environment has thousands
        folder = tmp_path / "venv" / f"pkg{d // 20}" / f"mod{d}"
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("x = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}   # the config as written
    with streamlit_server(env, script=tmp_path / "app.py", log_path=tmp_path / "server.log") as url:
        pid = int(subprocess.check_output(["pgrep", "-f", "--newest", str(tmp_path / "app.py")]).split()[0])
        with connect(url.replace("http", "ws", 1) + "/_stcore/stream", origin=url) as session:
            rerun = BackMsg()
            rerun.rerun_script.query_string = ""
            session.send(rerun.SerializeToString())   # a visitor opens the page: the script runs
            while ForwardMsg.FromString(session.recv(timeout=30)).WhichOneof("type") != "script_finished":
                pass
            time.sleep(0.5)
            used, start = _cpu_seconds(pid), time.monotonic()
            for i in range(30):   # three seconds of writes beside the app
                (tmp_path / "venv" / "pkg1" / "mod25" / "__init__.py").write_text(f"x = {i}\n")
                time.sleep(0.1)
            share = (_cpu_seconds(pid) - used) / (time.monotonic() - start)
            assert _inotify_watches(pid) == 0
    assert share < 0.1, f"the idle server used {share:.0%} of a core"
    assert "inotify" not in (tmp_path / "server.log").read_text().lower()
