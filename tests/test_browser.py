"""End to end in a real Chromium (Debian's), driven by Playwright: upload and webcam snapshot.

Screenshots go to artifacts/ for a person to look at.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, photo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (CI installs it)"
)

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def write_y4m(image: Image.Image, path: Path, frames: int = 3) -> Path:
    """A raw YUV 4:2:0 video of a still photo, for Chromium's fake camera."""
    w, h = 640, 480
    ycbcr = image.convert("RGB").resize((w, h)).convert("YCbCr")
    y, cb, cr = (np.asarray(c, dtype=np.uint8) for c in ycbcr.split())
    cb = np.asarray(Image.fromarray(cb).resize((w // 2, h // 2)))
    cr = np.asarray(Image.fromarray(cr).resize((w // 2, h // 2)))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + y.tobytes() + cb.tobytes() + cr.tobytes())
    return path


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def launch(playwright, *extra):
    assert CHROMIUM, "CI must install Debian's chromium"
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS + list(extra))


def fake_camera_page(playwright, server: str, tmp_path: Path):
    """A browser whose camera films a face photo, on the app's page, camera permission granted."""
    ARTIFACTS.mkdir(exist_ok=True)
    video = write_y4m(Image.open(photo("codait_luciano.png")), tmp_path / "face.y4m")
    browser = launch(
        playwright,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    page = browser.new_context(viewport={"width": 1280, "height": 1400}, permissions=["camera"]).new_page()
    page.goto(server)
    return browser, page


def wait_for_result(page, text: str):
    page.get_by_text(text).first.wait_for(timeout=120_000)


def block(page, label: str):
    """The component whose label reads exactly ``label`` (the nearest .block around its label)."""
    heading = page.locator("[data-testid=block-label]").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    assert heading.count() == 1, f"{heading.count()} components labelled {label!r}"
    return heading.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]")


def loaded_size(img) -> tuple[int, int]:
    """The natural size of an <img> once the browser has decoded it; (0, 0) means it did not load."""
    img.evaluate("i => i.complete && i.naturalWidth ? null : new Promise(r => { i.onload = i.onerror = r; })")
    return tuple(img.evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def test_upload_apollo_shows_three_labelled_faces_and_the_chart(playwright, server):
    ARTIFACTS.mkdir(exist_ok=True)
    browser = launch(playwright)
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(server)
    page.locator("input[type=file]").first.set_input_files(str(photo("nasa_apollo11_crew.jpg")))
    page.get_by_role("button", name="Analyze").click()
    wait_for_result(page, "Found 3 faces")
    page.screenshot(path=str(ARTIFACTS / "upload_apollo.png"), full_page=True)
    # The annotated photo, in the "Faces" image component: loaded, and the photo's own size.
    faces = block(page, "Faces").locator("img")
    faces.first.wait_for(timeout=30_000)
    assert faces.count() == 1
    shown = loaded_size(faces)
    assert shown == Image.open(photo("nasa_apollo11_crew.jpg")).size, shown
    # The chart, in the "Probabilities per face" plot component (not the annotated PNG above): one
    # matplotlib figure, inlined as an image (Gradio picks the format) that the browser decoded, with one
    # panel per face side by side.
    chart = block(page, "Probabilities per face").locator("[data-testid=matplotlib] img")
    chart.first.wait_for(timeout=30_000)
    assert chart.count() == 1
    assert chart.get_attribute("src").startswith("data:image/")
    width, height = loaded_size(chart)
    assert abs(width / height - (3 * 3.6) / 2.4) < 0.1, (width, height)  # render.probability_chart: 3 columns
    # The results table shows one row per face, each with its box "[x1, y1, x2, y2]".
    page.wait_for_function("document.body.innerText.match(/\\[\\d+, \\d+, \\d+, \\d+\\]/g)?.length === 3")
    browser.close()


def test_webcam_snapshot_gets_a_labelled_face(playwright, server, tmp_path):
    browser, page = fake_camera_page(playwright, server, tmp_path)
    page.get_by_role("button", name="Capture from camera").first.click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("video").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let frames arrive
    page.screenshot(path=str(ARTIFACTS / "webcam_live.png"), full_page=True)
    page.get_by_role("button", name="capture photo").click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Analyze").click()
    wait_for_result(page, "Found 1 face")
    page.screenshot(path=str(ARTIFACTS / "webcam_snapshot.png"), full_page=True)
    browser.close()


def test_live_webcam_tab_labels_faces_and_shows_the_frame_rate(playwright, server, tmp_path):
    browser, page = fake_camera_page(playwright, server, tmp_path)
    page.get_by_role("tab", name="Live webcam").click()
    page.get_by_text("Click to Access Webcam").first.click()
    page.get_by_role("button", name="capture photo").click()  # the "Record" button starts streaming
    page.get_by_text("1 face(s)").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "live_webcam.png"), full_page=True)
    page.wait_for_function("/[1-9][0-9.]* fps|0\\.[1-9][0-9]* fps/.test(document.body.innerText)", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "live_webcam.png"), full_page=True)
    browser.close()
