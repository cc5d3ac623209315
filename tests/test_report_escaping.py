"""report.html of a run folder whose names and files hold HTML: every string stays text.

Two independent readers check the pages: Python's html.parser (no element or attribute the
data asked for, the strings in the text exactly) and, where Debian's chromium is installed,
the browser itself (no dialog opens, even when the sweep's link is clicked).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentdask.stats.io import write_stats
from latentdask.stats.reduce import summarize
from latentdask.workflow.report import write_report, write_sweep_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: a file name that closes an attribute and opens a handler (the dashboard's stored XSS)
NAME = "a\" b' onload=alert(document.domain) x='1"
#: text that opens elements
MARKUP = "<img src=x onerror=alert(document.domain)><script>alert(document.domain)</script>"
#: tags the report writes itself
OWN_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "h3",
    "p",
    "pre",
    "img",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
}


class Page(HTMLParser):
    """Every element with its attributes, and the text, as a browser's parser reads them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def check_nothing_injected(self) -> None:
        for tag, attrs in self.elements:
            assert tag in OWN_TAGS, f"element <{tag}> came from data"
            handlers = [name for name in attrs if name.startswith("on")]
            assert not handlers, f"<{tag}> has handlers {handlers}"
            if tag == "img":
                assert set(attrs) <= {"alt", "src", "width"}, attrs
                assert (attrs["src"] or "").startswith("data:image/png;base64,"), attrs
            if tag == "a":
                assert urllib.parse.urlsplit(attrs["href"] or "").scheme == "", attrs


def no_dialog_in_chromium(page: Path, click: str | None = None) -> None:
    """Open the page in headless Chromium (and click a link); fail if any dialog opens."""
    if CHROMIUM is None:
        return
    from playwright.sync_api import sync_playwright

    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        tab = browser.new_page()
        tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        tab.goto(page.as_uri())
        if click is not None:
            tab.get_by_text(click, exact=True).click()
        tab.wait_for_timeout(500)
        browser.close()
    assert not dialogs, f"the page ran script: {dialogs}"


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A run folder with real statistics, in which every name a user or a dataset chooses is hostile."""
    folder = tmp_path / "run"
    folder.mkdir()
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    stats = summarize(x, selection=f"valid rows; {MARKUP}=+1")  # an attribute name from a dataset's list file
    write_stats(stats, folder / "latents-stats.zarr", source=NAME)
    # figures of a run folder handed over by someone else need not be numbers
    figures_path = folder / "latents-stats.json"
    figures = json.loads(figures_path.read_text())
    figures |= {"invalid": MARKUP, "nonfinite": NAME, "strong_pairs_count": MARKUP}
    figures_path.write_text(json.dumps(figures))
    (folder / "projections").mkdir()
    (folder / "projections" / "render.json").write_text("{}")
    Image.new("RGB", (8, 8), "white").save(folder / "projections" / f"{NAME}.png")
    record = {
        "workflow": MARKUP,
        "definition": {"dataset": {"root": f"/data/{NAME}"}},
        "steps": {
            "encode": {
                "status": "done",
                "seconds": 1.5,
                "output": f"/runs/{NAME}/latents.zarr",
                "params": {"where": [f"{MARKUP}=1"]},
            }
        },
    }
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_report_shows_hostile_names_as_text(run_folder: Path) -> None:
    path = write_report(run_folder)
    page = Page(path.read_text())
    page.check_nothing_injected()
    for text in (
        f"latentdask run: {MARKUP}",
        f"CelebA at /data/{NAME}",
        f"({MARKUP} invalid, {NAME} non-finite)",
        f"rows: valid rows; {MARKUP}=+1",
        f"{MARKUP} strong pairs",
        f"/runs/{NAME}/latents.zarr",
    ):
        assert text in page.text, text
    alts = [attrs.get("alt") for tag, attrs in page.elements if tag == "img"]
    assert NAME in alts  # the projection's file name, whole, as its alt text
    no_dialog_in_chromium(path)


def test_sweep_links_stay_relative_paths(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    runs = [folder / "javascript:alert(document.domain)", folder / NAME]
    for run in runs:
        run.mkdir(parents=True)
    path = write_sweep_report(folder, runs, {f"model.{MARKUP}": [NAME, 2]})
    page = Page(path.read_text())
    page.check_nothing_injected()
    hrefs = [attrs["href"] for tag, attrs in page.elements if tag == "a"]
    assert [urllib.parse.unquote(href or "") for href in hrefs] == [f"{run.name}/report.html" for run in runs]
    assert f"model.{MARKUP} ∈ {[NAME, 2]}" in page.text and NAME in page.text
    no_dialog_in_chromium(path, click="javascript:alert(document.domain)")
