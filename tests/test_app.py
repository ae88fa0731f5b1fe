"""The home page starts and reports what it finds (Streamlit's AppTest, no browser)."""

from streamlit.testing.v1 import AppTest

from conftest import HEAVY_LIBRARIES, ROOT, heavy_libraries_loaded_by, make_folder_dataset, needs_fer
from fer_core.data import load_dataset

APP = str(ROOT / "app.py")


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
    code = ("import dashboard.common\n"
            "dashboard.common.WARM_UP_DELAY_S = 600   # the background imports would load PyTorch\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app.py', default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "assert any('63 images' in m.value for m in at.markdown), [m.value for m in at.markdown]\n"
            "assert 'fer2013_effnet_b0.safetensors' in at.dataframe[0].value['checkpoint'].tolist()\n")
    assert heavy_libraries_loaded_by(code, libraries=("torch",)) == []


def test_home_links_every_page(monkeypatch, tmp_path):
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    pages = {"Train": "pages/1_Train.py", "Metrics": "pages/2_Metrics.py", "Grad-CAM": "pages/3_Grad-CAM.py",
             "Predict": "pages/4_Predict.py"}
    assert [link.proto.page for link in at.get("page_link")] == list(pages)
    for title, script in pages.items():
        at.switch_page(script).run()
        assert not at.exception
        assert at.title[0].value.startswith(title)


def test_home_train_and_metrics_imports_leave_out_timm_sklearn_and_gradcam():
    """A page's first render pays for its imports; the heavy libraries wait for the pages that use them."""
    assert heavy_libraries_loaded_by("import dashboard.common, dashboard.training_charts, dashboard.charts\n"
                                     "import fer_core.config, fer_core.data, fer_core.runs, fer_core.evaluation") == []


def test_the_first_page_starts_the_heavy_imports_in_the_background():
    """After the home page has run, timm, scikit-learn and grad-cam load in a thread for the other pages."""
    code = ("import threading\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app.py', default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "warm_up = [t for t in threading.enumerate() if t.name == 'fer-studio-warm-up']\n"
            "assert len(warm_up) == 1, warm_up\n"
            "warm_up[0].join(120)")
    assert heavy_libraries_loaded_by(code, timeout_s=240) == list(HEAVY_LIBRARIES)
