"""End to end in a real Chromium (Debian's), driven by Playwright: every tab, on a desktop and on a phone.

Screenshots go to artifacts/ for a person to look at.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion.serving.render import label_font_px
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


DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
SIZES = pytest.mark.parametrize("size", ["desktop", "phone"])


def open_page(browser, server: str, size: str, **context):
    page = browser.new_context(viewport=DESKTOP if size == "desktop" else PHONE, **context).new_page()
    page.goto(server)
    return page


def fake_camera_page(playwright, server: str, tmp_path: Path, size: str = "desktop"):
    """A browser whose camera films a face photo, on the app's page, camera permission granted."""
    ARTIFACTS.mkdir(exist_ok=True)
    video = write_y4m(Image.open(photo("codait_luciano.png")), tmp_path / "face.y4m")
    browser = launch(
        playwright,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    return browser, open_page(browser, server, size, permissions=["camera"])


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


def status_of(page) -> str:
    return page.locator(".status").filter(visible=True).first.inner_text()


def wait_for_status(page, pattern: str, timeout: float = 120_000):
    """Until the visible tab's status line matches ``pattern`` (a regular expression)."""
    page.wait_for_function(
        "p => [...document.querySelectorAll('.status')].some(e => e.offsetParent && new RegExp(p).test(e.innerText))",
        arg=pattern,
        timeout=timeout,
    )


def upload_photo(page, path) -> None:
    page.locator("#photo-input input[type=file]").set_input_files(str(path))


def face_cards(page):
    return page.locator(".face-card").filter(visible=True)


def no_error_badges(page) -> bool:
    return page.locator("[data-testid=status-tracker].error").count() == 0


def check_readable_on_phone(page) -> None:
    """Box labels and scores at least 11 CSS px as rendered, and nothing wider than the screen."""
    faces = block(page, "Faces").locator("img")
    natural, shown = faces.evaluate("i => [i.naturalWidth, i.getBoundingClientRect().width]")
    assert natural and shown
    label_px = label_font_px(natural) * shown / natural  # the drawn text, at the size the browser shows it
    assert label_px >= 11, (natural, shown, label_px)
    sizes = page.locator("[data-testid=label] dd, [data-testid=label] dt").evaluate_all(
        "es => es.map(e => parseFloat(getComputedStyle(e).fontSize))"
    )
    assert sizes and min(sizes) >= 11, sizes
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px"


@SIZES
def test_photo_tab_shows_each_face_with_its_scores(playwright, server, size):
    ARTIFACTS.mkdir(exist_ok=True)
    browser = launch(playwright)
    page = open_page(browser, server, size)
    upload_photo(page, photo("nasa_apollo11_crew.jpg"))  # analysis starts on upload, no click needed
    wait_for_status(page, r"^3 faces: .* · [0-9.]+ s")
    face_cards(page).nth(2).wait_for(timeout=30_000)
    assert face_cards(page).count() == 3
    assert page.locator("[data-testid=label]").filter(visible=True).count() == 3  # gr.Label: the top three
    faces = block(page, "Faces").locator("img")
    natural = loaded_size(faces)
    assert max(natural) <= 1024 and natural[0] / natural[1] == pytest.approx(600 / 471, abs=0.01)
    assert no_error_badges(page)
    if size == "phone":
        check_readable_on_phone(page)
    page.screenshot(path=str(ARTIFACTS / f"photo_{size}.png"), full_page=True)
    browser.close()


def test_a_new_upload_replaces_the_old_results(playwright, server):
    browser = launch(playwright)
    page = open_page(browser, server, "desktop")
    upload_photo(page, photo("nasa_apollo11_crew.jpg"))
    wait_for_status(page, r"^3 faces")
    face_cards(page).nth(2).wait_for(timeout=30_000)
    upload_photo(page, photo("skimage_astronaut.png"))
    wait_for_status(page, r"^1 face: ")
    page.wait_for_function("() => document.querySelectorAll('.face-card').length === 1", timeout=30_000)
    assert "3 faces" not in page.locator("body").inner_text()
    body = page.locator("body").inner_text()
    assert "Face 2" not in body and "Face 3" not in body
    browser.close()


def test_an_error_stays_in_the_status_line(playwright, server, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not an image at all" * 20)
    browser = launch(playwright)
    page = open_page(browser, server, "phone")
    upload_photo(page, photo("nasa_apollo11_crew.jpg"))
    wait_for_status(page, r"^3 faces")
    upload_photo(page, bad)
    wait_for_status(page, r"Could not analyse this")
    assert face_cards(page).count() == 0  # the crew's results are gone, not left beside the error
    assert no_error_badges(page)
    page.screenshot(path=str(ARTIFACTS / "photo_error_phone.png"), full_page=True)
    browser.close()


def test_heatmaps_when_asked_for(playwright, server):
    browser = launch(playwright)
    page = open_page(browser, server, "desktop")
    assert not page.get_by_text("high relevance").is_visible()
    page.get_by_label("Why this emotion? Show a heatmap per face").check()
    upload_photo(page, photo("nasa_apollo11_crew.jpg"))
    wait_for_status(page, r"^3 faces")
    page.get_by_text("| heatmap").nth(2).wait_for(timeout=60_000)  # an ImageSlider per face
    assert page.get_by_text("high relevance").is_visible()  # the colour scale
    page.screenshot(path=str(ARTIFACTS / "photo_heatmaps_desktop.png"), full_page=True)
    browser.close()


def test_an_example_click_analyses_it(playwright, server):
    browser = launch(playwright)
    page = open_page(browser, server, "desktop")
    page.locator("[data-testid=dataset] img, .gallery-item img").first.wait_for(timeout=30_000)
    page.locator("[data-testid=dataset] img, .gallery-item img").first.click()  # the crew portrait comes first
    wait_for_status(page, r"^3 faces", timeout=180_000)
    face_cards(page).nth(2).wait_for(timeout=30_000)
    browser.close()


@SIZES
def test_several_photos_tab(playwright, server, size, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    browser = launch(playwright)
    page = open_page(browser, server, size)
    page.get_by_role("tab", name="Batch", exact=True).click()
    names = ["nasa_apollo11_crew.jpg", "codait_bryan.png", "noface_pen.jpg"]
    page.locator("#several-files input[type=file]").set_input_files([str(photo(n)) for n in names] + [str(bad)])
    wait_for_status(page, r"4 face\(s\) in 3 photo\(s\)")
    text = status_of(page)
    assert "noface_pen.jpg: no face found" in text and "broken.jpg" in text
    page.wait_for_function("() => document.body.innerText.match(/\\[\\d+, \\d+, \\d+, \\d+\\]/g)?.length === 4")
    assert no_error_badges(page)
    page.screenshot(path=str(ARTIFACTS / f"several_{size}.png"), full_page=True)
    browser.close()


def test_webcam_snapshot_gets_a_labelled_face(playwright, server, tmp_path):
    browser, page = fake_camera_page(playwright, server, tmp_path)
    page.get_by_role("button", name="Capture from camera").first.click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("video").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let frames arrive
    page.get_by_role("button", name="capture photo").click()
    wait_for_status(page, r"^1 face: ")  # a snapshot is analysed like an upload
    page.screenshot(path=str(ARTIFACTS / "webcam_snapshot_desktop.png"), full_page=True)
    browser.close()


@SIZES
def test_live_webcam_tab_labels_faces_and_shows_the_frame_rate(playwright, server, tmp_path, size):
    browser, page = fake_camera_page(playwright, server, tmp_path, size)
    page.get_by_role("tab", name="Webcam", exact=True).click()
    assert page.get_by_text("not used for live video").is_visible()  # says which backend it uses
    page.get_by_text("Click to Access Webcam").first.click()
    page.get_by_role("button", name="capture photo").click()  # the "Record" button starts streaming
    page.get_by_text(re.compile(r"1 face: ")).first.wait_for(timeout=60_000)
    page.wait_for_function("/[0-9.]+ frames\\/s/.test(document.body.innerText)", timeout=60_000)
    assert "model: " in page.locator("body").inner_text()
    opacity = page.locator("#live-info").evaluate("e => getComputedStyle(e.querySelector('p') || e).opacity")
    assert float(opacity) == 1.0  # the frame-rate line is not faded while the stream runs
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"live_{size}.png"), full_page=True)
    browser.close()


@pytest.fixture(scope="module")
def apollo_clip(tmp_path_factory) -> Path:
    from emotion.video import pan_clip

    return pan_clip(photo("nasa_apollo11_crew.jpg"), tmp_path_factory.mktemp("clip") / "apollo.mp4", seconds=2)


@SIZES
def test_video_tab_tracks_the_faces_with_a_timeline(playwright, server, size, apollo_clip):
    browser = launch(playwright)
    page = open_page(browser, server, size)
    page.get_by_role("tab", name="Video", exact=True).click()
    page.locator("#video-input input[type=file]").set_input_files(str(apollo_clip))  # analysis starts on upload
    wait_for_status(page, r"^3 face tracks in \d+ frames", timeout=180_000)
    assert block(page, "Faces through the video").locator("video").count() == 1
    plot = page.locator("#timeline")
    plot.locator("canvas, svg").first.wait_for(timeout=30_000)  # gr.LinePlot, drawn in the browser
    assert plot.locator("canvas, svg").first.bounding_box()["height"] > 150
    rows = page.get_by_role("row").filter(visible=True)
    rows.nth(3).wait_for(timeout=30_000)
    assert rows.count() == 4  # a header and one row per face
    assert no_error_badges(page)
    if size == "phone":
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, overflow
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / f"video_{size}.png"), full_page=True)
    browser.close()
