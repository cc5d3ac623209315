"""The dashboard served by ``latentdask serve`` and driven in headless Chromium (Debian's package).

The page must load with no request leaving 127.0.0.1 (no CDN, no remote fonts), show the
projection, re-render when a widget changes, show images on a click, and log no errors.
Without Chromium the tests are skipped, unless LATENTDASK_REQUIRE_BROWSER=1 (set by CI),
where a missing browser is a failure.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from latentdask.cluster.connect import ClusterChoice
from latentdask.data.decode import Preprocessing
from latentdask.encode.run import EncodeOptions, encode
from latentdask.generate.samplers import generate, sampler_spec
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.render.explore import Explorer, View
from latentdask.stats.io import open_stats
from latentdask.store.paths import default_stats_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: an image name that closes an attribute and opens a handler (a stored XSS if it reached HTML as is)
HOSTILE = "a\" b' onload=alert(document.domain) x='1.jpg"


def encoded(dataset: Path, root: Path, shard_size: int) -> Path:
    """A real latent store of ``dataset`` with its statistics, dataset and model recorded."""
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=16, latent_dim=8, channels=(4, 4)))
    checkpoint = save_checkpoint(root / "model", model, Preprocessing(image_size=16))
    spec = root / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    out = root / "latents.zarr"
    encode(
        dataset,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=shard_size, device="cpu"),
        cluster=ClusterChoice(spec=spec),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def store(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic faces, encoded."""
    return encoded(faces, tmp_path_factory.mktemp("dashboard"), 40)


@pytest.fixture(scope="module")
def hostile_store(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of six faces, one of them named :data:`HOSTILE`: a click shows all six."""
    needs_chromium()
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "images"
    folder.mkdir()
    images = sorted((faces / "img_align_celeba").glob("*.jpg"))[:6]
    for k, image in enumerate(images):
        shutil.copy(image, folder / (HOSTILE if k == 2 else image.name))
    return encoded(folder, root, 6)


def test_explorer_counts_equal_statistics(store: Path) -> None:
    stats = open_stats(default_stats_path(store))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        explorer = Explorer(store, default_stats_path(store), client)
        view = View("pair", 1, 4, threshold=1.5)
        full = explorer.projection(view)
        counts = explorer.aggregate(view, full.x_range, full.y_range, 40, 30)
        assert (
            counts.sum() == explorer.count(view) == int(stats["slice_count"].sel(threshold=1.5).values[1, 4])
        )
        pair = View("pair", 2, 5)
        assert explorer.count(pair) == int(stats["count"])
        z = np.asarray(explorer.points.z)
        x_range = (float(np.median(z[:, 2])), float(z[:, 2].max()))
        zoomed = explorer.aggregate(pair, x_range, explorer.projection(pair).y_range, 20, 10)
        expected, _, _ = np.histogram2d(
            z[:, 5], z[:, 2], bins=[10, 20], range=[explorer.projection(pair).y_range, x_range]
        )
        np.testing.assert_array_equal(zoomed, expected)
        near = explorer.nearest_rows(pair, float(z[7, 2]), float(z[7, 5]), k=1)
        assert near == [7]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_chromium() -> None:
    if CHROMIUM is None:
        if os.environ.get("LATENTDASK_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here (apt-get install chromium)")
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")


@contextmanager
def serving(store: Path, folder: Path, *options: str) -> Iterator[str]:
    """``latentdask serve STORE`` in its own process, on a free port of 127.0.0.1; yields its URL.

    The port is free when chosen, but the command's own Dask cluster binds ephemeral ports
    before the app does and may take it: the helper waits for an HTTP answer (not just an open
    port) and, when the command exits because the port was taken, tries another.
    """
    spec = folder / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    log = folder / "serve.log"
    for _ in range(3):
        port = free_port()
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "latentdask.cli",
                    "serve",
                    str(store),
                    "--port",
                    str(port),
                    "--cluster",
                    str(spec),
                    *options,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}/"
        if answers_http(process, url, deadline=time.monotonic() + 120):
            break
        process.kill()
        process.wait(timeout=30)
    else:
        pytest.fail(f"latentdask serve did not answer: {log.read_text()}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def answers_http(process: subprocess.Popen[bytes], url: str, *, deadline: float) -> bool:
    """Whether the app answers ``url`` with HTTP before ``deadline``; False once ``process`` exits."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, http.client.HTTPException):
            time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    needs_chromium()
    folder = tmp_path_factory.mktemp("serve")
    points = generate(
        default_stats_path(store), folder / "uniform.zarr", spec=sampler_spec("uniform", b=1.5), n=300, seed=0
    )
    with serving(store, folder, "--points", str(points)) as url:
        yield url


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def test_dashboard_in_headless_chromium(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))

        def route(route: Any) -> None:  # everything must come from the app's own server
            if route.request.url.startswith(server.rstrip("/")):
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort()

        page.route("**/*", route)
        page.goto(server, wait_until="networkidle")
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(2000)
        projection = page.locator("canvas").first.bounding_box()
        assert projection is not None and projection["width"] > 400
        loaded = page.screenshot(path=str(tmp_path / "loaded.png"))

        # a widget change re-renders the projection: principal axes instead of components
        page.get_by_text("pc", exact=True).click()
        page.wait_for_timeout(3000)
        assert page.screenshot(path=str(tmp_path / "pcs.png")) != loaded
        page.get_by_text("pair", exact=True).click()
        page.wait_for_timeout(3000)
        after_pair = page.screenshot()

        # the uniform sampler's points drawn over the projection
        page.get_by_label("uniform (300)").check()
        page.wait_for_timeout(3000)
        overlaid = page.screenshot(path=str(tmp_path / "overlay.png"))
        assert overlaid != after_pair

        # a click on the correlation heatmap selects that pair
        heat = page.locator("canvas").nth(page.locator("canvas").count() - 1).bounding_box()
        assert heat is not None
        x_axis = page.get_by_label("x axis", exact=False)
        before_pick = x_axis.input_value()
        page.mouse.click(heat["x"] + 0.75 * heat["width"] * 0.8, heat["y"] + 0.3 * heat["height"])
        page.wait_for_timeout(3000)
        assert x_axis.input_value() != before_pick

        # a click in the projection: the nearest real images and what the decoder makes there
        page.mouse.click(
            projection["x"] + 0.4 * projection["width"], projection["y"] + 0.45 * projection["height"]
        )
        page.wait_for_selector("img[alt='decoded']", timeout=30_000)
        thumbnails = page.locator("img[alt$='.jpg']")
        assert thumbnails.count() == 6
        assert all(
            name.endswith(".jpg") for name in thumbnails.evaluate_all("images => images.map(i => i.alt)")
        )
        page.screenshot(path=str(tmp_path / "clicked.png"))
        browser.close()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


def test_file_names_are_shown_as_text(hostile_store: Path, tmp_path: Path) -> None:
    """A file name built to close the alt attribute and add a handler runs no script and reads as written."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    dialogs: list[str] = []
    with serving(hostile_store, tmp_path) as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url, wait_until="networkidle")
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(2000)
        projection = page.locator("canvas").first.bounding_box()
        assert projection is not None
        page.mouse.click(
            projection["x"] + 0.4 * projection["width"], projection["y"] + 0.45 * projection["height"]
        )
        page.wait_for_selector("img[alt='decoded']", timeout=30_000)
        page.wait_for_timeout(1000)  # an onload handler would have run by now
        captions = page.locator("figcaption").all_text_contents()
        alts = page.locator("img").evaluate_all("images => images.map(i => i.alt)")
        handlers = page.locator("img").evaluate_all(
            "images => images.flatMap(i => i.getAttributeNames().filter(n => n.startsWith('on')))"
        )
        page.screenshot(path=str(tmp_path / "clicked.png"))
        browser.close()
    assert not dialogs, f"the file name ran script: {dialogs}"
    assert not handlers and not errors, (handlers, errors)
    assert HOSTILE in captions  # all six images are the nearest: the name is there, letter for letter
    assert HOSTILE in alts
