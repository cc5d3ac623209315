"""``report.html``: one self-contained page per run folder, readable offline.

It gathers what the workflow's steps wrote — dataset, model and training curve, the
headline statistics (the dominant components' peak and FWHM, the CelebA study's mu/hw table;
correlation counts and strong pairs; slice populations of the chosen pairs), the radius
plot with the uniform sampler's curves, normality, the projection grids, the decoded
grids with their scores and face rates — and the steps' parameters and timings from
``run.json``. Every image is embedded (base64 PNG), so the file opens anywhere with no
network and nothing beside it; there is no script at all.

Every text that reaches the page (names, paths, figures read from the run's JSON files) goes
through :func:`_esc`: the run folder may come from someone else, and a file name such as
``a" onload=alert(1) x=".png`` must stay a name.
"""

from __future__ import annotations

import base64
import html
import io
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

import numpy as np

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location, relative
from latentdask.model.config import CONFIG_FILE, TRAINING_FILE
from latentdask.output import write_html
from latentdask.store.paths import RunFolder, stats_json_path

#: the kinds of output a run's and a sweep's report.html are, in their ``<meta name="latentdask">``
REPORT_KIND = "report"
SWEEP_REPORT_KIND = "sweep-report"

TOP = 12
#: slice populations listed at each end
SHOWN = 6


class ReportError(LatentdaskError):
    """A run folder that holds no run to report."""


def _esc(value: Any, spec: str = "") -> str:
    """``value`` as HTML text, safe inside an element or a quoted attribute.

    Numbers are formatted with ``spec`` (or :func:`_fmt`); anything else, whatever a JSON file
    held, is shown as its text.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return html.escape(format(value, spec) if spec and number else _fmt(value), quote=True)


def _image(path: Location, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{int(width)}"' if width else ""
    return f'<img alt="{_esc(alt)}"{size} src="data:image/png;base64,{data}">'


def _figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _ties(populations: dict[str, Any], end: str) -> str:
    """A line saying so when more pairs share the smallest (or largest) population than are listed."""
    ties = populations.get(f"{end}_ties", 0)  # absent from statistics written before it was recorded
    if ties <= SHOWN:
        return ""
    count = populations[end][0][2]
    return (
        f"<p>{ties:,} pairs share the {end} population, {count:,} points: the first {SHOWN} by component.</p>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve(training: dict[str, Any]) -> str:
    plt = _plt()
    epochs = [e["epoch"] for e in training["epochs"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(epochs, [e["train_loss"] for e in training["epochs"]], "o-", label="train")
    ax.plot(epochs, [e["valid_loss"] for e in training["epochs"]], "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return _figure_png(fig)


def radius_plot(stats_path: Location, uniform: Location | None, b: float | None) -> str:
    """Real radii against the uniform sampler's: sampled, theory (mean ± sd) and the best-matching b."""
    import zarr

    from latentdask.generate.samplers import RadiusTheory, b_scan
    from latentdask.stats.io import open_stats

    plt = _plt()
    stats = open_stats(stats_path)
    centres, counts = stats["radius_bin"].values, stats["radius_hist"].values.astype(float)
    width = float(np.diff(centres[:2])[0]) if len(centres) > 1 else 1.0
    fig, ax = plt.subplots(figsize=(7, 3.6))
    used = np.flatnonzero(counts)
    ax.bar(
        centres[used],
        counts[used] / counts.sum() / width,
        width=width,
        color="#3b6ea5",
        alpha=0.7,
        label=f"real z-points (mean {float(stats['radius_mean']):.2f})",
    )
    dim = int(stats.sizes["latent"])
    if uniform is not None and b is not None and uniform.exists():
        z = np.asarray(zarr.open_array(str(uniform / "z"), mode="r")[:100_000], dtype=np.float64)
        radii = np.sqrt((z * z).sum(axis=1))
        ax.hist(
            radii, bins=60, density=True, histtype="step", color="red", label=f"uniform sampler b = {b:g}"
        )
        theory = RadiusTheory(dim, b)
        grid = np.linspace(theory.mean - 5 * theory.std, theory.mean + 5 * theory.std, 200)
        ax.plot(
            grid,
            np.exp(-0.5 * ((grid - theory.mean) / theory.std) ** 2) / (theory.std * np.sqrt(2 * np.pi)),
            "k--",
            label=f"theory: mean {theory.mean:.3f}, sd {theory.std:.3f} (rms b√(N/3) = {theory.rms:.3f})",
        )
    best = float(b_scan(stats)["best_b"])  # type: ignore[arg-type]
    best_theory = RadiusTheory(dim, best)
    ax.axvline(best_theory.mean, color="green", ls=":", label=f"uniform with the closest b = {best:g}")
    ax.set_xlabel("radius |z|")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)


def write_report(folder: Where) -> Location:
    """Write ``report.html`` in a run folder from what its steps wrote; return its path."""
    folder = location(folder)
    paths = RunFolder(folder)
    record_path = paths.record
    if not record_path.is_file():
        raise ReportError(f"{folder} holds no run.json: run a workflow first")
    record = json.loads(record_path.read_text())
    definition = record.get("definition", {})
    steps = record.get("steps", {})
    parts = [f"<h1>latentdask run: {_esc(record.get('workflow', folder.name))}</h1>"]

    # dataset and model
    data = definition.get("dataset", {})
    source = (
        f"synthetic faces {data['synthetic']}" if data.get("synthetic") else f"CelebA at {data.get('root')}"
    )
    parts.append(f"<h2>Dataset and model</h2><p>{_esc(source)}</p>")
    config_path = location(definition.get("model", {}).get("checkpoint") or paths.model) / CONFIG_FILE
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        parts.append(f"<pre>{_esc(json.dumps(config.get('model', config), indent=1))}</pre>")
    training_path = config_path.with_name(TRAINING_FILE)
    if training_path.is_file():
        parts.append("<h3>Training curve</h3>" + training_curve(json.loads(training_path.read_text())))

    # statistics
    stats_json = stats_json_path(paths.stats)
    if stats_json.is_file():
        figures = json.loads(stats_json.read_text())
        parts.append(
            f"<h2>Statistics of every z-point</h2><p>{_esc(figures['count'], ',')} z-points "
            f"({_esc(figures['invalid'])} invalid, {_esc(figures['nonfinite'])} non-finite); mean "
            f"radius {_esc(figures['mean_radius'], '.3f')}</p>"
        )
        if figures.get("selection"):
            parts.append(f"<p>rows: {_esc(figures['selection'])}</p>")
        parts.append(
            "<h3>Dominant components (the CelebA study's mu/hw)</h3>"
            + _table(
                ["latent", "peak (mu)", "FWHM (hw)", "mean"],
                [
                    [c["latent"], c["peak"], c["fwhm"], c["mean"]]
                    for c in figures["dominant_components"][:TOP]
                ],
            )
        )
        parts.append(
            "<h3>Correlations</h3>"
            + _table(
                ["|r| above", "pairs"],
                [[level, count] for level, count in figures["correlation_pairs_above"].items()],
            )
            + f"<p>{_esc(figures['strong_pairs_count'])} strong pairs; the strongest:</p>"
            + _table(["a", "b", "r"], figures["strong_pairs"][:TOP])
        )
        for t, populations in figures["slice_populations"].items():
            parts.append(
                f"<h3>Slice populations, |x_j| &lt; {_esc(t)} outside the pair</h3>"
                f"<p>{_esc(populations['origin_cube'], ',')} points inside the cube itself.</p>"
                + "".join(
                    _ties(populations, end) + _table([f"{end}: a", "b", "points"], populations[end][:SHOWN])
                    for end in ("smallest", "largest")
                )
            )
        samplers = definition.get("generate", {}).get("samplers", [])
        uniform = next((s for s in samplers if s.get("name") == "uniform"), None)
        label = (uniform.get("label") or "uniform") if uniform else None
        parts.append(
            "<h3>Radii</h3>"
            + radius_plot(
                paths.stats,
                paths.sampler_points(label) if label else None,
                uniform.get("b") if uniform else None,
            )
        )

    normality = paths.normality
    if normality.is_file():
        from latentdask.stats.normality import format_normality

        parts.append(
            f"<h2>Normality</h2><pre>{_esc(format_normality(json.loads(normality.read_text())))}</pre>"
        )
        if paths.normality_plot.is_file():
            parts.append(
                _image(
                    paths.normality_plot, "Mahalanobis² against the quantiles of its law under normality", 420
                )
            )

    projections = paths.projections
    if (projections / "render.json").is_file():
        parts.append("<h2>Projections of every z-point</h2>")
        drawn: Iterable[Location] = projections.glob("*.png")
        for png in sorted(drawn, key=lambda found: found.name):
            parts.append(f"<h3>{_esc(png.stem)}</h3>" + _image(png, png.stem, 800))

    scores = paths.scores
    if scores.is_file():
        from latentdask.generate.score import SCORE_COLUMNS, score_table

        fit, rows, where = score_table(json.loads(scores.read_text()))
        parts.append(
            f"<h2>Artificial z-points: scores beside real ones</h2><p>{_esc(fit)}</p>"
            + _table([header for header, _ in SCORE_COLUMNS], rows)
            + f"<p>{_esc(where)}</p>"
        )
    rates = paths.face_rates
    if rates.is_file():
        from latentdask.generate.faces import format_face_rates

        parts.append(f"<h3>Face rate</h3><pre>{_esc(format_face_rates(json.loads(rates.read_text())))}</pre>")
    grid = paths.grid
    if grid.is_file():
        parts.append("<h3>Decoded</h3>" + _image(grid, "decoded samplers and reconstructions"))

    parts.append(
        "<h2>Steps</h2>"
        + _table(
            ["step", "status", "seconds", "output", "parameters"],
            [
                [name, s.get("status"), s.get("seconds"), s.get("output"), json.dumps(s.get("params"))]
                for name, s in steps.items()
                if name != "report"
            ],
        )
    )
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
        "font-size:13px;text-align:right;max-width:600px;overflow-wrap:anywhere}th{overflow-wrap:normal}"
        "pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}img{max-width:100%}"
    )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>latentdask: '
        f"{_esc(record.get('workflow', ''))}</title><style>{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    return write_html(paths.report, page, REPORT_KIND)


def _run_figures(folder: Location) -> dict[str, Any]:
    """The headline figures of one run, for the sweep's table (absent outputs give None)."""

    def read(path: Location) -> Any:
        return json.loads(path.read_text()) if path.is_file() else None

    paths = RunFolder(folder)
    figures = read(stats_json_path(paths.stats)) or {}
    training = read(paths.model / TRAINING_FILE) or {}
    normality = read(paths.normality) or {}
    kurtosis: dict[str, Any] = next(
        (t for t in normality.get("multivariate", []) if t["test"] == "mardia_kurtosis"), {}
    )
    scores = (read(paths.scores) or {}).get("sets", {})
    rates = read(paths.face_rates) or {}
    epochs = training.get("epochs") or [{}]
    slices: dict[str, Any] = next(iter((figures.get("slice_populations") or {}).values()), {})
    nearest = {name.split(" ")[0]: s["nearest_real_distance"]["q50"] for name, s in scores.items()}
    faces = {name.split(" ")[0]: s["rate"] for name, s in (rates.get("sets") or {}).items()}
    top = (figures.get("dominant_components") or [{}])[0]
    return {
        "valid loss": epochs[-1].get("valid_loss"),
        "z-points": figures.get("count"),
        "mean radius": figures.get("mean_radius"),
        "pairs |r| ≥ 0.5": figures.get("strong_pairs_count"),
        "smallest slice": (slices.get("smallest") or [[None, None, None]])[0][2],
        "widest component (peak, FWHM)": (
            f"{top.get('latent')}: {top.get('peak', 0):.3f}, {top.get('fwhm', 0):.3f}"
        )
        if top
        else None,
        "Mardia kurtosis p": kurtosis.get("p_value") if kurtosis.get("informative") else None,
        "beyond the normal d² law's 99.73 %": (
            ((normality.get("mahalanobis_qq") or {}).get("beyond_tail") or {}).get("share")
        ),
        "nearest real q50: real / uniform / mvn": " / ".join(
            f"{nearest[k]:.2f}" if k in nearest else "—" for k in ("real", "uniform", "mvn")
        ),
        "face rate: recon / uniform / mvn": " / ".join(
            f"{v:.2f}" if isinstance(v, float) else "—"
            for v in (
                (rates.get("reference") or {}).get("real reconstructions", {}).get("rate"),
                faces.get("uniform"),
                faces.get("mvn"),
            )
        ),
    }


def _cka_table(path: Location) -> str:
    """The sweep's linear CKA matrix (``cka.json``) as a table; nothing when it was not computed."""
    if not path.is_file():
        return ""
    cka = json.loads(path.read_text())
    rows = [[label, *values] for label, values in zip(cka["runs"], cka["linear_cka"], strict=True)]
    return (
        "<h2>Linear CKA between the runs' latent spaces</h2><p>1: the same space up to rotation and "
        "scale; near 0: unrelated (every valid z-point, matched by file name)</p>"
        + _table(["", *cka["runs"]], rows)
    )


def write_sweep_report(folder: Where, runs: list[Location], matrix: dict[str, list[Any]]) -> Location:
    """``report.html`` of a sweep: every run's headline figures side by side, the linear CKA between
    their latent spaces, their radii and PCA spectra on shared axes, and a link to each run's report."""
    from latentdask.stats.io import open_stats

    folder = location(folder)
    rows, names = [], []
    plt = _plt()
    fig, (radius_ax, pca_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for run in runs:
        label = run.name
        names.append(label)
        figures = _run_figures(run)
        # percent-encoded (":" too): a run folder named "x#y" or "javascript:…" stays a relative path
        href = urllib.parse.quote(relative(RunFolder(run).report, folder))
        link = f'<a href="{_esc(href)}">{_esc(label)}</a>'
        rows.append((link, figures))
        stats_path = RunFolder(run).stats
        if stats_path.exists():
            stats = open_stats(stats_path)
            counts = stats["radius_hist"].values.astype(float)
            centres = stats["radius_bin"].values
            radius_ax.plot(centres, counts / max(counts.sum(), 1.0), label=label)
            explained = np.cumsum(stats["pca_explained"].values)
            pca_ax.plot(np.arange(1, len(explained) + 1), explained, label=label)
    radius_ax.set_xlabel("radius |z|")
    radius_ax.set_ylabel("share of z-points")
    radius_ax.set_xlim(left=0)
    pca_ax.set_xscale("log")
    pca_ax.set_xlabel("principal axes")
    pca_ax.set_ylabel("variance explained (cumulative)")
    if pca_ax.lines:  # runs without statistics draw nothing
        pca_ax.legend(fontsize=7)
    fig.tight_layout()
    columns = list(rows[0][1]) if rows else []
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["run", *columns])
    body = "".join(
        f"<tr><td>{link}</td>" + "".join(f"<td>{_esc(figures[c])}</td>" for c in columns) + "</tr>"
        for link, figures in rows
    )
    swept = ", ".join(f"{_esc(k)} ∈ {_esc(str(v))}" for k, v in matrix.items())
    similarity = _cka_table(RunFolder(folder).cka)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>latentdask sweep</title>'
        f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
        f"td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}}"
        f"img{{max-width:100%}}</style></head><body>"
        f"<h1>Sweep: {len(runs)} runs</h1><p>{swept}</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{similarity}<h2>Radii and principal axes</h2>{_figure_png(fig)}"
        "</body></html>"
    )
    return write_html(RunFolder(folder).report, page, SWEEP_REPORT_KIND)
