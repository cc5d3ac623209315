"""The ``latentdask`` command as a user runs it: a real subprocess, real files (bad input, refused
before any work, in process: the same app, without an interpreter's start for each case)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TINY_TRAIN, run_cli_in_process
from tests.helpers import run_cli as run


def test_synth_train_info(tmp_path: Path) -> None:
    data, ckpt = tmp_path / "faces", tmp_path / "model"
    result = run("synth", str(data), "--n", "40", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 40 synthetic faces" in result.stderr
    result = run("info", str(data))
    assert result.returncode == 0, result.stderr
    assert "images      40 (train 32, valid 4, test 4)" in result.stdout
    assert f"(celeba, images in the folder {data / 'img_align_celeba'})" in result.stdout  # no Python repr
    result = run(
        "train",
        str(data),
        "--out",
        str(ckpt),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "16",
        "--latent-dim",
        "8",
        "--channels",
        "4,4",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "trained on 32 images (4 for validation, 0 skipped)" in " ".join(result.stderr.split())
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["channels"] == [4, 4] and config["preprocessing"]["image_size"] == 16
    result = run("info", str(ckpt))
    assert result.returncode == 0 and "latent_dim 8" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "/no/such/path"), "does not exist"),
        (("train", "/no/such/data", "--out", "x"), "does not exist"),
        (("synth", "{tmp}/x", "--n", "0"), "at least 1"),
        (("train", "{faces}", "--out", "{tmp}/m", "--image-size", "60"), "not divisible by 16"),
        (("train", "{faces}", "--out", "{tmp}/m", "--channels", "a,b"), "comma-separated integers"),
        (("train", "{faces}", "--out", "{tmp}/m", "--split", "training"), "unknown split"),
        (("train", "{faces}", "--out", "{tmp}/m", "--device", "cuda:7"), "no CUDA device"),
        (("info", "{tmp}/model.pt"), "never unpickles"),
        (("info", "{tmp}/nope[/]x"), "nope[/]x does not exist"),  # printed as text, not as markup
        (
            ("train", "{faces}", "--out", "{tmp}/m", "--batch-size", "0"),
            "field 'batch_size': Input should be",
        ),
        (
            ("encode", "{faces}", "--model", "{tmp}/c", "--out", "{tmp}/m", "--batch-size", "0"),
            "'batch_size'",
        ),
        (("stats", "{tmp}/s.zarr", "--out", "{tmp}/m", "--bin-width", "1e-7"), "--bin-width"),
        (("stats", "{tmp}/s.zarr", "--out", "{tmp}/m"), "{tmp}/s.zarr does not exist"),
        (("normality", "{tmp}/s.zarr", "{tmp}/t.zarr", "--out", "{tmp}/m"), "{tmp}/s.zarr does not exist"),
        (("gmm", "{tmp}/s.zarr", "--out", "{tmp}/m"), "{tmp}/s.zarr does not exist"),
        (("serve", "{tmp}/s.zarr", "--port", "99999"), "--port must be a port number from 1 to 65535"),
        (
            ("serve", "{tmp}/s.zarr", "--selections", "{tmp}/nowhere"),
            "--selections {tmp}/nowhere is not a folder",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    faces: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")  # a tiny pickle
    filled = [a.format(tmp=tmp_path, faces=faces) for a in args]
    result = run_cli_in_process(*filled)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert message.format(tmp=tmp_path) in line
    assert not (tmp_path / "m").exists()


def test_bad_input_to_the_command_in_its_own_process_is_one_line(tmp_path: Path) -> None:
    result = run("info", str(tmp_path / "nope"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'nope'} does not exist"]


def test_a_workflow_is_checked_whole_before_its_first_step(tmp_path: Path) -> None:
    workflow = tmp_path / "w.yaml"
    workflow.write_text(
        f"name: w\nrun_dir: {tmp_path / 'run'}\ndataset: {{synthetic: {{n: 5}}}}\nmodel: {{image_size: 33}}\n"
    )
    result = run("run", str(workflow))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {workflow}: model: image_size 33 is not divisible by 16, the product of the strides "
        "(2, 2, 2, 2); use a multiple of 16 (e.g. 32)"
    ]
    assert not (tmp_path / "run").exists()  # the synth step never ran
    workflow.write_text("name: ..\ndataset: {synthetic: {n: 5}}\n")
    result = run("run", str(workflow), cwd=tmp_path)
    assert "field 'name': '..' is not a name" in result.stderr and result.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yaml"]


def test_encode_and_info_store(faces: Path, tmp_path: Path) -> None:
    ckpt, store = tmp_path / "m", tmp_path / "latents.zarr"
    assert run("train", str(faces), "--out", str(ckpt), *TINY_TRAIN).returncode == 0
    spec = tmp_path / "two.yaml"
    spec.write_text("kind: local\nworkers: 2\n")
    args = (
        "encode",
        str(faces),
        "--model",
        str(ckpt),
        "--out",
        str(store),
        "--shard-size",
        "50",
        "--cluster",
        str(spec),
    )
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "encoded 120 images in 3 shard(s)" in " ".join(result.stderr.split())
    again = run(*args)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run(*args, "--resume")
    assert resumed.returncode == 0 and "encoded 0 images in 0 shard(s) (3 already done" in " ".join(
        resumed.stderr.split()
    )
    info = run("info", str(store))
    assert info.returncode == 0
    assert "images      120 x 4 latents" in info.stdout and "shards      3/3 done" in info.stdout


def test_option_defaults_are_the_options_models() -> None:
    """Each command reads its defaults from the options model its workflow section is (one default each)."""
    import typer

    from latentdask.cli import app
    from latentdask.encode.options import EncodeOptions
    from latentdask.generate.options import DecodeOptions, ScoreOptions
    from latentdask.model.config import ModelConfig
    from latentdask.render.options import RenderOptions
    from latentdask.stats.options import NormalityOptions, SummaryParams
    from latentdask.workflow.spec import RenderSection

    group: Any = typer.main.get_command(app)
    defaults = {
        name: {param.name: param.default for param in group.get_command(None, name).params}
        for name in ("encode", "train", "stats", "normality", "score", "render", "decode")
    }
    assert defaults["encode"]["shard_size"] == EncodeOptions().shard_size
    assert defaults["train"]["channels"] == ",".join(map(str, ModelConfig().channels))
    assert tuple(defaults["stats"]["value_range"]) == SummaryParams().range
    assert defaults["normality"]["sample_size"] == NormalityOptions().sample_size
    assert defaults["score"]["reference_size"] == ScoreOptions().reference_size
    assert defaults["decode"]["per_row"] == DecodeOptions().per_row
    # the one default that differs on purpose: a study's slices at 1.5, the command's only on request
    assert defaults["render"]["slice_threshold"] is RenderOptions().slice is None
    assert RenderSection().slice == 1.5


def test_reading_a_workflow_imports_none_of_the_heavy_libraries() -> None:
    """A run whose steps are all done only reads the workflow and the step records: its options
    models live apart from the code that computes (the run took 6 s of imports before)."""
    import subprocess
    import sys

    demo = str(Path(__file__).parents[1] / "workflows" / "demo.yaml")
    script = (
        "import sys\n"
        "from latentdask.workflow.run import run_workflow\n"
        "from latentdask.workflow.spec import expand_matrix, load_workflow\n"
        f"expand_matrix(load_workflow({demo!r}), {demo!r})\n"
        "heavy = ('torch', 'scipy', 'numba', 'xarray', 'dask.array', 'distributed', 'datashader')\n"
        "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in done.stdout, done.stdout


def test_help_lists_every_command_without_importing_torch_or_xarray() -> None:
    """Every command is built with its defaults, read from options models of pydantic only: listing
    them imports neither torch nor xarray."""
    import subprocess
    import sys

    from latentdask.cli import COMMANDS

    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from latentdask.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'], terminal_width=200)\n"
        "print(result.output)\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'xarray', 'datashader') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in done.stdout
    for name in COMMANDS:
        assert f" {name} " in done.stdout, name
    # a command shows its defaults, from its options model
    shown = subprocess.run(
        [sys.executable, "-m", "latentdask.cli", "encode", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "default: 4096" in " ".join(shown.stdout.split()), shown.stdout
