"""``latentdask bench readme``: the README's benchmark tables, written from a ``bench all`` JSON.

Only the text between the two marker comments :data:`BEGIN` and :data:`END` is replaced;
each table says the date, machine and versions it came from and the command that
reproduces it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from latentdask.bench.report import BENCH_KIND
from latentdask.errors import LatentdaskError
from latentdask.output import RECORD_KEY

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def read_suite(path: str | Path) -> dict[str, Any]:
    """The payload of a ``latentdask bench all`` JSON, or a LatentdaskError saying why not."""
    try:
        suite = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LatentdaskError(f"cannot read {path}: {exc}") from None
    kind = suite.get(RECORD_KEY, {}).get("kind") if isinstance(suite, dict) else None
    if kind != BENCH_KIND or "benches" not in suite:
        raise LatentdaskError(f"{path} is not the JSON of `latentdask bench all --out ...`")
    return suite


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratios(row: dict[str, Any], number: dict[str, int]) -> str:
    shown = []
    for other, ratio in row["ratios"].items():
        if ratio is None:
            shown.append(f"withheld: #{number[other]} does not compute the same figures")
        else:
            shown.append(f"**{ratio:.2f}×** vs #{number[other]}")
    return "; ".join(shown)


def _agrees(row: dict[str, Any]) -> str:
    if row["agrees"] is None:
        return ""
    if row["agrees"]:
        return "yes"
    failed = [
        f"{figure} {c['difference']:.3g} > {c['tolerance']:.3g}"
        for figure, c in row["check"].items()
        if not c["agrees"]
    ]
    return "**NO**: " + ("; ".join(failed) or "never checked")


def _setup(setup: dict[str, Any]) -> str:
    parts = []
    for key, value in setup.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
            parts.append(f"{key}: {value}")
        else:
            parts.append(f"{key}={value}")
    return "; ".join(parts)


def bench_table(name: str, bench: dict[str, Any], provenance: str) -> str:
    """One benchmark's table in Markdown, with where it came from and how to reproduce it."""
    number = {row["name"]: k for k, row in enumerate(bench["rows"], 1)}
    lines = [
        f"**`latentdask bench {name}`**: {bench['title']}. Reproduce: `{bench['command']}`. {provenance}",
        "",
        "| # | measurement | kind | value | speed-up | same figures as latentdask |",
        "|---|---|---|---|---|---|",
    ]
    for k, row in enumerate(bench["rows"], 1):
        value = f"{_number(row['value'])} {row['unit']}"
        lines.append(
            f"| {k} | {row['name']} | {row['kind']} | {value} | {_ratios(row, number)} | {_agrees(row)} |"
        )
    setup = f"Setup: {_setup(bench['setup'])}; " if bench["setup"] else ""
    lines += ["", f"{setup}{bench['seconds']:,.0f} s in all."]
    return "\n".join(lines)


def bench_tables(suite: dict[str, Any], source: str = "bench.json") -> str:
    """Every benchmark's table, with a line saying where they come from."""
    machine, versions = suite["machine"], suite["versions"]
    where = f"{machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM"
    if machine.get("gpu"):
        where += f", {machine['gpu']}"
    provenance = (
        f"Measured {suite['date']} (UTC) on {where}; "
        + ", ".join(f"{package} {version}" for package, version in versions.items())
        + "."
    )
    parts = [
        f"Written by `latentdask bench readme {source}` from one `{suite['command']}` run "
        f"({suite['seconds']:,.0f} s); do not edit between the markers. Speed-ups are over the row "
        "numbered (higher is better); a row's `kind` says whether it is latentdask, a baseline "
        "(checked to compute latentdask's figures on the same data), a bound (computes no "
        "answer) or a detail of a baseline.",
    ]
    if suite["scale"] != "default":
        parts.append(f"**A `--scale {suite['scale']}` run: sizes for tests, not figures to quote.**")
    if not suite["agrees"]:
        parts.append("**Some baselines do not compute latentdask's figures: their ratios are withheld.**")
    parts += [bench_table(name, bench, provenance) for name, bench in suite["benches"].items()]
    return "\n\n".join(parts)


def replace_between_markers(text: str, body: str, *, where: str = "README") -> str:
    """``text`` with everything between :data:`BEGIN` and :data:`END` replaced by ``body``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise LatentdaskError(f"{where} needs one {BEGIN} line followed by one {END} line")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def write_readme(suite_path: str | Path, readme: str | Path) -> Path:
    """Replace the benchmark tables of ``readme`` by those of ``suite_path``, in place and atomically."""
    readme = Path(readme)
    suite = read_suite(suite_path)
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise LatentdaskError(f"cannot read {readme}: {exc.strerror or exc}") from None
    updated = replace_between_markers(text, bench_tables(suite, Path(suite_path).name), where=str(readme))
    handle, temporary = tempfile.mkstemp(prefix=f".{readme.name}.", dir=readme.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(updated)
        os.chmod(temporary, readme.stat().st_mode & 0o7777)
        os.replace(temporary, readme)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return readme
