"""End-to-end test: `streamlit run` on a loopback port, driven by a headless Chromium.

The test starts the app with random weights saved by the test session, uploads a real
GasHisSDB tile on the Review page and checks the numbers shown against
`gastricvision predict --json` for the same tile and weights. It then visits every page
and saves a full-page screenshot of each into a temporary folder
(`GASTRICVISION_SCREENSHOTS` chooses another), printing where they are.

Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`), driven through
Playwright's Python API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench import load_app
from tests.conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

# The load script drives the same Chromium with the same flags and error selectors.
CHROMIUM = Path(load_app.CHROMIUM)
CHROMIUM_ARGS = load_app.CHROMIUM_ARGS
ERROR_SELECTORS = load_app.ERROR_SELECTORS
free_port = load_app.free_port
# CPU-only model runs on a shared machine take seconds each; waits are generous.
RUN_TIMEOUT_MS = 240_000


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def app_env(random_weights, shared_data, tmp_path_factory) -> dict[str, str]:
    return {
        **os.environ,
        "GASTRICVISION_WEIGHTS": str(random_weights),
        "GASTRICVISION_DATA_ROOTS": str(shared_data),
        "GASTRICVISION_CACHE": str(tmp_path_factory.mktemp("score-cache")),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }


@pytest.fixture(scope="module")
def app_url(app_env, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit-log") / "streamlit.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app/Home.py",
                "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
            ],
            cwd=REPO,
            env=app_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("GASTRICVISION_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(app_url):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found; install it with `apt-get install -y chromium`")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(RUN_TIMEOUT_MS)
        tab.goto(app_url)
        tab.get_by_role("heading", name="GastricVision").first.wait_for()
        yield tab
        context.close()
        browser.close()


def wait_until_idle(page) -> None:
    """Wait until the script run (and any spinner) has finished."""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidgetRunningIcon"]').first.wait_for(state="detached")
    page.locator('[data-testid="stSpinner"]').first.wait_for(state="detached")


def assert_no_error_boxes(page, where: str) -> None:
    for selector in ERROR_SELECTORS:
        texts = page.locator(selector).all_inner_texts()
        assert not texts, f"{where}: error boxes shown: {texts}"


def capture(page, path: Path) -> None:
    """Save the whole page: the main area scrolls inside its own element, so the viewport
    is made as tall as that element's content for the screenshot."""
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')]"
        ".map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 12_000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def open_page(page, link: str, heading: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(link, exact=True).click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
    wait_until_idle(page)


def cli_prediction(tile: Path, env: dict[str, str]) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", "predict", "--json", str(tile)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_pages_in_chromium(page, app_env, gashissdb_tile, screenshot_dir):
    wait_until_idle(page)
    assert_no_error_boxes(page, "Home")
    capture(page, screenshot_dir / "1-home.png")

    # Review: upload a real tile and wait for the prediction and both maps.
    open_page(page, "Review", "Review")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(gashissdb_tile))
    page.get_by_text("P(Abnormal), binary model").first.wait_for()
    page.locator('[data-testid="stImageCaption"]').filter(has_text="Grad-CAM for").nth(1).wait_for()
    wait_until_idle(page)
    assert_no_error_boxes(page, "Review")
    capture(page, screenshot_dir / "2-review.png")

    expected = cli_prediction(gashissdb_tile, app_env)
    assert metric_value(page, "P(Abnormal), binary model") == f"{expected['binary']['probabilities']['Abnormal']:.3f}"
    assert metric_value(page, "P(Abnormal), student model") == f"{expected['student']['probabilities']['Abnormal']:.3f}"
    assert metric_value(page, "Anomaly score, autoencoder") == f"{expected['reconstruction']['autoencoder']['error']:.4f}"
    assert metric_value(page, "Anomaly score, unet") == f"{expected['reconstruction']['unet']['error']:.4f}"
    tissue_label = expected["tissue"]["label"]
    assert page.get_by_text(f"Most probable: {tissue_label}").count() >= 1

    # The exports carry the same numbers; the panel PNG is composed on the server.
    with page.expect_download() as download:
        page.get_by_role("button", name="Numbers (JSON)").click()
    numbers = json.loads(Path(download.value.path()).read_text())
    assert numbers["binary"]["p_abnormal"] == pytest.approx(expected["binary"]["probabilities"]["Abnormal"], abs=1e-6)
    assert numbers["tissue"]["label"] == tissue_label
    assert [cam["model"] for cam in numbers["cams"]] == ["binary", "tissue"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Panel (PNG)").click()
    panel = screenshot_dir / "2-review-export-panel.png"
    download.value.save_as(panel)
    assert panel.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The sidebar's dataset folder feeds the other pages.
    folder = page.get_by_role("textbox", name="Dataset folder inside it")
    folder.fill("gashissdb")
    folder.press("Enter")
    page.get_by_text("gashissdb layout, 160 px").first.wait_for()
    wait_until_idle(page)

    open_page(page, "Gallery and errors", "Gallery and error analysis")
    page.get_by_text("Tiles scored").first.wait_for()
    wait_until_idle(page)

    # Clicking a confusion matrix cell (true Abnormal, predicted Normal) filters the grid.
    matrix, embedding = page.locator(".js-plotly-plot").nth(0), page.locator(".js-plotly-plot").nth(1)
    count = matrix.locator(".scatterlayer .textpoint").nth(2).text_content().strip()
    matrix.locator(".scatterlayer .point").nth(2).click(force=True)
    page.get_by_text(f"{count} tiles match the filters.").first.wait_for()
    wait_until_idle(page)
    # Clicking a point of the feature map selects its tile.
    embedding.locator(".scatterlayer .point").first.click(force=True)
    page.get_by_text("Nearest neighbours").first.wait_for()
    wait_until_idle(page)
    page.get_by_role("button", name="Inspect").first.click()
    wait_until_idle(page)
    assert_no_error_boxes(page, "Gallery")
    capture(page, screenshot_dir / "3-gallery.png")

    open_page(page, "Teaching quiz", "Teaching quiz")
    page.get_by_role("button", name="Start the quiz").click()
    page.get_by_text("Your answer").first.wait_for()
    wait_until_idle(page)
    capture(page, screenshot_dir / "4-teaching-question.png")
    page.get_by_text("Abnormal", exact=True).first.click()
    page.get_by_role("button", name="Submit the answer").click()
    page.get_by_text("The same map from random weights").first.wait_for()
    wait_until_idle(page)
    assert_no_error_boxes(page, "Teaching")
    capture(page, screenshot_dir / "5-teaching-answer.png")

    open_page(page, "Batch scoring", "Batch scoring")
    page.get_by_role("button", name="Score the tiles").click()
    page.get_by_text("Results:").first.wait_for()
    wait_until_idle(page)
    assert_no_error_boxes(page, "Batch")
    capture(page, screenshot_dir / "6-batch.png")

    open_page(page, "Models", "Models")
    assert_no_error_boxes(page, "Models")
    capture(page, screenshot_dir / "7-models.png")
