"""femo.reports.execute / `femo report`: parameter validation, execution, HTML export, index page, reruns."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from femo import cli
from femo.reports import execute
from femo.reports import index as index_page
from femo.reports import notebooks as nb_checks

PARAMS = 'data: str = ""\nrun_dir: str = ""\noutput_dir: str = "."\nseed: int = 0\nscale: float = 1.5\nverbose: bool = False\n'
GOOD_BODY = [
    "import femo.reports.figures\nvalue = scale * 2 + seed",
    "metrics = {'uar': 0.5, 'war': value / 10, 'n_clips': 7}",
    "femo.reports.figures.write_metrics(output_dir, metrics)",
]


def make_notebook(path: Path, body: list[str], params: str = PARAMS) -> Path:
    """Write a notebook: a title, a `parameters` cell and code cells ``body``; kernel python3."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Test report"), cell]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    make_notebook(folder / "01_good.ipynb", GOOD_BODY)
    return folder


def test_parameters_are_read_with_types(notebooks: Path) -> None:
    params = nb_checks.notebook_parameters(notebooks / "01_good.ipynb")
    assert {k: (p.type, p.default) for k, p in params.items()} == {
        "data": ("str", ""), "run_dir": ("str", ""), "output_dir": ("str", "."), "seed": ("int", 0),
        "scale": ("float", 1.5), "verbose": ("bool", False)}


@pytest.mark.parametrize("raw, expected", [
    ({"seed": "3"}, {"seed": 3}), ({"scale": "2"}, {"scale": 2.0}), ({"scale": 2}, {"scale": 2.0}),
    ({"verbose": "yes"}, {"verbose": True}), ({"verbose": "false"}, {"verbose": False}),
])
def test_overrides_are_coerced(notebooks: Path, raw: dict, expected: dict) -> None:
    assert nb_checks.resolve_parameters(notebooks / "01_good.ipynb", raw) == expected


def test_unknown_parameter_lists_known_names(notebooks: Path) -> None:
    with pytest.raises(nb_checks.ReportError, match=r"unknown parameter\(s\) \['epochz'\].*'scale'.*'seed'"):
        nb_checks.plan(nb_checks.find_notebooks(notebooks), {"epochz": "3"})
    with pytest.raises(nb_checks.ReportError, match="output_dir is set by femo report"):
        nb_checks.plan(nb_checks.find_notebooks(notebooks), {"output_dir": "/tmp"})


@pytest.mark.parametrize("key, value", [("seed", "three"), ("seed", 1.5), ("verbose", "maybe"), ("seed", True)])
def test_wrong_type_is_refused(notebooks: Path, key: str, value) -> None:
    with pytest.raises(nb_checks.ReportError, match=rf"01_good.ipynb: parameter '{key}' expects"):
        nb_checks.resolve_parameters(notebooks / "01_good.ipynb", {key: value})


def test_missing_data_path_is_named(notebooks: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "manifest.csv"
    with pytest.raises(nb_checks.ReportError, match="data path not found: .*nowhere/manifest.csv"):
        execute.run_reports(notebooks_dir=notebooks, reports_dir=tmp_path / "reports", data=str(missing))
    assert not (tmp_path / "reports").exists()


def test_bad_assignment_and_unknown_notebook(notebooks: Path) -> None:
    with pytest.raises(nb_checks.ReportError, match="expected key=value"):
        nb_checks.parse_assignments(["epochs"])
    with pytest.raises(nb_checks.ReportError, match=r"no notebook '07'.*01_good"):
        nb_checks.find_notebooks(notebooks, ["07"])


def test_report_folder_html_config_index_and_no_overwrite(notebooks: Path, tmp_path: Path) -> None:
    reports_dir = tmp_path / "reports"
    reports, index = execute.run_reports(notebooks_dir=notebooks, reports_dir=reports_dir, tag="t",
                                     overrides={"scale": "2.5"}, day="2026-01-02", log=lambda *_: None)
    (rep,) = reports
    assert rep.error == ""
    folder = reports_dir / "2026-01-02_01_good_t"
    assert rep.folder == folder
    assert json.loads((folder / "metrics.json").read_text()) == {"n_clips": 7, "uar": 0.5, "war": pytest.approx(0.5)}
    config = json.loads((folder / "config.json").read_text())
    assert config["parameters"]["scale"] == 2.5 and config["parameters"]["output_dir"] == str(folder.resolve())
    assert set(config["versions"]) >= {"femo", "torch", "mediapipe"}
    html = (folder / "01_good.html").read_text()
    assert "Test report" in html and "scale * 2" not in html  # code cells are excluded
    assert (folder / "01_good.ipynb").is_file()
    assert index == reports_dir / "2026-01-02_t" / "index.html"
    page = index.read_text()
    assert "../2026-01-02_01_good_t/01_good.html" in page and "UAR" in page and "0.500" in page

    again, index2 = execute.run_reports(notebooks_dir=notebooks, reports_dir=reports_dir, tag="t",
                                    day="2026-01-02", log=lambda *_: None)
    assert again[0].folder == reports_dir / "2026-01-02_01_good_t-2"
    assert index2 == reports_dir / "2026-01-02_t-2" / "index.html"
    assert json.loads((folder / "metrics.json").read_text())["war"] == pytest.approx(0.5)  # first run intact

    third, _ = execute.run_reports(notebooks_dir=notebooks, reports_dir=reports_dir, tag="t", overwrite=True,
                               day="2026-01-02", log=lambda *_: None)
    assert third[0].folder == folder
    assert json.loads((folder / "metrics.json").read_text())["war"] == pytest.approx(0.3)


def test_failing_cell_fails_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    notebooks = tmp_path / "notebooks"
    make_notebook(notebooks / "01_broken.ipynb", ["raise ValueError('planted failure 42')"])
    rc = cli.main(["report", "--notebooks-dir", str(notebooks), "--reports-dir", str(tmp_path / "r"),
                   "--tag", "x"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "ValueError: planted failure 42" in err
    assert "01_broken.ipynb" in err and str(tmp_path / "r") in err
    index = next((tmp_path / "r").glob("*_x/index.html")).read_text()
    assert "failed" in index and "planted failure 42" in index


def test_cli_refuses_bad_parameters_before_running(notebooks: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["report", "--notebooks-dir", str(notebooks), "--reports-dir", str(tmp_path / "r"),
                   "-p", "seed=abc"])
    assert rc == 2
    assert "parameter 'seed' expects int, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_headline_and_index_page() -> None:
    metrics = {"uar": 0.4123, "war": {"mean": 0.5, "per_fold": [0.5]}, "flagged": [{"attribute": "sex"}],
               "shapley_uar": {"face": 0.1, "audio": 0.25, "landmarks": -0.01},
               "region_share": {"overall": {"mouth": 0.6, "eyes": 0.4}}}
    assert index_page.headline(metrics) == {"UAR": "0.412", "WAR": "0.500", "flagged disparities": "1",
                                           "top modality": "audio (+0.250 UAR)", "top face region": "mouth (60%)"}
    page = index_page.index_html([
        {"name": "02_train", "error": "", "seconds": 12.0, "metrics": metrics, "html": "../a/02_train.html",
         "ipynb": "../a/02_train.ipynb", "metrics_json": "../a/metrics.json"},
        {"name": "04_bias_audit", "error": "KeyError: <x>", "seconds": 1.0, "metrics": {},
         "html": "../b/04_bias_audit.html", "ipynb": "../b/04.ipynb", "metrics_json": "../b/metrics.json"}],
        title="femo reports")
    assert "<a href='../a/02_train.html'>02_train</a>" in page
    assert "<dt>UAR</dt><dd>0.412</dd>" in page
    assert "KeyError: &lt;x&gt;" in page


def test_pipeline_skips_finished_stages_after_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from femo.commands import pipeline

    calls: list[str] = []
    broken = {"train"}

    def fake_stages(args, work, state):
        def make(name):
            def stage(clean):
                calls.append(name)
                if name in broken:
                    raise pipeline.StageError(f"`femo {name}` exited with status 2")
                return {"index": str(tmp_path / "index.html")} if name == "reports" else {"out": name}
            return stage
        return {name: make(name) for name in pipeline.STAGES}

    monkeypatch.setattr(pipeline, "_stages", fake_stages)
    argv = ["pipeline", "--workdir", str(tmp_path / "work")]
    assert cli.main(argv) == 1
    assert "stage train failed: `femo train` exited with status 2" in capsys.readouterr().err
    assert calls == ["data", "features", "embeddings", "train"]
    broken.clear()
    calls.clear()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert calls == ["train", "reports"]
    assert "[data] done earlier" in out and f"index page: {tmp_path / 'index.html'}" in out
    state = json.loads((tmp_path / "work" / "stages.json").read_text())
    assert list(state) == list(pipeline.STAGES) and state["features"]["out"] == "features"


def test_the_run_trained_by_02_goes_to_the_later_notebooks(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    train_body = ["from pathlib import Path\nrun = Path(output_dir) / 'run'\nrun.mkdir()\n(run / 'config.json').write_text('{}')",
                  "import femo.reports.figures\nfemo.reports.figures.write_metrics(output_dir, {'uar': 0.5})"]
    make_notebook(folder / "02_train.ipynb", train_body)
    make_notebook(folder / "03_use.ipynb", ["import femo.reports.figures\n"
                                            "femo.reports.figures.write_metrics(output_dir, {'seen_run': run_dir})"])
    reports, _ = execute.run_reports(notebooks_dir=folder, reports_dir=tmp_path / "reports", day="2026-12-01")
    assert [r.error for r in reports] == ["", ""]
    assert reports[1].metrics["seen_run"] == str((reports[0].folder / "run").resolve())
    explicit = tmp_path / "explicit_run"
    explicit.mkdir()
    (explicit / "config.json").write_text("{}")
    given, _ = execute.run_reports(notebooks_dir=folder, reports_dir=tmp_path / "reports", day="2026-12-01",
                                   run_dir=str(explicit), tag="given")
    assert given[1].metrics["seen_run"] == str(explicit.resolve())  # an explicit run wins


def _fake_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, calls: list) -> None:
    from femo.commands import pipeline

    def fake_stages(args, work, state):
        def make(name):
            def stage(clean):
                calls.append((name, clean))
                return {"index": str(tmp_path / "index.html")} if name == "reports" else {"out": name}
            return stage
        return {name: make(name) for name in pipeline.STAGES}

    monkeypatch.setattr(pipeline, "_stages", fake_stages)
    monkeypatch.setattr(pipeline, "_finish", lambda state, reports_dir: None)


def test_pipeline_reruns_stages_when_the_data_content_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Same tag, same --data path, edited manifest: no stage is reused, and the output says why."""
    calls: list = []
    _fake_pipeline(monkeypatch, tmp_path, calls)
    manifest = tmp_path / "mine" / "manifest.csv"
    manifest.parent.mkdir()
    (manifest.parent / "a.mp4").write_bytes(b"one")
    manifest.write_text("clip_id,path,label,subject\na,a.mp4,happy,s1\n")
    argv = ["pipeline", "--workdir", str(tmp_path / "work"), "--data", str(manifest)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"feature store {tmp_path / 'work' / 'store'}" in out and f"run folder {tmp_path / 'work' / 'run'}" in out
    calls.clear()
    assert cli.main(argv) == 0  # nothing changed: only the reports run again
    assert [c[0] for c in calls] == ["reports"] and "[data] done earlier" in capsys.readouterr().out
    calls.clear()
    (manifest.parent / "a.mp4").write_bytes(b"other media, same manifest text")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert [c for c in calls if c[0] != "reports"] == [(s, True) for s in ("data", "features", "embeddings", "train")]
    assert "[data] starting (the content of --data changed)" in out
    assert "[features] starting (an earlier stage was redone)" in out and "done earlier" not in out
    calls.clear()
    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text().replace("happy", "sad"))
    assert cli.main(["pipeline", "--workdir", str(tmp_path / "work"), "--data", str(other)]) == 0
    assert "[data] starting (its settings changed; the content of --data changed)" in capsys.readouterr().out
    assert [c[0] for c in calls][:4] == ["data", "features", "embeddings", "train"]


@pytest.mark.parametrize("tag", ["../x", ".hidden", "a/b", "a b", "", "x" * 65, "tag\n"])
def test_unsafe_report_tag_is_refused_before_anything_runs(notebooks: Path, tmp_path: Path, tag: str) -> None:
    with pytest.raises(nb_checks.ReportError, match="--tag"):
        execute.run_reports(notebooks_dir=notebooks, reports_dir=tmp_path / "reports", tag=tag)
    assert not (tmp_path / "reports").exists()


def test_safe_tags_are_accepted() -> None:
    for tag in ("demo", "run-2", "fold_1", "v1.2", "DFEW"):
        assert nb_checks.check_tag(tag) == tag


@pytest.mark.parametrize("key, make", [
    ("data", lambda tmp: Path("/etc/passwd")),
    ("data", lambda tmp: tmp),  # a folder that is neither a store nor holds manifest.csv
    ("run_dir", lambda tmp: tmp),
])
def test_data_and_run_parameters_are_checked_before_any_kernel(notebooks: Path, tmp_path: Path, monkeypatch,
                                                               key: str, make) -> None:
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    value = make(tmp_path)
    with pytest.raises(nb_checks.ReportError, match=rf"{key}={value}: (not a|neither)"):
        execute.run_reports(notebooks_dir=notebooks, reports_dir=tmp_path / "reports", **{key: str(value)})
    assert not (tmp_path / "reports").exists()


def test_kernel_warnings_do_not_reach_the_terminal(tmp_path: Path) -> None:
    """ipykernel's TCP warning, tqdm's and setuptools' warnings are dropped; cell errors still fail the report."""
    import subprocess
    import sys

    folder = tmp_path / "notebooks"
    body = ["import warnings\nwarnings.warn('pkg_resources is deprecated as an API', DeprecationWarning)\n"
            "from tqdm.auto import tqdm\nprint('visible', file=__import__('sys').stderr)"] + GOOD_BODY
    path = make_notebook(folder / "01_noisy.ipynb", body)
    raw = json.loads(path.read_text())
    for cell in raw["cells"]:
        cell.pop("id", None)  # an older notebook: nbformat warns in the driver's own process
    path.write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-m", "femo", "report", "--notebooks-dir", str(folder),
                           "--reports-dir", str(tmp_path / "reports")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "visible" in done.stderr  # the notebook's own stderr still shows
    for noise in ("without encryption", "DeprecationWarning", "TqdmWarning", "IProgress", "warnings.warn",
                  "MissingIDFieldWarning", "_validate("):
        assert noise not in done.stderr + done.stdout, noise


def test_data_fingerprint_follows_content_not_names(tmp_path: Path) -> None:
    from femo.data.fingerprint import data_fingerprint

    root = tmp_path / "DFEW"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "1.mp4").write_bytes(b"a")
    before = data_fingerprint(root)
    assert before == data_fingerprint(str(root)) and len(before) == 16 and data_fingerprint("") == ""
    (root / "clips" / "2.mp4").write_bytes(b"b")  # a dataset root: any added or changed file counts
    assert data_fingerprint(root) != before
    manifest = tmp_path / "m.csv"
    manifest.write_text("clip_id,path,label,subject\na,DFEW/clips/1.mp4,happy,s\n")
    first = data_fingerprint(manifest)
    manifest.with_name("m.meta.json").write_text('{"classes": ["happy", "sad"]}')  # the sidecar is content too
    assert data_fingerprint(manifest) != first
