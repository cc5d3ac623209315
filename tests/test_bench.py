"""``latentdask bench``: every subcommand at tiny sizes through the CLI, the agreement checks that
gate its ratios, ``bench all`` and ``bench readme``; the baselines' kernels against plain references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentdask.bench.report import BenchReport
from latentdask.bench.tables import BEGIN, END, bench_table
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

BENCHES = ("decode", "train", "encode", "stats", "knn", "render", "gmm", "overhead")


def tiny_command(name: str) -> list[str]:
    """The command ``bench all --scale tiny`` records for a benchmark (so the test runs it as printed)."""
    from latentdask.bench.suite import command, sizes

    words = command(name, sizes(name, "tiny")).split()
    assert words[:3] == ["latentdask", "bench", name]
    return words[1:]


@pytest.fixture(scope="module")
def suite_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bench all --scale tiny``, run once: every benchmark's report, each from the command it prints."""
    out = tmp_path_factory.mktemp("all") / "bench.json"
    result = run_cli("bench", "all", "--scale", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def suite(suite_json: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(suite_json.read_text())
    return loaded


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["rows"]}


def assert_checked(report: dict[str, Any], baselines: int) -> None:
    """Every baseline checked and agreeing; every ratio the speed-up its two rows' values give."""
    by_name = rows(report)
    checked = [row for row in report["rows"] if row["kind"] == "baseline"]
    assert len(checked) == baselines
    for row in checked:
        assert row["check"], row["name"]
        assert row["agrees"] is True, row["check"]
        assert all(c["agrees"] and c["difference"] <= c["tolerance"] for c in row["check"].values())
    assert report["agrees"] is True
    for row in report["rows"]:
        for other, ratio in row["ratios"].items():
            theirs = by_name[other]
            assert theirs["kind"] in ("baseline", "bound")
            expected = (
                theirs["value"] / row["value"] if row["unit"] == "s" else row["value"] / theirs["value"]
            )
            assert ratio == pytest.approx(expected)


def test_bench_decode(suite: dict[str, Any]) -> None:
    report = suite["benches"]["decode"]
    assert report["setup"]["images"] == 20
    assert_checked(report, baselines=1)
    by_name = rows(report)
    check = by_name["plain PIL loop"]["check"]
    assert check["pixels against a full decode: largest |difference|"]["difference"] == 0.0
    for name in ("latentdask decode (draft)", "latentdask decode (no draft)"):
        assert list(by_name[name]["ratios"]) == ["plain PIL loop"]


def test_bench_train(suite: dict[str, Any]) -> None:
    report = suite["benches"]["train"]
    assert report["setup"]["steps"] == 2
    assert [row["name"] for row in report["rows"]] == ["training", "encoder forward (inference)"]
    assert all(row["value"] > 0 and row["kind"] == "latentdask" for row in report["rows"])
    assert_checked(report, baselines=0)


def test_bench_encode(suite: dict[str, Any]) -> None:
    """Per decoder: the decoder alone, the ceiling, both loops decoding with it (checked against its
    pipeline's latents) and the pipeline compared with those three."""
    report = suite["benches"]["encode"]
    assert_checked(report, baselines=4)
    by_name = rows(report)
    for decoder in ("pil", "opencv"):
        mine = {name: row for name, row in by_name.items() if name.startswith(f"{decoder}: ")}
        kinds = sorted(row["kind"] for row in mine.values())
        assert kinds == ["baseline", "baseline", "bound", *["latentdask"] * 5], kinds
        decode_only = [name for name in mine if "decode only" in name]
        assert len(decode_only) == 3 and all(by_name[name]["value"] > 0 for name in decode_only)
        pipeline = mine[f"{decoder}: latentdask encode: 2 worker(s) x torch 1 + decode 1 threads"]
        compared = [by_name[other] for other in pipeline["ratios"]]
        assert len(compared) == 3 and all(row["name"].startswith(f"{decoder}: ") for row in compared)
        multi = next(row for row in compared if "multi-process loop" in row["name"])
        assert "Zarr on disk" in multi["name"] and multi["check"]


def test_bench_stats(suite: dict[str, Any]) -> None:
    report = suite["benches"]["stats"]
    assert_checked(report, baselines=4)
    by_name = rows(report)
    total = by_name["fused, total (both passes)"]
    baselines = [row["name"] for row in report["rows"] if row["kind"] == "baseline"]
    assert sorted(total["ratios"]) == sorted(baselines)
    # the profile of pass 1: four parts timed apart, and the rest; pass 2 beside a bare read pass
    estimated = [row["value"] for name, row in by_name.items() if name.startswith("fused pass 1, estimated")]
    assert len(estimated) == 4 and all(seconds > 0 for seconds in estimated)
    assert "fused pass 1, the rest: scheduling, transfer, merging, imbalance" in by_name
    assert list(by_name["fused pass 2: radii about the mean"]["ratios"]) == [
        "bound: a bare read pass over the store (no figure)"
    ]
    whole = next(
        row for name, row in by_name.items() if name.startswith("latentdask stats, the whole command")
    )
    assert whole["value"] > 0 and list(whole["ratios"]) == [
        "numpy in RAM, all pairs, compute only (load excluded)"
    ]
    for name in baselines:
        figures = " ".join(rows(report)[name]["check"])
        assert "histograms" in figures and "slice counts" in figures
        assert "covariance" in figures or "correlation" in figures


def test_bench_knn(suite: dict[str, Any]) -> None:
    report = suite["benches"]["knn"]
    assert_checked(report, baselines=1)
    # the baseline runs the tasks' library on as many threads as the search's workers have
    assert report["setup"]["blas_threads_baseline"] == report["setup"]["workers"] == 2
    assert report["setup"]["blas_threads_per_task_worker"] == [1]
    assert report["setup"]["query_batch"] == 256


def test_bench_gmm(suite: dict[str, Any]) -> None:
    report = suite["benches"]["gmm"]
    assert_checked(report, baselines=1)
    (baseline,) = (row for row in report["rows"] if row["kind"] == "baseline")
    assert set(baseline["check"]) == {
        "weights after one iteration",
        "means after one iteration",
        "covariances after one iteration",
    }
    assert report["setup"]["blas_threads_baseline"] == report["setup"]["workers"] == 2


def test_bench_render(suite: dict[str, Any]) -> None:
    report = suite["benches"]["render"]
    assert_checked(report, baselines=2)
    zoom = next(row for row in report["rows"] if row["name"].startswith("dashboard zoom"))
    (baseline,) = zoom["ratios"]
    assert "on 2 threads" in baseline and "2 workers" in zoom["name"]  # the same cores


def test_bench_serve(tmp_path: Path) -> None:
    """Not in ``bench all`` (it needs 20 GB at its size): run small, its three baselines agree."""
    out = tmp_path / "serve.json"
    args = ("--n", "30000", "--dim", "12", "--chunk-rows", "4096", "--repeats", "1", "--json", str(out))
    result = run_cli("bench", "serve", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert_checked(report, baselines=3)
    lasso = next(row for row in report["rows"] if row["name"].startswith("dashboard: a lasso"))
    (baseline,) = lasso["ratios"]
    assert "on 2 threads" in baseline  # the same cores as the two workers
    assert 0.1 < report["setup"]["lasso share"] < 0.9


def test_bench_overhead(suite: dict[str, Any]) -> None:
    report = suite["benches"]["overhead"]
    assert_checked(report, baselines=0)
    imports, stats, resume = report["rows"]
    assert imports["kind"] == "bound" and "import latentdask" in imports["name"]
    assert "stats of 200 x 8" in stats["name"] and "--resume, 20 images" in resume["name"]
    # whole commands, start-up included: never faster than the imports they need
    assert stats["value"] > imports["value"] > 0 and resume["value"] > imports["value"]


def test_bench_options_default_to_the_functions_defaults() -> None:
    """`bench <name>` with no options runs what `bench all` runs at its default scale."""
    import typer

    from latentdask.bench.suite import sizes
    from latentdask.cli import app

    group: Any = typer.main.get_command(app)
    benches = group.get_command(None, "bench")
    for name in BENCHES:
        options = {param.name: param.default for param in benches.get_command(None, name).params}
        for key, value in sizes(name, "default").items():
            if key in ("layouts", "decoders"):
                assert options[key[:-1]] is None  # None: the function's own layouts and decoders
            else:
                assert options[key] == value, (name, key)


@pytest.mark.parametrize("name", BENCHES)
def test_each_bench_command_runs_its_function_with_the_sizes_it_prints(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``latentdask bench <name>``, as ``bench all`` prints it, gives its function exactly the
    sizes ``bench all`` ran it with (the reports themselves come from ``bench all``, run once)."""
    import importlib

    from typer.testing import CliRunner

    from latentdask.bench.suite import BENCHES as FUNCTIONS
    from latentdask.bench.suite import sizes
    from latentdask.cli import app

    given: dict[str, Any] = {}

    def record(**arguments: Any) -> BenchReport:
        given.update(arguments)
        report = BenchReport(name)
        report.add("recorded", 1.0, "s")
        return report

    module, function = FUNCTIONS[name].split(":")
    monkeypatch.setattr(importlib.import_module(module), function, record)
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(app, [*tiny_command(name), "--json", str(out)])
    assert result.exit_code == 0, result.output
    expected = sizes(name, "tiny")
    assert {key: given[key] for key in expected} == expected
    report = json.loads(out.read_text())
    assert report["latentdask"]["kind"] == "benchmark" and report["rows"][0]["name"] == "recorded"


def test_bench_all_tiny(suite_json: Path) -> None:
    suite = json.loads(suite_json.read_text())
    assert suite["latentdask"]["kind"] == "benchmark"
    assert suite["scale"] == "tiny" and suite["agrees"] is True
    assert suite["date"].endswith("+00:00")
    assert {"cpu", "cores", "ram_gib", "gpu", "platform"} <= set(suite["machine"])
    assert suite["machine"]["cores"] >= 1 and suite["machine"]["ram_gib"] > 0
    for package in ("python", "numpy", "dask", "distributed", "zarr", "torch", "datashader", "latentdask"):
        assert suite["versions"][package][0].isdigit(), package
    assert list(suite["benches"]) == list(BENCHES)
    for name, report in suite["benches"].items():
        assert report["command"].startswith(f"latentdask bench {name} ")
        assert report["agrees"] is True
        assert report["seconds"] >= 0 and report["rows"]
    assert suite["benches"]["stats"]["sizes"]["n"] == 20_000
    assert "--layout 2,1,1" in suite["benches"]["encode"]["command"]


def test_bench_readme_replaces_only_between_markers(suite_json: Path, tmp_path: Path) -> None:
    head = "# Project\n\nProse before | with a pipe.\n\n## Benchmarks\n\nShort prose.\n\n"
    tail = "\n\nProse after the tables.\n\n## Layout\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{head}{BEGIN}\nold figures\n{END}{tail}")
    result = run_cli("bench", "readme", str(suite_json), "--readme", str(readme))
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith(f"{head}{BEGIN}\n") and text.endswith(f"\n{END}{tail}")
    between = text[len(head) + len(BEGIN) : -len(END) - len(tail)]
    assert "old figures" not in between
    assert "--scale tiny" in between  # a tiny run says so
    suite = json.loads(suite_json.read_text())
    for name, report in suite["benches"].items():
        assert f"Reproduce: `{report['command']}`" in between, name
    assert between.count(suite["date"]) == len(BENCHES)  # every table says where it came from
    assert between.count(suite["machine"]["cpu"]) == len(BENCHES)
    assert between.count(f"datashader {suite['versions']['datashader']}") == len(BENCHES)


def test_bench_readme_needs_its_markers(suite_json: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{END}\n{BEGIN}\n")
    result = run_cli("bench", "readme", str(suite_json), "--readme", str(readme))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {readme} needs one {BEGIN} line followed by one {END} line"
    ]
    assert readme.read_text() == f"# Project\n\n{END}\n{BEGIN}\n"


# ---------------------------------------------------------------------------- the agreement gate


def disagreeing_report() -> BenchReport:
    report = BenchReport("gate")
    report.add("baseline in RAM", 4.0, "s", kind="baseline")
    report.check("baseline in RAM", "counts: largest |difference|", 3, 0)
    report.add("good baseline", 8.0, "s", kind="baseline")
    report.check("good baseline", "counts: largest |difference|", 0, 0)
    report.add("latentdask", 2.0, "s", vs=["baseline in RAM", "good baseline"])
    return report


def test_a_baseline_that_disagrees_withholds_its_ratio() -> None:
    payload = disagreeing_report().payload()
    assert payload["agrees"] is False
    by_name = rows(payload)
    assert by_name["baseline in RAM"]["agrees"] is False
    assert by_name["latentdask"]["ratios"] == {"baseline in RAM": None, "good baseline": 4.0}
    (line,) = disagreeing_report().disagreements()
    assert "'baseline in RAM' does not compute latentdask's figures" in line and "3 > 0" in line
    table = bench_table("gate", payload | {"command": "latentdask bench gate", "seconds": 1.0}, "")
    assert "withheld: #1 does not compute the same figures" in table
    assert "**4.00×** vs #2" in table
    assert "**NO**: counts: largest |difference| 3 > 0" in table


def test_an_unchecked_baseline_counts_as_disagreeing() -> None:
    report = BenchReport("unchecked")
    report.add("baseline", 1.0, "images/s", kind="baseline")
    report.add("latentdask", 3.0, "images/s", vs=["baseline"])
    assert report.ratio(report.row("latentdask"), "baseline") is None
    assert "never checked" in report.disagreements()[0]


def test_the_cli_exits_1_when_a_baseline_disagrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import latentdask.bench.decode
    from latentdask.cli import app

    def measure(**options: object) -> BenchReport:
        return disagreeing_report()

    monkeypatch.setattr(latentdask.bench.decode, "bench_decode", measure)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "decode", "--json", str(out)])
    assert result.exit_code == 1
    assert "error: a baseline does not compute latentdask's figures" in result.output
    assert json.loads(out.read_text())["agrees"] is False  # saved all the same


# ---------------------------------------------------------------------------- the baselines' kernels


def test_block_histograms_bin_as_np_histogram() -> None:
    from latentdask.bench.stats_baselines import block_histograms
    from latentdask.stats.options import SummaryParams

    edges = SummaryParams().edges
    x = (np.random.default_rng(0).standard_normal((3000, 5)) * 4).astype(np.float32)
    # edges, a hair below an edge and below zero, the outer edges, outside both ways
    x[:8, 0] = [0.0, -1e-30, np.nextafter(np.float32(0.125), np.float32(0)), 0.125, -16, 16, -17, 30]
    expected = np.stack([np.histogram(x[:, j], bins=edges)[0] for j in range(5)])
    np.testing.assert_array_equal(block_histograms(x, edges), expected)


def test_pair_populations_count_as_a_mask_per_pair() -> None:
    from latentdask.bench.stats_baselines import pair_populations

    x = (np.random.default_rng(1).standard_normal((4000, 7)) * 1.3).astype(np.float32)
    x[0] = 1.5  # on the threshold: outside
    thresholds = np.array([1.5, 2.0])
    populations = pair_populations(x, thresholds)
    for k, t in enumerate(thresholds):
        for a in range(7):
            for b in range(7):
                others = [j for j in range(7) if j not in (a, b)]
                expected = 0 if a == b else int((np.abs(x[:, others]) < t).all(axis=1).sum())
                assert populations[k, a, b] == expected


def test_brute_force_finds_the_nearest_distance() -> None:
    from latentdask.bench.knn import brute_force_numpy

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 6)).astype(np.float32)
    queries = rng.standard_normal((300, 6)).astype(np.float32)
    expected = np.sqrt(((queries[:, None].astype(np.float64) - x[None]) ** 2).sum(axis=2).min(axis=1))
    np.testing.assert_allclose(brute_force_numpy(x, queries, 128, 64), expected, rtol=1e-12)


def test_the_gpu_statistics_baseline_computes_latentdasks_figures() -> None:
    """bench stats --device cuda's torch baseline, run here on CPU tensors: every count equal,
    moments to float64 rounding (on the GPU the bench checks the same)."""
    import torch

    from latentdask.bench.gpu import COUNT_FIGURES, MOMENT_TOLERANCE, latentdask_figures, torch_summary
    from latentdask.bench.report import count_difference, relative_difference
    from latentdask.stats.options import SummaryParams
    from latentdask.stats.summary import summary_chunk, summary_combine

    params = SummaryParams()
    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.25, 0.75, 32)  # a few components outside ±1.5 per row: every slice populated
    blocks = [torch.randn(3000, 32, generator=generator) * scale + 0.1 for _ in range(3)]
    ours = latentdask_figures(summary_combine([summary_chunk(block, params=params) for block in blocks]))
    theirs = torch_summary(blocks, params)
    assert set(ours) == set(theirs)
    assert min(int(theirs[name].sum()) for name in ("n0", "c1", "c2")) > 0
    for name, values in theirs.items():
        if name in COUNT_FIGURES:
            assert count_difference(ours[name], values) == 0, name
        else:
            assert relative_difference(ours[name], values) <= MOMENT_TOLERANCE, name
