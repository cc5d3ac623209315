"""The README's Python blocks, run as a user runs them: each as a script of its own, in a folder that
holds what the Quickstart makes before them (the synthetic faces and a trained model), so the README
cannot drift from the API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentdask.data.synthetic_faces import synthesize
from tests.helpers import run_cli_in_process

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.e2e


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)


def test_the_readmes_python_blocks_run_as_scripts(tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no Python block"
    # the Quickstart's first steps, smaller: its faces and a model of the default architecture
    synthesize(tmp_path / "data" / "faces", n=200, seed=0, progress=False)
    trained = run_cli_in_process(
        "train", str(tmp_path / "data" / "faces"), "--out", str(tmp_path / "models" / "ae"), "--epochs", "1"
    )
    assert trained.returncode == 0, trained.stderr
    for number, block in enumerate(blocks, 1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(block)
        ran = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert ran.returncode == 0 and "Traceback" not in ran.stderr, f"block {number}:\n{ran.stderr[-4000:]}"
    assert (tmp_path / "latents.zarr" / "zarr.json").exists() and (tmp_path / "figures").is_dir()
