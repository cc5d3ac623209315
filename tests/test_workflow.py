"""Workflows as a user runs them: the CLI in a subprocess, real files, real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr

from latentdask.cluster.spec import ClusterChoice, ConfigError
from latentdask.workflow.spec import expand_matrix, load_workflow

pytestmark = pytest.mark.e2e

TINY = """
name: tiny
run_dir: {run_dir}
cluster: {spec}
dataset:
  synthetic: {{n: {n}, seed: 1}}
model: {{image_size: 16, latent_dim: 8, channels: [4, 4], batch_norm: true}}
train: {{epochs: 1, batch_size: 16, device: cpu}}
encode: {{shard_size: {shard_size}, device: cpu}}
stats: {{thresholds: [1.5]}}
generate:
  n: 50
  samplers: [{{name: uniform, b: 1.5}}, {{name: mvn, label: full-gaussian}}, {{name: gmm, components: 2}}]
render:
  {{pairs: [corr:1], top_correlated: 4, pcs: 3, slice: 1.5, slice_ranked: 1, width: 300, overlay: [uniform]}}
"""


def write_workflow(tmp_path: Path, *, n: int = 80, shard_size: int = 30) -> Path:
    spec = tmp_path / "two.yaml"
    spec.write_text("kind: local\nworkers: 2\n")
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(run_dir=tmp_path / "run", spec=spec, n=n, shard_size=shard_size))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latentdask.cli", "run", *args], capture_output=True, text=True, timeout=600
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())


def counted_run(workflow: Path, script: Path) -> subprocess.CompletedProcess[str]:
    """``latentdask run WORKFLOW`` with every LocalCluster it starts counted (:data:`COUNTED_RUN`)."""
    script.write_text(COUNTED_RUN)
    return subprocess.run(
        [sys.executable, str(script), str(workflow)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The tiny study, run once with the local clusters it starts counted: its workflow, the run."""
    folder = tmp_path_factory.mktemp("tiny")
    workflow = write_workflow(folder)
    return workflow, counted_run(workflow, folder / "counted.py")


def test_run_skip_and_redo_after_a_change(tiny_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """A run computes every step on one cluster; run again, it skips every step and starts none; a
    changed parameter redoes its step and those after it."""
    workflow, first = tiny_run
    assert first.returncode == 0, first.stderr
    assert first.stderr.rstrip().endswith("local clusters started: 1")
    folder = workflow.parent / "run"
    for output in (
        "data/SYNTHETIC.json",
        "model/model.safetensors",
        "latents.zarr/zarr.json",
        "latents-stats.zarr/zarr.json",
        "latents-stats.json",
        "run.json",
        "points/uniform.zarr/z/zarr.json",
        "points/full-gaussian.zarr/z/zarr.json",
        "points/gmm-gmm.zarr/zarr.json",
        "points/gmm.zarr/z/zarr.json",
        "fit-stats.zarr/zarr.json",
        "scores.json",
        "grids/samplers.png",
        "grids/face_rate.json",
        "normality.json",
        "normality-qq.png",
        "projections/render.json",
        "projections/top-correlated.png",
        "projections/pcs.png",
        "projections/slices-1.5.png",
    ):
        assert (folder / output).exists(), output
    record = json.loads((folder / "run.json").read_text())
    steps = (
        "synth",
        "train",
        "encode",
        "normality",
        "fit",
        "generate",
        "score",
        "decode",
        "render",
        "report",
    )
    assert [record["steps"][s]["status"] for s in steps] == ["done"] * len(steps)
    assert json.loads((folder / "normality.json").read_text())["mahalanobis_qq"]["vectors"] == 80
    scores = json.loads((folder / "scores.json").read_text())
    fitted = json.loads((folder / "fit-stats.json").read_text())["count"]
    assert scores["fit"] == "valid rows; split=train" and scores["fit_rows"] == fitted < 80
    assert scores["heldout_rows"] == 80 - fitted and scores["heldout_rows_in_fit"] == 0
    rates = json.loads((folder / "grids" / "face_rate.json").read_text())
    assert set(rates["sets"]) == {"uniform (uniform.zarr)", "mvn (full-gaussian.zarr)", "gmm (gmm.zarr)"}
    assert rates["reference"]["real reconstructions"]["images"] == 80
    assert json.loads((folder / "latents-stats.json").read_text())["count"] == 80
    page = (folder / "report.html").read_text()
    for section in (
        "Training curve",
        "Dominant components",
        "Slice populations",
        "Radii",
        "Normality",
        "top-correlated",
        "Face rate",
        "uniform (uniform.zarr)",
    ):
        assert section in page, section
    assert page.count("data:image/png;base64,") >= 8  # every figure embedded: the file stands alone
    for end, populations in (
        (end, json.loads((folder / "latents-stats.json").read_text())["slice_populations"]["1.5"])
        for end in ("smallest", "largest")
    ):  # ties listed by index are said to be ties
        tie = f"{populations[end + '_ties']:,} pairs share the {end} population"
        assert (tie in page) == (populations[end + "_ties"] > 6), end
    assert "http://" not in page and "https://" not in page and "<script" not in page
    rendered = json.loads((folder / "projections" / "render.json").read_text())
    assert (
        rendered["projections"][0]["shown"] == 80 and rendered["projections"][0]["note"] == "rank 1 by corr"
    )

    again = counted_run(workflow, workflow.parent / "counted.py")
    assert again.returncode == 0, again.stderr
    assert said(again).count("done earlier with the same parameters, skipped") == len(steps)
    assert again.stderr.rstrip().endswith("local clusters started: 0")  # every step done: no cluster at all

    changed = run(str(workflow), "--set", "train.epochs=2")
    assert changed.returncode == 0, changed.stderr
    text = said(changed)
    assert "synth: done earlier" in text and "train: running" in text and "encode: running" in text
    assert "generate: running" in text and "score: running" in text
    scores = json.loads((folder / "scores.json").read_text())
    assert set(scores["sets"]) == {
        "real (held out)",
        "uniform (uniform.zarr)",
        "mvn (full-gaussian.zarr)",
        "gmm (gmm.zarr)",
    }
    assert json.loads((folder / "run.json").read_text())["steps"]["train"]["params"]["train"]["epochs"] == 2


#: how wide the page is, and every element whose content is wider than its box (shown past it, or
#: hidden behind a scroll bar)
FITS = """() => ({
  page: document.documentElement.scrollWidth,
  clipped: [...document.querySelectorAll("body *")]
    .filter((e) => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map((e) => `${e.tagName} ${e.scrollWidth} px in ${e.clientWidth}: ${e.textContent.slice(0, 60)}`),
})"""


@pytest.mark.browser
def test_the_report_fits_windows_1000_and_1600_px_wide(
    tiny_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """report.html in Chromium: no part wider than the window, no table or text box cut or scrolled."""
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard import launch, needs_chromium

    needs_chromium()
    report = tiny_run[0].parent / "run" / "report.html"
    with sync_playwright() as playwright:
        browser = launch(playwright)
        for width in (1000, 1600):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(report.as_uri())
            fits = page.evaluate(FITS)
            assert fits["page"] <= width and fits["clipped"] == [], (width, fits)
        browser.close()


def test_killed_run_finishes_when_run_again(tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path, n=400, shard_size=20)
    command = [sys.executable, "-m", "latentdask.cli", "run", str(workflow)]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = tmp_path / "run" / "latents.zarr"
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = int(zarr.open_array(str(store / "shard_done"), mode="r")[:].sum())
        except FileNotFoundError:
            done = 0
        if done >= 2:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = int(zarr.open_array(str(store / "shard_done"), mode="r")[:].sum())
    assert 2 <= finished < 20, "the run was not killed during encode"
    resumed = run(str(workflow))
    assert resumed.returncode == 0, resumed.stderr
    text = said(resumed)
    assert "synth: done earlier" in text and "train: done earlier" in text and "encode: continuing" in text
    assert f"({finished} already done, 20 in all)" in text
    assert zarr.open_array(str(store / "shard_done"), mode="r")[:].all()


SYNTH = "name: x\ndataset: {synthetic: {n: 5}}\n"


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ("name: x\ndataset: {synthetic: {n: 5}}\nmodle: {}\n", [], "field 'modle': Extra inputs"),
        ("name: x\ndataset: {synthetic: {n: five}}\n", [], "field 'dataset.synthetic.n'"),
        ("name: x\ndataset: {root: /d, synthetic: {n: 5}}\n", [], "exactly one of 'root'"),
        ("name: x\ndataset: {synthetic: {n: 5}}\n", ["train.epochs"], "--set expects key=value"),
        ("name: x\ndataset: {synthetic: {n: 5}}\n", ["train.epochs=0"], "field 'train.epochs'"),
        ("name: x\ndataset: {synthetic: {n: 5}}\nstats: {bin_width: 0.3}\n", [], "whole number of bins"),
        ("- just\n- a list\n", [], "expected a mapping"),
        ("name: x\ndataset: {synthetic: {n: 5}}\ncluster: {kind: local, wrkers: 2}\n", [], "field 'cluster"),
        (
            "name: x\ndataset: {synthetic: {n: 5}}\nrender: {overlay: [uniform]}\n",
            [],
            "not among generate's samplers",
        ),
        ("name: x\ndataset: {synthetic: {n: 5}}\nrender: {how: linear}\n", [], "field 'render.how'"),
        # a sampler's label names its points' folder in the run: one safe component, never a path
        *(
            (
                f"{SYNTH}generate: {{samplers: [{{name: uniform, label: '{bad}'}}]}}\n",
                [],
                "samplers.0.label",
            )
            for bad in ("../../../escaped", "/tmp/abs", "..", "a/b")
        ),
    ],
)
def test_invalid_workflows_name_file_and_field(
    tmp_path: Path, content: str, overrides: list[str], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_workflow(path, overrides)


def test_invalid_workflow_from_the_cli_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: {synthetic: {n: 5}}\nencode: {shard_size: -1}\n")
    result = run(str(path))
    assert result.returncode == 2
    assert "bad.yaml: field 'encode.shard_size'" in said(result) and "Traceback" not in result.stderr
    assert not (Path("runs") / "x").exists()


def test_sweep_runs_every_combination_and_reports_them_side_by_side(tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path, n=60)
    workflow.write_text(
        workflow.read_text().replace("name: tiny", "name: tiny\nmatrix: {model.latent_dim: [4, 8]}")
    )
    result = run(str(workflow))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "run"
    for label, dim in (("latent_dim-4", 4), ("latent_dim-8", 8)):
        assert (
            json.loads((folder / label / "model" / "config.json").read_text())["model"]["latent_dim"] == dim
        )
        assert (folder / label / "report.html").is_file()
        assert not (folder / label / "data").exists()  # the faces are made once for every run
    assert json.loads((folder / "data" / "SYNTHETIC.json").read_text())["n"] == 60
    page = (folder / "report.html").read_text()
    assert 'href="latent_dim-4/report.html"' in page and 'href="latent_dim-8/report.html"' in page
    assert "data:image/png;base64," in page and "sweep tiny: 2 runs side by side" in said(result)
    # the linear CKA between the two models' latent spaces, in the sweep folder and on its page
    cka = json.loads((folder / "cka.json").read_text())
    assert cka["latentdask"]["kind"] == "sweep-cka" and cka["runs"] == ["latent_dim-4", "latent_dim-8"]
    (same, across), (back, other) = cka["linear_cka"]
    assert same == other == 1.0 and across == back and 0 < across < 1
    assert "Linear CKA between the runs" in page and f"{across:.4g}" in page
    assert "linear CKA between every two of the 2 runs' latent spaces" in said(result)
    from typing import NoReturn

    from latentdask.workflow.run import sweep_cka
    from latentdask.workflow.steps import Connection

    class NoCluster(Connection):
        @property
        def client(self) -> NoReturn:
            raise AssertionError("the CKA of unchanged encodes was computed again")

    runs = [folder / "latent_dim-4", folder / "latent_dim-8"]
    assert sweep_cka(folder, runs, NoCluster(ClusterChoice())) == folder / "cka.json"  # skipped


def test_shipped_workflows_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent / "workflows"
    demo = load_workflow(root / "demo.yaml")
    assert demo.model.latent_dim == 256 and demo.dataset.synthetic is not None
    celeba = load_workflow(root / "celeba.yaml", ["dataset.root=/data/celeba"])
    assert celeba.dataset.root == Path("/data/celeba") and celeba.stats.thresholds[0] == 1.5
    assert celeba.render.slice == 1.5 and "smallest-slice:1" in celeba.render.pairs
    sweep = expand_matrix(load_workflow(root / "sweep.yaml"))
    assert len(sweep) == 6 and {(w.model.latent_dim, w.model.batch_norm) for w in sweep} == {
        (dim, bn) for dim in (64, 128, 256) for bn in (True, False)
    }
    assert all(w.data_dir == Path("runs/sweep/data") for w in sweep)


def test_bad_matrix_names_file_and_combination(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: {synthetic: {n: 5}}\nmatrix: {model.latnt_dim: [4]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml \(matrix latnt_dim-4\): field 'model.latnt_dim'"):
        expand_matrix(load_workflow(path), path)
    path.write_text("name: x\ndataset: {synthetic: {n: 5}}\nmatrix: {model.latent_dim: []}\n")
    with pytest.raises(ConfigError, match=r"matrix\.model\.latent_dim lists no values"):
        expand_matrix(load_workflow(path), path)


def test_inline_cluster_spec_scaled_with_set(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: x\ndataset: {synthetic: {n: 5}}\ncluster: {kind: local, workers: 1}\n")
    workflow = load_workflow(path, ["cluster.workers=3"])
    spec = ClusterChoice(spec=workflow.cluster).resolve()
    assert spec.kind == "local" and spec.workers == 3


#: ``latentdask run`` with every LocalCluster it starts counted (printed last, on stderr)
COUNTED_RUN = """
import sys

import distributed

import latentdask.cluster.connect

started = []


class CountedLocalCluster(distributed.LocalCluster):
    def __init__(self, *args, **kwargs):
        started.append(1)
        super().__init__(*args, **kwargs)


if __name__ == "__main__":  # not in the workers, which import this module
    latentdask.cluster.connect.LocalCluster = CountedLocalCluster
    from latentdask.cli import app

    try:
        app(["run", *sys.argv[1:]])
    finally:
        print(f"local clusters started: {len(started)}", file=sys.stderr)
"""
