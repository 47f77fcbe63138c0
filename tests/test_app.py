"""The real Gradio server, started here, called through gradio_client on /analyze."""

import json
from pathlib import Path

import pytest
from gradio_client import handle_file
from PIL import Image

from emotion.labels import LABELS
from tests.conftest import photo
from tests.test_pipeline import check_schema


def test_api_contract(client):
    info = client.view_api(return_format="dict", print_info=False)
    params = [p["parameter_name"] for p in info["named_endpoints"]["/analyze"]["parameters"]]
    assert params[:4] == ["image", "backend", "model", "threshold"]


def test_analyze_apollo_through_the_api(client):
    outputs = client.predict(handle_file(str(photo("nasa_apollo11_crew.jpg"))), "local", "", 0.3, api_name="/analyze")
    doc = outputs[-1]
    check_schema(doc, 3)
    assert doc["backend"] == "local" and doc["image_size"] == [600, 471]
    annotated, table, message, downloads, heatmaps = outputs[:5]
    assert heatmaps == []  # only on request
    assert message.startswith("**3 faces: ") and " s" in message  # counts per emotion and the time taken
    for label in {f["label"] for f in doc["faces"]}:
        assert label in message
    # The annotated photo at display size (this one is small enough to be shown whole), a JPEG.
    assert annotated.endswith("nasa_apollo11_crew_faces.jpg")
    with Image.open(annotated) as shown:
        assert shown.format == "JPEG" and shown.size == (600, 471)
    assert [row[0] for row in table["data"]] == [1, 2, 3] and table["headers"][-7:] == list(LABELS)
    # No download files in an API answer (each would be one more request for the client): the JSON has it all.
    assert downloads is None


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The handlers behind the page's own events (the same functions the API endpoints call)."""
    import app
    from emotion.settings import Settings

    return app.make_handlers(Settings(), tmp_path_factory.mktemp("exports"))


def test_the_pages_downloads_are_named_after_the_photo_and_hold_the_answer(page):
    *_, downloads, _, doc = page.analyze_photo(str(photo("nasa_apollo11_crew.jpg")))
    assert sorted(Path(p).name for p in downloads) == ["nasa_apollo11_crew.csv", "nasa_apollo11_crew.json"]
    json_file, csv_file = (next(p for p in downloads if p.endswith(ext)) for ext in (".json", ".csv"))
    exported = json.loads(open(json_file).read())
    assert [f["box"] for f in next(iter(exported.values()))["faces"]] == [f["box"] for f in doc["faces"]]
    assert len(open(csv_file).read().strip().splitlines()) == 4  # header + a row per face


def test_no_face_through_the_api(client):
    doc = client.predict(handle_file(str(photo("noface_pen.jpg"))), "local", "", 0.3, api_name="/analyze")[-1]
    assert doc["faces"] == [] and "No face" in doc["message"]


def test_errors_reach_the_client_as_messages_and_the_server_keeps_serving(client):
    with pytest.raises(Exception, match="neither an existing model folder"):
        client.predict(
            handle_file(str(photo("codait_bryan.png"))), "local", "../no/such/place", 0.3, api_name="/analyze"
        )
    with pytest.raises(Exception, match="Could not load the model 'nobody/no-such-model'"):
        client.predict(
            handle_file(str(photo("codait_bryan.png"))), "local", "nobody/no-such-model", 0.3, api_name="/analyze"
        )
    with pytest.raises(Exception, match="needs a Hugging Face access token"):
        client.predict(handle_file(str(photo("codait_bryan.png"))), "remote", "owner/model", 0.3, api_name="/analyze")
    doc = client.predict(handle_file(str(photo("codait_bryan.png"))), "local", "", 0.3, api_name="/analyze")[-1]
    check_schema(doc, 1)


def test_batch_of_photos_through_the_api(client, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    photos = [photo("nasa_apollo11_crew.jpg"), photo("codait_bryan.png"), bad, photo("noface_pen.jpg")]
    gallery, table, message, downloads, doc = client.predict(
        [handle_file(str(p)) for p in photos], "local", "", 0.3, api_name="/analyze_batch"
    )
    assert {name: len(d["faces"]) for name, d in doc["photos"].items()} == {
        "nasa_apollo11_crew.jpg": 3,
        "codait_bryan.png": 1,
        "noface_pen.jpg": 0,
    }
    assert "not an image" in doc["errors"]["broken.jpg"]
    assert "4 face(s) in 3 photo(s)" in message and "broken.jpg" in message
    assert "noface_pen.jpg: no face found" in message
    assert len(gallery) == 3 and len(table["data"]) == 4 and downloads is None  # the page has the files
    for d in doc["photos"].values():
        check_schema(d, len(d["faces"]))


def test_heatmaps_on_request(client):
    outputs = client.predict(
        handle_file(str(photo("nasa_apollo11_crew.jpg"))), "local", "", 0.3, None, True, api_name="/analyze"
    )
    heatmaps, doc = outputs[-2], outputs[-1]
    assert len(heatmaps) == 3
    assert [h["caption"] for h in heatmaps] == [f"{i}: {f['label']}" for i, f in enumerate(doc["faces"], start=1)]


def test_video_through_the_api(client, tmp_path):
    from emotion.video import pan_clip

    clip = pan_clip(photo("nasa_apollo11_crew.jpg"), tmp_path / "crew.mp4", seconds=2)
    video, timeline, summary, message, downloads, doc = client.predict(
        handle_file(str(clip)), api_name="/analyze_video"
    )
    assert [t["id"] for t in doc["tracks"]] == [1, 2, 3] and doc["frames_analyzed"] == 10  # 2 s at 5 fps
    assert all(len(t["frames"]) >= 9 for t in doc["tracks"]) and doc["backend"] == "local"
    for track in doc["tracks"]:
        times = [f["t"] for f in track["frames"]]
        assert times == sorted(times) and set(track["frames"][0]["scores"]) == set(LABELS)
    assert video.endswith(".mp4") and len(summary["data"]) == 3 and "3 face tracks" in message
    assert sorted(Path(p).name for p in downloads) == ["crew_emotions.csv", "crew_emotions.json"]
    assert set(timeline["columns"]) >= {"t", "probability", "series"}
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(Exception, match="not a video this app can read"):
        client.predict(handle_file(str(bad)), api_name="/analyze_video")
    doc = client.predict(handle_file(str(photo("codait_bryan.png"))), "local", "", 0.3, api_name="/analyze")[-1]
    check_schema(doc, 1)  # the server keeps serving


def test_a_large_photo_is_shown_smaller_with_a_full_size_download_on_the_page(client, page, tmp_path):
    big = tmp_path / "crew_large.jpg"
    with Image.open(photo("nasa_apollo11_crew.jpg")) as im:
        im.resize((2400, 1884)).save(big, quality=90)
    annotated, *_, downloads, _, doc = client.predict(handle_file(str(big)), "local", "", 0.3, api_name="/analyze")
    check_schema(doc, 3)
    with Image.open(annotated) as shown:
        assert shown.size == (1024, 804)  # a sensible display size
    assert downloads is None
    *_, downloads, _, _ = page.analyze_photo(str(big))
    full = next(p for p in downloads if p.endswith("crew_large_faces_full.jpg"))
    with Image.open(full) as image:
        assert image.size == (2400, 1884)


def test_the_pages_batch_downloads(page):
    *_, downloads, doc = page.analyze_photos([str(photo("nasa_apollo11_crew.jpg")), str(photo("codait_bryan.png"))])
    assert sorted(Path(p).name for p in downloads) == [
        "nasa_apollo11_crew_and_1_more.csv",
        "nasa_apollo11_crew_and_1_more.json",
    ]
    assert set(doc["photos"]) == {"nasa_apollo11_crew.jpg", "codait_bryan.png"}


def test_the_queue_polls_gradios_way_at_this_apps_rate():
    """emotion.serving.queue sets an attribute of Gradio's queue: an upgrade that drops it fails here."""
    import gradio as gr

    from emotion.serving.queue import POLL_S, queue

    with gr.Blocks() as demo:
        gr.Markdown("x")
    queue(demo, 2, 8)
    assert demo._queue.sleep_when_free == POLL_S
    assert demo._queue.max_size == 8 and demo._queue.default_concurrency_limit == 2
