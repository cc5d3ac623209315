"""Nothing a user owns is lost: outputs replace only the command's own earlier output, never an input.

Each command runs as a user runs it (a subprocess of the real CLI, real files); the
truth is the user's file, byte for byte, after the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from latentdask.output import (
    OutputError,
    check_output,
    owned_output,
    read_record,
    remove_leftovers,
    save_png,
    write_json,
)
from tests.helpers import TINY_TRAIN
from tests.helpers import run_cli as run


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def precious(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    return folder


def intact(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["thesis.txt"] and (
        (folder / "thesis.txt").read_text() == "three years of work"
    )


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("points") / "v.zarr"
    result = run("synth-latents", str(out), "--n", "3000", "--dim", "32", "--chunk-rows", "1000")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def stats(points: Path) -> Path:
    out = points.with_name("v-stats.zarr")
    result = run("stats", str(points), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_stats_never_replaces_a_folder_it_did_not_make(points: Path, tmp_path: Path) -> None:
    mine = precious(tmp_path / "p")
    line = one_error_line(run("stats", str(points), "--out", str(mine)))
    assert "is not a latentdask output; refusing to replace it" in line
    assert intact(mine)
    # stats.json beside it is checked too: p.zarr is free, p.json is someone's
    (tmp_path / "q.json").write_text('{"mine": 1}')
    line = one_error_line(run("stats", str(points), "--out", str(tmp_path / "q.zarr")))
    assert "q.json exists and is not a latentdask output" in line
    assert (tmp_path / "q.json").read_text() == '{"mine": 1}' and not (tmp_path / "q.zarr").exists()


def test_an_output_may_not_be_or_hold_its_input(points: Path, stats: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in points.rglob("*"))
    line = one_error_line(run("stats", str(points), "--out", str(points)))
    assert "is the input" in line
    line = one_error_line(run("stats", str(points), "--out", str(points.parent)))
    assert "contains the input" in line
    line = one_error_line(run("render", str(points), "--stats", str(stats), "--out", str(points.parent)))
    assert "contains the input" in line
    # nor lie inside it: the statistics would be written into the input store's own folder
    line = one_error_line(run("stats", str(points), "--out", str(points / "sub.zarr")))
    assert "lies inside the input" in line
    assert sorted(p.name for p in points.rglob("*")) == before


def test_stats_replaces_its_own_output_and_cleans_leftovers(points: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    assert run("stats", str(points), "--out", str(out)).returncode == 0
    first = read_record(out)
    assert first is not None and first["kind"] == "stats"
    assert read_record(tmp_path / "s.json") == json.loads((tmp_path / "s.json").read_text())["latentdask"]
    # a run killed while writing left its temporary folder (its process is gone)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leftover = out.parent / f".s.zarr.latentdask-{_host()}-{int(gone.stdout)}-0123abcd"
    leftover.mkdir()
    alive = out.parent / f".s.zarr.latentdask-{_host()}-{os.getpid()}-0123abcd"  # a run still going on
    alive.mkdir()
    result = run("stats", str(points), "--out", str(out), "--bin-width", "0.25")
    assert result.returncode == 0, result.stderr
    assert zarr.open_group(str(out), mode="r")["hist"].shape[1] == 128  # the new result: 32 / 0.25 bins
    assert not leftover.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "s.json", "s.zarr"])


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())


def test_train_refuses_before_training(faces: Path, tmp_path: Path) -> None:
    args = TINY_TRAIN
    listing = sorted(p.name for p in faces.rglob("*"))
    line = one_error_line(run("train", str(faces), "--out", str(faces), *args))
    assert "is the input" in line
    mine = precious(tmp_path / "p")
    result = run("train", str(faces), "--out", str(mine), *args)
    assert "refusing to replace it" in one_error_line(result)
    assert "decoding" not in result.stderr and "epoch" not in result.stderr  # refused before any work
    assert intact(mine)
    assert sorted(p.name for p in faces.rglob("*")) == listing


def test_a_folder_that_cannot_be_written_fails_before_computing(points: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_error_line(run("stats", str(points), "--out", str(tmp_path / "file" / "s.zarr")))
    assert "cannot write in" in line and "file" in line
    # /sys is mounted read-only for everyone here, root included
    if os.access("/sys", os.F_OK):
        line = one_error_line(run("stats", str(points), "--out", "/sys/s.zarr"))
        assert line.startswith("error: cannot write in /sys")


def test_a_full_disk_is_one_line_and_leaves_nothing(points: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.zarr"
    line = one_error_line(run("stats", str(points), "--out", str(out), limit_file_bytes=4096))
    assert "File too large" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_synth_step_does_not_delete_a_real_dataset(tmp_path: Path) -> None:
    data = precious(tmp_path / "celeba")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        f"name: w\nrun_dir: {tmp_path / 'run'}\ndata_dir: {data}\ndataset: {{synthetic: {{n: 8}}}}\n"
    )
    assert "refusing to replace it" in one_error_line(run("run", str(workflow)))
    assert intact(data)


def test_file_outputs_carry_their_record(tmp_path: Path) -> None:
    from PIL import Image

    write_json(tmp_path / "a.json", {"x": 1}, "scores")
    write_json(tmp_path / "a.json", {"x": 2}, "scores")  # its own kind: replaced
    assert json.loads((tmp_path / "a.json").read_text())["x"] == 2
    with pytest.raises(OutputError, match="is a latentdask scores output; refusing to replace it"):
        write_json(tmp_path / "a.json", {"x": 3}, "normality")
    (tmp_path / "b.png").write_bytes(b"my drawing")
    with pytest.raises(OutputError, match="not a latentdask output"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "b.png", "decoded-grid")
    assert (tmp_path / "b.png").read_bytes() == b"my drawing"
    save_png(Image.new("RGB", (4, 4)), tmp_path / "c.png", "decoded-grid")
    assert (read_record(tmp_path / "c.png") or {})["kind"] == "decoded-grid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.png", "c.png"]


def test_a_failing_writer_leaves_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "figures"
    with owned_output(out, "projections") as staged:
        (staged.path / "one.png").write_bytes(b"1")
    with pytest.raises(RuntimeError, match="boom"), owned_output(out, "projections") as staged:
        (staged.path / "two.png").write_bytes(b"2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["latentdask.json", "one.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    assert remove_leftovers(out) == []
    with pytest.raises(
        OutputError, match="a latentdask projections output; refusing to replace it with a stats"
    ):
        check_output(out, "stats")


@pytest.mark.parametrize(
    ("command", "mine"),
    [
        (("score", "{store}", "{stats}", "{store}", "--out", "{mine}"), "scores.json"),
        (("normality", "{store}", "{stats}", "--out", "{mine}"), "normality.json"),
        (("normality", "{store}", "{stats}", "--out", "{tmp}/n.json", "--plot", "{mine}"), "qq.png"),
        (("decode", "{tmp}/ckpt", "--out", "{mine}"), "grid.png"),
        (
            ("decode", "{tmp}/ckpt", "--out", "{tmp}/g.png", "--face-rate", "5", "--faces-out", "{mine}"),
            "f.json",
        ),
        (("bench", "decode", "--n", "5", "--json", "{mine}"), "bench.json"),
    ],
)
def test_file_outputs_are_checked_before_any_work(
    points: Path, stats: Path, tmp_path: Path, command: tuple[str, ...], mine: str
) -> None:
    path = tmp_path / mine
    path.write_bytes(b"my own file")
    names = {"store": str(points), "stats": str(stats), "mine": str(path), "tmp": str(tmp_path)}
    line = one_error_line(run(*(part.format(**names) for part in command)))
    assert f"{path} exists and is not a latentdask output; refusing to replace it" in line
    assert path.read_bytes() == b"my own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine]


def test_reports_replace_only_reports(tmp_path: Path) -> None:
    from latentdask.workflow.report import write_report

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"workflow": "w", "steps": {}}))
    (run_dir / "report.html").write_text("<html>my notes</html>")
    with pytest.raises(OutputError, match="not a latentdask output"):
        write_report(run_dir)
    assert (run_dir / "report.html").read_text() == "<html>my notes</html>"
    (run_dir / "report.html").unlink()
    write_report(run_dir)
    assert (read_record(run_dir / "report.html") or {})["kind"] == "report"
    write_report(run_dir)  # its own: replaced
