"""Benchmark: python -m emotion.bench [--json OUT] [--compare FOLDER] [--skip ...]

All numbers of one run come from the same machine and process, so read them as ratios:
- classify: the seed's loop (one processor call, one forward and .item() per face) against the
  package's batched path, at 1, 8 and 32 faces, for the bundled model, a ViT-B/16-shaped model
  (random weights: speed does not depend on them) and any --compare folder;
- options: eager vs SDPA attention on the classify stage;
- detect: the app's MTCNN against stock facenet-pytorch MTCNN(keep_all=True).detect on each photo of
  ../shared/photos (downscaled to 1600 px as the app does), interleaved; the faces (score >= 0.9)
  and boxes compared, the times summed; beside it the detector held to one core (as a detection is while
  another analysis is in progress) and with two threads per network run instead of lanes;
- end_to_end: per photo, the Pipeline itself (its own stage timings) plus the picture an answer shows (drawn
  and saved); p50/p95; also a phone-sized photo (the Apollo portrait enlarged to 12.8 MP), and for photos
  over the page's size how long the picture shown takes to shrink, as the package does it and plain;
- startup: `python app.py` until its first /analyze answer, and the same for a first start (empty cache);
- served: one gradio_client caller, app.py against a do-nothing app with the same /analyze
  signature, request by request in turn: the p50 ratio; and what each uses of a core while idle;
- concurrency: the throughput of 4 callers against that of 1, in alternating rounds (4 rounds of 10
  requests per caller; the medians, and each round's ratio; also counted only while every caller was at
  work, each round's tail left out); each caller is a process of its own
  (gradio_client), as real clients are, on the same cores as the server; the CPU per request of the server
  and of the callers, and the ratio that CPU allows at full use of the cores; the same for the app with
  the detector's lanes off (EMOTION_DETECT_THREADS=1: a lone request on one core, as each of several
  concurrent ones) and the do-nothing app, each server's rounds taken in turn with the others';
- served and concurrency again with lean callers ("lean"): gradio_client given one TLS context made once.
  By default it makes a new HTTP client for most of its requests, and each loads the machine's CA bundle
  into a new TLS context, even for an http:// URL (about 170 ms of CPU per call here, on the server's
  cores): the lean readings show what the server itself costs and allows;
- video: frames/s analysed on a clip panned over the Apollo crew photo, classification batched across
  frames (one forward per 16 frames) against one forward per frame (emotion.video.bench_video);
- bulk: images/s of `python -m emotion.batch` over 200 images, local engine and Ray (emotion.batch.bench_bulk).
The three served sections share the one app.py process that startup started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emotion.backends.local import LocalClassifier
from emotion.labels import LABELS

log = logging.getLogger(__name__)
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
SECTIONS = ["classify", "options", "detect", "end_to_end", "startup", "served", "concurrency", "video", "bulk"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def fake_faces(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (120 + i % 40, 120 + i % 40, 3), dtype=np.uint8)) for i in range(n)]


def vit_base_folder(root: Path) -> Path:
    """A ViT-B/16 (ViTConfig() defaults, 86M parameters) with 7 labels and random weights."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = root / "vit-b16"
    if not (folder / "config.json").exists():
        labels = dict(enumerate(LABELS))
        config = ViTConfig(num_labels=7, id2label=labels, label2id={k: i for i, k in labels.items()})
        ViTForImageClassification(config).save_pretrained(folder)
        ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def seed_loop(clf: LocalClassifier, faces: list[Image.Image]) -> list[dict]:
    """How the hub models' cards classify: one face at a time, a Python float per label."""
    m = clf.loaded
    out = []
    for face in faces:
        inputs = m.processor(images=face, return_tensors="pt")
        with torch.no_grad():
            logits = m.model(pixel_values=inputs["pixel_values"].to(m.device, m.dtype)).logits
        probs = logits.softmax(-1)[0]
        out.append({m.model.config.id2label[i]: probs[i].item() for i in range(probs.shape[0])})
    return out


def timed(fn, repeats: int, min_seconds: float) -> float:
    """Median seconds per call, after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 5 * repeats:
            break
    return statistics.median(times)


def bench_classify(models: dict[str, tuple[str, str]], sizes: list[int], repeats: int) -> list[dict]:
    """``models``: display name -> (model, dtype). The seed loop always runs on the model as loaded."""
    rows = []
    for name, (model, dtype) in models.items():
        clf = LocalClassifier(model, dtype=dtype)
        m = clf.loaded
        for n in sizes:
            faces = fake_faces(n)
            loop = timed(lambda clf=clf, faces=faces: seed_loop(clf, faces), repeats, 1.0)
            batched = timed(lambda clf=clf, faces=faces: clf(faces), repeats, 1.0)
            rows.append(
                {
                    "model": name,
                    "faces": n,
                    "device": str(m.device),
                    "dtype": str(m.dtype),
                    "seed_loop_faces_per_s": n / loop,
                    "batched_faces_per_s": n / batched,
                    "speedup": loop / batched,
                }
            )
            log.info(
                "classify %s x%d: loop %.1f faces/s, batched %.1f faces/s (%.2fx)",
                name,
                n,
                n / loop,
                n / batched,
                loop / batched,
            )
    return rows


def bench_options(model: str, n: int, repeats: int) -> list[dict]:
    """Classify-stage variants on the CPU: eager vs SDPA attention."""
    from transformers import AutoModelForImageClassification

    faces = fake_faces(n)
    base = LocalClassifier(model, "cpu")
    pixel_values = base.preprocess(faces)
    rows = []

    def run(net):
        with torch.inference_mode():
            return net(pixel_values=pixel_values).logits

    reference = run(base.loaded.model)
    variants = {"sdpa (default)": base.loaded.model}
    try:
        variants["eager attention"] = AutoModelForImageClassification.from_pretrained(
            model, attn_implementation="eager", use_safetensors=True
        ).eval()
    except (ValueError, OSError) as exc:
        log.info("eager attention not available: %s", exc)
    base_time = timed(lambda: run(base.loaded.model), repeats, 1.0)
    for name, net in variants.items():
        t = timed(lambda net=net: run(net), repeats, 1.0)
        diff = (run(net).float().softmax(-1) - reference.float().softmax(-1)).abs().max().item()
        rows.append(
            {"variant": name, "faces": n, "faces_per_s": n / t, "vs_default": base_time / t, "max_prob_diff": diff}
        )
        log.info("option %s: %.1f faces/s (%.2fx), max prob diff %.4f", name, n / t, base_time / t, diff)
    return rows


def app_copy(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """The downscaled copy the app's detector sees (at most ``max_side`` px), and its scale."""
    from emotion.image import shrunk

    return shrunk(image, max_side)


def stock_boxes(mtcnn, image: Image.Image, min_score: float) -> list[tuple[float, ...]]:
    boxes, probs = mtcnn.detect(image)
    if boxes is None:
        return []
    w, h = image.size
    # Clipped to the image as the package's detector clips its boxes.
    return [
        (max(0.0, b[0]), max(0.0, b[1]), min(w, b[2]), min(h, b[3])) for b, p in zip(boxes, probs) if p >= min_score
    ]


def box_differences(reference: list, found: list) -> list[float] | None:
    """Largest coordinate difference (px) of each reference box to its nearest found box; None when the
    number of boxes differs (a face missed or added)."""
    if len(reference) != len(found):
        return None
    return [min(max(abs(a - b) for a, b in zip(ref, box)) for box in found) for ref in reference] if found else []


def bench_detect(photos: list[Path], repeats: int, variants: dict | None = None) -> dict:
    """The app's detector (settings as the app uses them) against stock facenet-pytorch
    ``MTCNN(keep_all=True).detect`` on the same downscaled copies, photo by photo, each detector's repeats
    back to back: medians per photo, summed. ``variants``: name -> another detector, timed the same way."""
    from facenet_pytorch import MTCNN

    from emotion.detectors import get_detector
    from emotion.image import load_image
    from emotion.settings import Settings

    settings = Settings()
    stock = MTCNN(keep_all=True)
    detectors = {"ours": get_detector("mtcnn", settings), **(variants or {})}
    rows = []
    for path in photos:
        image = load_image(path)
        small, _ = app_copy(image, settings.detect_max_side)
        runs = {"stock": lambda small=small: stock_boxes(stock, small, settings.min_detection_score)}
        # The same copy for all: the app's downscaling is not counted for any.
        runs.update(
            {name: (lambda d=detector, small=small: [f.box for f in d(small)]) for name, detector in detectors.items()}
        )
        times = {name: [] for name in runs}
        found = {}
        # Each detector's runs back to back, after one of its own that warms up and is not counted: timed
        # right after another detector, each was slower than after itself (ours 11% after stock's run, stock
        # 2% after ours: the other's threads, caches and memory), which the app, running ours alone, never is.
        for name, run in runs.items():
            for _ in range(repeats + 1):
                t = time.perf_counter()
                found[name] = run()
                times[name].append(time.perf_counter() - t)
        reference = found.pop("stock")
        row = {"photo": path.name, "size": list(small.size), "faces_stock": len(reference)}
        for name, values in times.items():
            row[f"{name}_ms"] = statistics.median(values[1:]) * 1000
        for name, boxes in found.items():
            diffs = box_differences(reference, boxes)
            row[f"{name}_faces"] = len(boxes)
            row[f"{name}_max_box_diff_px"] = None if diffs is None else max(diffs, default=0.0)
        rows.append(row)
        log.info(
            "detect %s: stock %.0f ms, %s",
            path.name,
            row["stock_ms"],
            ", ".join(f"{n} {row[f'{n}_ms']:.0f} ms ({row[f'{n}_faces']} faces)" for n in detectors),
        )
    summary = {"stock_ms": sum(r["stock_ms"] for r in rows)}
    for name in detectors:
        total = sum(r[f"{name}_ms"] for r in rows)
        diffs = [r[f"{name}_max_box_diff_px"] for r in rows]
        summary[name] = {
            "total_ms": total,
            "speedup_vs_stock": summary["stock_ms"] / total,
            "same_faces_on_every_photo": all(d is not None for d in diffs),
            "max_box_diff_px": max((d for d in diffs if d is not None), default=0.0),
        }
    return {"photos": rows, "summary": summary}


def phone_photo(folder: Path) -> Path | None:
    """The Apollo crew portrait enlarged to 4032 px wide (12.8 MP, a phone camera's size) as a JPEG in
    ``folder``: the shared photos are at most 5 MP, and a phone's upload is the common case on a Space."""
    source = PHOTOS / "nasa_apollo11_crew.jpg"
    if not source.exists():
        return None
    image = Image.open(source).convert("RGB")
    path = folder / "apollo_4032px.jpg"
    image.resize((4032, round(image.height * 4032 / image.width)), Image.BICUBIC).save(path, quality=92)
    return path


def _resize_pair(image: Image.Image, side: int, resample, plain) -> dict:
    """Milliseconds to shrink ``image`` to ``side`` px as the package shrinks the picture shown
    (emotion.image.shrunk with ``resample`` and REDUCING_GAP) and with one plain resize with ``plain``, in
    turn, a few times: medians."""
    from emotion.image import REDUCING_GAP, shrunk

    scale = side / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    ways = {"ms": lambda: shrunk(image, side, resample, REDUCING_GAP), "plain_ms": lambda: image.resize(size, plain)}
    times = {key: [] for key in ways}
    for _ in range(3):
        for key, fn in ways.items():
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) * 1000)
    return {key: statistics.median(v) for key, v in times.items()}


def bench_end_to_end(photos: list[Path], repeats: int, model: str) -> list[dict]:
    """The Pipeline as the app calls it, per photo: its own stage timings, plus the annotated picture an
    answer shows (drawn at the page's size and saved as JPEG). For photos over the page's size, also how long
    the picture shown takes to shrink as the package does it and with one plain LANCZOS resize (``shrink``)."""
    from emotion.pipeline import Pipeline
    from emotion.serving.export import save_image
    from emotion.serving.render import DISPLAY_SIDE, SHRINK, draw_faces
    from emotion.settings import Settings

    settings = Settings(model=model)
    pipeline = Pipeline(settings)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        phone = phone_photo(Path(tmp))
        for path in [*photos, *([phone] if phone else [])]:
            pipeline.analyze(path)  # warm-up
            stages = {k: [] for k in ("load", "detect", "classify", "render", "total")}
            for _ in range(repeats):
                result = pipeline.analyze(path)
                t = time.perf_counter()
                save_image(draw_faces(result.image, result, max_side=DISPLAY_SIDE), Path(tmp), "shown")
                render = (time.perf_counter() - t) * 1000
                for key in ("load", "detect", "classify"):
                    stages[key].append(result.timing_ms[key])
                stages["render"].append(render)
                stages["total"].append(result.timing_ms["total"] + render)
            row = {"photo": path.name, "size": list(result.image_size), "faces": len(result.faces)}
            for key, values in stages.items():
                row[f"{key}_p50_ms"] = percentile(values, 50)
                row[f"{key}_p95_ms"] = percentile(values, 95)
            shrink = {}
            if max(result.image_size) > DISPLAY_SIDE:
                shrink["shown"] = _resize_pair(result.image, DISPLAY_SIDE, SHRINK, Image.LANCZOS)
            if shrink:
                row["shrink"] = shrink
            rows.append(row)
            log.info(
                "%s (%dx%d, %d faces): total p50 %.0f ms, p95 %.0f ms",
                path.name,
                *result.image_size,
                row["faces"],
                row["total_p50_ms"],
                row["total_p95_ms"],
            )
    return rows


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def null_demo():
    """A do-nothing app: /analyze with app.py's inputs (photo file, backend, model, threshold, token, explain)
    and its outputs (annotated photo, table, status, downloads, heatmaps, JSON), filled with trivially cheap
    values: the photo itself, one row, no downloads (an API answer has none), no heatmaps. Timed beside
    app.py, its round trip is what upload, queue, pre- and postprocessing and the client cost without any
    analysis."""
    import gradio as gr

    def analyze(image, backend, model, threshold, token, explain):
        document = {"faces": [{"box": [0, 0, 1, 1], "label": "neutral", "scores": {label: 1 / 7 for label in LABELS}}]}
        rows = [[1, "neutral", 1.0, ""]]
        return image, rows, "1 face", None, [], document

    with gr.Blocks() as demo:
        inputs = [
            gr.Image(type="filepath"),
            gr.Radio(["local", "remote"], value="local"),
            gr.Dropdown(["bundled"], value="bundled", allow_custom_value=True),
            gr.Slider(0, 1, value=0.3),
            gr.Textbox(),
            gr.Checkbox(),
        ]
        outputs = [gr.Image(type="filepath"), gr.Dataframe(), gr.Markdown()]
        outputs += [gr.File(file_count="multiple"), gr.Gallery(), gr.JSON()]
        gr.Button().click(analyze, inputs, outputs, api_name="analyze")
    from emotion.serving.queue import queue

    return queue(demo, 2)  # as app.py sets up its queue: the same Gradio


def serve_null_app() -> None:
    """``python -c 'from emotion.bench import serve_null_app; serve_null_app()'``: the do-nothing app on
    GRADIO_SERVER_PORT, launched as app.py launches (its own process, Gradio's queue, the same allocator
    settings: what they save Gradio's own work is not counted as the analysis's)."""
    from emotion.serving import allocator

    allocator.tune()
    null_demo().launch(quiet=True)


class Server:
    """A Gradio app started as its own process on a free loopback port; ``seconds_to_first_answer`` is the
    time from starting the process to the first /analyze call that succeeded."""

    def __init__(self, command: list[str], model: str, probe: Path, timeout_s: float = 180.0, env: dict | None = None):
        import subprocess
        import sys

        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        env = {**os.environ, **(env or {})}
        env.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "EMOTION_MODEL": model})
        env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        root = Path(__file__).resolve().parents[1]
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, *command], cwd=root, env=env, stdout=subprocess.DEVNULL)
        deadline = time.time() + timeout_s
        while True:
            try:
                self.client = make_client(self.url)
                call(self.client, probe)
                break
            except Exception:  # not listening yet, or the model still loading
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close()
                    raise RuntimeError(f"{' '.join(command)} did not answer") from None
                time.sleep(0.2)
        self.seconds_to_first_answer = time.perf_counter() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def start_app(model: str, timeout_s: float = 180.0):
    """``python app.py`` on a free loopback port, as a user starts it, once it answers: (process, url)."""
    probe = PHOTOS / "codait_bryan.png"
    if not probe.exists():
        probe = Path(__file__).resolve().parents[1] / "examples" / "nasa_apollo11_crew.jpg"
    server = Server(["app.py"], model, probe, timeout_s)
    return server.proc, server.url


def make_client(url: str, lean: bool = False):
    """gradio_client's Client for ``url``; ``lean``: with one TLS context, made now, for all its requests."""
    import ssl

    from gradio_client import Client

    # ssl_verify is handed to httpx as its ``verify``, which takes a ready SSLContext as well as a bool.
    return Client(url, verbose=False, ssl_verify=ssl.create_default_context() if lean else True)


def call(client, photo: Path) -> float:
    """One /analyze round trip as an API user makes it (upload, queue, result, output files fetched): ms."""
    from gradio_client import handle_file

    t = time.perf_counter()
    client.predict(handle_file(str(photo)), "local", "", 0.3, None, False, api_name="/analyze")
    return (time.perf_counter() - t) * 1000


def bench_startup(model: str, probe: Path) -> tuple[dict, Server]:
    """``python app.py`` until its first /analyze answer: first with an empty cache (a first start ever: the
    networks are exported to ONNX), then as every later start is. The second server stays up for the
    later sections."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        first = Server(["app.py"], model, probe, env={"EMOTION_CACHE": cache})
        first.close()
    server = Server(["app.py"], model, probe)
    log.info(
        "startup: %.1f s from `python app.py` to the first answer (%.1f s for a first start, empty cache)",
        server.seconds_to_first_answer,
        first.seconds_to_first_answer,
    )
    result = {"seconds_to_first_answer": server.seconds_to_first_answer}
    result["first_start_empty_cache_s"] = first.seconds_to_first_answer
    return result, server


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (app.py's photo workers and their forkserver), from Linux's /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
    tree, grown = [pid], True
    while grown:
        more = [child for child, parent in parents.items() if parent in tree and child not in tree]
        tree += more
        grown = bool(more)
    return tree


def cpu_seconds(pid: int) -> float | None:
    """The CPU time a process and the processes under it have used so far, user + system (Linux's /proc;
    else None): a server's photo workers count as the server."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = _stat(member)
        except OSError:
            if member == pid:
                return None
            continue  # a worker that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def idle_cpu_percent(pid: int, seconds: float = 3.0) -> float | None:
    """The CPU a server process uses while nobody calls it, in % of one core (Linux's /proc; else None)."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    end = cpu_seconds(pid)
    return None if start is None or end is None else (end - start) / seconds * 100


def cpu_ms_per_request(pids: list[int], before: list, requests: int) -> float | None:
    """CPU the processes used since ``before`` (their cpu_seconds then), per request, in ms."""
    after = [cpu_seconds(pid) for pid in pids]
    if requests == 0 or any(v is None for v in (*before, *after)):
        return None
    return (sum(after) - sum(before)) / requests * 1000


def bench_served(app: Server, photo: Path, requests: int, model: str) -> dict:
    """One caller, app.py against the do-nothing app, request by request in turn: the p50 ratio is what the
    analysis adds to a round trip that Gradio costs anyway. Then the same with a lean client (``lean_``)."""
    null = Server(["-c", "from emotion.bench import serve_null_app; serve_null_app()"], model, photo)
    times = {"app": [], "null": [], "lean_app": [], "lean_null": []}
    try:
        clients = {"app": app.client, "null": null.client}
        clients.update(
            {f"lean_{k}": make_client(server.url, lean=True) for k, server in (("app", app), ("null", null))}
        )
        for client in clients.values():
            call(client, photo)  # warm
        idle = {"app": idle_cpu_percent(app.proc.pid), "null": idle_cpu_percent(null.proc.pid)}
        for _ in range(requests):
            for name, client in clients.items():
                times[name].append(call(client, photo))
    finally:
        null.close()
    result = {"photo": photo.name, "requests": requests}
    for name, value in idle.items():
        result[f"{name}_idle_cpu_percent"] = value
    for name, values in times.items():
        result[f"{name}_p50_ms"] = percentile(values, 50)
        result[f"{name}_p95_ms"] = percentile(values, 95)
    result["p50_ratio"] = result["app_p50_ms"] / result["null_p50_ms"]
    result["lean_p50_ratio"] = result["lean_app_p50_ms"] / result["lean_null_p50_ms"]
    log.info(
        "served %s: app p50 %.0f ms, do-nothing app p50 %.0f ms: %.2fx",
        photo.name,
        result["app_p50_ms"],
        result["null_p50_ms"],
        result["p50_ratio"],
    )
    return result


# One caller: a process of its own with its own gradio_client, as real clients are. (Threads of one process
# share its interpreter lock, and gradio_client spends about 0.2 s of CPU per call: as threads, four
# callers were held to about 5 calls/s by their own process, whatever the server could do.)
CALLER = """
import json, ssl, sys, time
from gradio_client import Client, handle_file
url, photo, lean = sys.argv[1], sys.argv[2], sys.argv[3] == "lean"
client = Client(url, verbose=False, ssl_verify=ssl.create_default_context() if lean else True)  # as make_client
print("ready", flush=True)
for line in sys.stdin:
    latencies, spans, errors = [], [], []
    for _ in range(int(line)):
        t, start = time.perf_counter(), time.monotonic()  # monotonic: one clock for every process
        try:
            client.predict(handle_file(photo), "local", "", 0.3, None, False, api_name="/analyze")
            latencies.append((time.perf_counter() - t) * 1000)
            spans.append((start, time.monotonic()))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"latencies": latencies, "spans": spans, "errors": errors}), flush=True)
"""


def steady_throughput(spans_per_caller: list[list[tuple[float, float]]]) -> float | None:
    """Requests/s while every caller was at work: from the first start to the moment the first caller made
    its last answer. After that moment fewer callers remain (the round's tail, which a round's whole wall
    time counts in); requests under way then count with the part of them done inside the window."""
    if not spans_per_caller or not all(spans_per_caller):
        return None
    begin = min(spans[0][0] for spans in spans_per_caller)
    end = min(spans[-1][1] for spans in spans_per_caller)
    done = sum(
        max(0.0, min(stop, end) - max(start, begin)) / (stop - start)
        for spans in spans_per_caller
        for start, stop in spans
        if stop > start
    )
    return done / (end - begin) if end > begin else None


class Callers:
    """``n`` caller processes, started once and kept for every round (``lean``: see make_client)."""

    def __init__(self, url: str, photo: Path, n: int, lean: bool = False):
        import subprocess
        import sys

        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        command = [sys.executable, "-c", CALLER, url, str(photo), "lean" if lean else "default"]
        self.procs = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(n)
        ]
        for proc in self.procs:
            if proc.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError("a caller process did not start")

    def run(self, callers: int, requests_each: int, server_pid: int | None = None) -> dict:
        """The first ``callers`` processes each make ``requests_each`` calls, all at the same time; with
        ``server_pid``, also the CPU the server and the callers used per request."""
        chosen = self.procs[:callers]
        pids = [proc.pid for proc in chosen]
        callers_before = [cpu_seconds(pid) for pid in pids]
        server_before = cpu_seconds(server_pid) if server_pid else None
        start = time.perf_counter()
        for proc in chosen:
            proc.stdin.write(f"{requests_each}\n")
            proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline()) for proc in chosen]
        wall = time.perf_counter() - start
        latencies = [ms for a in answers for ms in a["latencies"]]
        errors = [e for a in answers for e in a["errors"]]
        run = {"wall_s": wall, "requests_per_s": len(latencies) / wall, "latencies": latencies, "errors": errors}
        run["steady_requests_per_s"] = steady_throughput([a["spans"] for a in answers])
        if server_pid:
            run["server_cpu_ms"] = cpu_ms_per_request([server_pid], [server_before], len(latencies))
            run["callers_cpu_ms"] = cpu_ms_per_request(pids, callers_before, len(latencies))
        return run

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=30)


def bench_concurrency(
    server: Server, photo: Path, callers: int, requests_each: int, rounds: int, model: str | None = None
) -> dict:
    """Throughput of 1 caller and of ``callers`` callers (each its own process), in alternating rounds;
    medians of the rounds, and the CPU the server and the callers used per request (the callers share the
    machine's cores with the server). With ``model``, app.py with its detector's lanes off (``lanes_off``)
    and the do-nothing app (``do_nothing_app``) are measured the same way, their rounds taken in turn with
    the app's: what the lanes cost the ratio, and the ratio Gradio and the callers allow at all on this
    machine. Then the app and the do-nothing app again with lean callers (``lean``: see make_client),
    which leave the server nearly all of both cores."""
    result = {"photo": photo.name, "requests_per_caller": requests_each, "rounds": rounds, "callers": callers}
    servers = {"app": server}
    try:
        if model:
            # The same app with the detector's lanes off: a lone request then runs on one core, as each of
            # several concurrent ones does. What the lanes cost the ratio, and what they save one caller.
            servers["lanes_off"] = Server(["app.py"], model, photo, env={"EMOTION_DETECT_THREADS": "1"})
            servers["do_nothing_app"] = Server(
                ["-c", "from emotion.bench import serve_null_app; serve_null_app()"], model, photo
            )
        default = _interleaved(servers, photo, callers, requests_each, rounds)
        lean = _interleaved(
            {k: v for k, v in servers.items() if k != "lanes_off"}, photo, callers, requests_each, rounds, lean=True
        )
    finally:
        for name, other in servers.items():
            if name != "app":
                other.close()
    result.update(default.pop("app"))
    result["lean"] = lean.pop("app")
    result.update(default)
    if "do_nothing_app" in result:
        result["do_nothing_app"]["lean"] = lean["do_nothing_app"]
    for name, r in [("app", result), *default.items()]:
        log.info("concurrency, %s: %.2fx", name, r["throughput_ratio"])
    return result


def _interleaved(
    servers: dict[str, Server], photo: Path, callers: int, requests_each: int, rounds: int, lean: bool = False
) -> dict[str, dict]:
    """Each server's readings (as _summary gives them), their rounds taken in turn, so that the host's drift
    from minute to minute falls on all of them alike; the order turns round by round. The servers not being
    measured are stopped (SIGSTOP) meanwhile: idle, Gradio's queue still uses some of a core."""
    import signal

    pools = {name: Callers(srv.url, photo, callers, lean) for name, srv in servers.items()}
    runs = {name: {1: [], callers: []} for name in servers}
    names = list(servers)
    try:
        for name in names:
            pools[name].run(callers, 1)  # every caller warmed up
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                paused = [srv.proc.pid for other, srv in servers.items() if other != name]
                for pid in paused:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    for n, rs in runs[name].items():
                        rs.append(pools[name].run(n, requests_each, servers[name].proc.pid))
                finally:
                    for pid in paused:
                        os.kill(pid, signal.SIGCONT)
    finally:
        for pool in pools.values():
            pool.close()
    return {name: _summary(runs[name], callers) for name in names}


def _summary(runs: dict[int, list[dict]], callers: int) -> dict:
    """The medians of a server's rounds with 1 and with ``callers`` callers, and their ratios."""
    result = {}
    for n, rs in runs.items():
        latencies = [ms for r in rs for ms in r["latencies"]]
        cpu = {key: [r[key] for r in rs if r.get(key) is not None] for key in ("server_cpu_ms", "callers_cpu_ms")}
        steady = [r["steady_requests_per_s"] for r in rs if r["steady_requests_per_s"]]
        result[f"{n}_callers"] = {
            "requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
            "steady_requests_per_s": statistics.median(steady) if steady else None,
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            **{f"{key}_per_request": statistics.median(v) if v else None for key, v in cpu.items()},
            "errors": sum(len(r["errors"]) for r in rs),
            "error_samples": [e for r in rs for e in r["errors"]][:3],
        }
    result["errors"] = sum(result[f"{n}_callers"]["errors"] for n in runs)
    result["throughput_ratio"] = result[f"{callers}_callers"]["requests_per_s"] / result["1_callers"]["requests_per_s"]
    # Each N-caller round against the 1-caller round just before it: how far the host's drift moves the ratio.
    result["round_ratios"] = [m["requests_per_s"] / o["requests_per_s"] for o, m in zip(runs[1], runs[callers])]
    one, many = (result[f"{n}_callers"]["steady_requests_per_s"] for n in (1, callers))
    # The same while all the callers were at work (steady_throughput): a round's tail left out.
    result["steady_throughput_ratio"] = many / one if one and many else None
    result.update(cpu_bound(result[f"{callers}_callers"], result["1_callers"]["requests_per_s"]))
    return result


def cpu_bound(many: dict, one_per_s: float) -> dict:
    """The most the callers could get if they and the server used every core to the full, at the CPU each
    request cost them together in the reading ``many`` (N callers; they share the machine's cores with the
    server): requests/s, and that against one caller's throughput ``one_per_s``. The measured ratio can only
    come near it from below."""
    per_request = [many.get(f"{key}_cpu_ms_per_request") for key in ("server", "callers")]
    if None in per_request or not sum(per_request) or not one_per_s:
        return {}
    most = (os.cpu_count() or 1) / (sum(per_request) / 1000)
    return {"cpu_bound_requests_per_s": most, "cpu_bound_ratio": most / one_per_s}


def table(report: dict) -> str:
    lines = []
    if report.get("classify"):
        lines += [
            "classify stage (faces/s)",
            f"{'model':<14}{'faces':>6}{'seed loop':>12}{'batched':>10}{'speedup':>9}",
        ]
    for r in report.get("classify", []):
        lines.append(
            f"{r['model']:<14}{r['faces']:>6}{r['seed_loop_faces_per_s']:>12.1f}"
            f"{r['batched_faces_per_s']:>10.1f}{r['speedup']:>8.2f}x"
        )
    if report.get("options"):
        lines.append("\nclassify options (ViT-B/16, CPU)")
        for r in report["options"]:
            lines.append(
                f"  {r['variant']:<24}{r['faces_per_s']:>8.1f} faces/s {r['vs_default']:>6.2f}x"
                f"  max prob diff {r['max_prob_diff']:.4f}"
            )
    if report.get("end_to_end"):
        lines.append("\nend to end per photo, bundled model (ms, p50 / p95)")
        lines.append(f"{'photo':<26}{'faces':>6}{'load':>8}{'detect':>9}{'classify':>10}{'render':>8}{'total':>14}")
        for r in report["end_to_end"]:
            lines.append(
                f"{r['photo']:<26}{r['faces']:>6}{r['load_p50_ms']:>8.1f}{r['detect_p50_ms']:>9.1f}"
                f"{r['classify_p50_ms']:>10.1f}{r['render_p50_ms']:>8.1f}"
                f"{r['total_p50_ms']:>7.0f} /{r['total_p95_ms']:>5.0f}"
            )
        for r in report["end_to_end"]:
            for name, t in r.get("shrink", {}).items():
                lines.append(
                    f"  {r['photo']}: shrinking the picture {name} {t['ms']:.0f} ms, with a plain LANCZOS resize "
                    f"{t['plain_ms']:.0f} ms: {t['plain_ms'] / t['ms']:.2f}x"
                )
    if report.get("detect"):
        d = report["detect"]
        names = [k for k in d["summary"] if k != "stock_ms"]
        lines.append("\ndetect: the app's MTCNN against stock facenet-pytorch MTCNN(keep_all=True).detect (ms)")
        lines.append(f"{'photo':<26}{'size':>11}{'faces':>6}{'stock':>9}" + "".join(f"{n:>14}" for n in names))
        for r in d["photos"]:
            size = "x".join(map(str, r["size"]))
            lines.append(
                f"{r['photo']:<26}{size:>11}{r['faces_stock']:>6}{r['stock_ms']:>9.0f}"
                + "".join(f"{r[f'{n}_ms']:>14.0f}" for n in names)
            )
        for n in names:
            s = d["summary"][n]
            lines.append(
                f"  {n}: {s['total_ms']:.0f} ms vs stock {d['summary']['stock_ms']:.0f} ms: "
                f"{s['speedup_vs_stock']:.2f}x faster; same faces on every photo: {s['same_faces_on_every_photo']}; "
                f"largest box difference {s['max_box_diff_px']:.2g} px"
            )
    if report.get("startup"):
        seconds = report["startup"]["seconds_to_first_answer"]
        first = report["startup"].get("first_start_empty_cache_s")
        lines.append(f"\nstartup: {seconds:.1f} s from `python app.py` to its first /analyze answer")
        if first is not None:
            lines.append(f"first start ever (empty cache: the ONNX exports made): {first:.1f} s")
    if report.get("served"):
        s = report["served"]
        lines.append(
            f"\nserved ({s['photo']}, 1 caller, {s['requests']} requests each): app p50 {s['app_p50_ms']:.0f} ms "
            f"(p95 {s['app_p95_ms']:.0f}), do-nothing app p50 {s['null_p50_ms']:.0f} ms "
            f"(p95 {s['null_p95_ms']:.0f}): {s['p50_ratio']:.2f}x"
        )
        if s.get("lean_p50_ratio") is not None:
            lines.append(
                f"  lean client: app p50 {s['lean_app_p50_ms']:.0f} ms, do-nothing app p50 "
                f"{s['lean_null_p50_ms']:.0f} ms: {s['lean_p50_ratio']:.2f}x"
            )
        if s.get("app_idle_cpu_percent") is not None:
            lines.append(
                f"idle, nobody calling: app {s['app_idle_cpu_percent']:.1f}% of a core, "
                f"do-nothing app {s['null_idle_cpu_percent']:.1f}%"
            )
    if report.get("concurrency"):
        c = report["concurrency"]
        one, many = c["1_callers"], c[f"{c['callers']}_callers"]
        lines.append(
            f"\nconcurrency ({c['photo']}): 1 caller {one['requests_per_s']:.2f} req/s (p50 {one['p50_ms']:.0f} ms), "
            f"{c['callers']} callers {many['requests_per_s']:.2f} req/s (p50 {many['p50_ms']:.0f} ms): "
            f"{c['throughput_ratio']:.2f}x, {c['errors']} errors"
        )
        if c.get("steady_throughput_ratio"):
            lines.append(
                f"  while all {c['callers']} callers were at work (each round's tail, where fewer are, left out): "
                f"{one['steady_requests_per_s']:.2f} vs {many['steady_requests_per_s']:.2f} req/s: "
                f"{c['steady_throughput_ratio']:.2f}x"
            )
        if c.get("round_ratios"):
            lines.append(
                f"  {c['rounds']} rounds of {c['requests_per_caller']} requests per caller, the ratio of each "
                f"round to the 1-caller round before it: {min(c['round_ratios']):.2f}-{max(c['round_ratios']):.2f}x"
            )
        cpu = [
            f"{key} {one.get(f'{key}_cpu_ms_per_request') or 0:.0f} ms with 1 caller, "
            f"{many.get(f'{key}_cpu_ms_per_request') or 0:.0f} ms with {c['callers']}"
            for key in ("server", "callers")
        ]
        lines.append("  CPU per request: " + "; ".join(cpu))
        if c.get("cpu_bound_ratio"):
            lines.append(
                f"  with every core used to the full at that CPU per request: at most "
                f"{c['cpu_bound_requests_per_s']:.2f} req/s, {c['cpu_bound_ratio']:.2f}x one caller"
            )
        readings = [("lanes off (EMOTION_DETECT_THREADS=1), same callers", c.get("lanes_off"))]
        readings += [("do-nothing app, same callers", c.get("do_nothing_app"))]
        readings += [
            ("lean callers", c.get("lean")),
            ("do-nothing app, lean callers", (c.get("do_nothing_app") or {}).get("lean")),
        ]
        for name, r in readings:
            if r:
                r_one, r_many = r["1_callers"], r[f"{c['callers']}_callers"]
                steady = r.get("steady_throughput_ratio")
                lines.append(
                    f"  {name}: {r_one['requests_per_s']:.2f} (p50 {r_one['p50_ms']:.0f} ms) vs "
                    f"{r_many['requests_per_s']:.2f} req/s: "
                    f"{r['throughput_ratio']:.2f}x"
                    + (f" ({steady:.2f}x while all were at work)" if steady else "")
                    + f"; CPU per request with {c['callers']}: server "
                    f"{r_many.get('server_cpu_ms_per_request') or 0:.0f} ms, callers "
                    f"{r_many.get('callers_cpu_ms_per_request') or 0:.0f} ms"
                    + (
                        f" (at most {r['cpu_bound_ratio']:.2f}x at full use of the cores)"
                        if r.get("cpu_bound_ratio")
                        else ""
                    )
                )
    if report.get("video"):
        v = report["video"]
        b, f = v["batched"], v["per_frame"]
        lines.append(
            f"\nvideo ({v['clip']}, {b['frames']} frames at {v['sample_fps']:g} fps, {b['tracks']} tracks): "
            f"{b['frames_per_s']:.2f} frames/s batched, {f['frames_per_s']:.2f} one forward per frame; "
            f"classify {b['classify_ms']:.0f} vs {f['classify_ms']:.0f} ms: {v['speedup_classify']:.2f}x"
        )
    if report.get("bulk"):
        rates = {k: v for k, v in report["bulk"].items() if k != "images"}
        lines.append(
            f"\nbulk ({report['bulk']['images']} images, python -m emotion.batch, end to end): "
            + ", ".join(f"{engine} {rate:.2f} images/s" for engine, rate in rates.items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--callers", type=int, default=4)
    # Per caller and round. A round's end, where fewer than all the callers are still at work, weighs more
    # in a short round: with 5, 4 callers reached 91% of what their CPU per request allows, with 20 about
    # 94% (measured). And a round of 5 is 2 s of a host whose speed wanders from minute to minute: more
    # rounds of 10 give a steadier median.
    parser.add_argument("--requests", type=int, default=10, help="requests per caller")
    parser.add_argument(
        "--compare", type=Path, nargs="*", default=[], help="model folders to time beside the bundled one"
    )
    parser.add_argument("--served-requests", type=int, default=20, help="requests to each app in 'served'")
    parser.add_argument("--rounds", type=int, default=4, help="alternating 1-caller / N-caller rounds")
    parser.add_argument("--bulk-images", type=int, default=200, help="images for the 'bulk' section")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio_client logs every request at INFO
    torch.manual_seed(0)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        }
    }
    photos = sorted(p for p in args.photos.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    with tempfile.TemporaryDirectory() as tmp:
        vit_b = str(vit_base_folder(Path(tmp)))
        if "classify" not in args.skip:
            models = {"bundled": ("bundled", "auto"), "ViT-B/16": (vit_b, "auto")}
            models.update({folder.name: (str(folder), "auto") for folder in args.compare})
            report["classify"] = bench_classify(models, args.sizes, args.repeats)
        if "options" not in args.skip:
            report["options"] = bench_options(vit_b, 8, max(3, args.repeats // 2))
    if "end_to_end" not in args.skip and photos:
        report["end_to_end"] = bench_end_to_end(photos, args.repeats, "bundled")
    if "detect" not in args.skip and photos:
        from emotion.detectors.mtcnn import MTCNNDetector

        # The alternatives: what a detection gets while another analysis is in progress (one core), and both
        # cores given to each network run instead of the work spread over them.
        cpu = torch.device("cpu")
        variants = {"1 core": MTCNNDetector(cpu, threads=1), "2 threads per run": MTCNNDetector(cpu, threads=2)}
        report["detect"] = bench_detect(photos, max(3, args.repeats // 2), variants)
    if photos and not {"startup", "served", "concurrency"} <= set(args.skip):
        probe = next((p for p in photos if p.name == "nasa_apollo11_crew.jpg"), photos[0])
        startup, app = bench_startup("bundled", probe)
        try:
            if "startup" not in args.skip:
                report["startup"] = startup
            if "served" not in args.skip:
                report["served"] = bench_served(app, probe, args.served_requests, "bundled")
            if "concurrency" not in args.skip:
                report["concurrency"] = bench_concurrency(
                    app, probe, args.callers, args.requests, args.rounds, "bundled"
                )
        finally:
            app.close()
    if "video" not in args.skip and photos:
        from emotion.video import bench_video

        report["video"] = bench_video(repeats=max(1, args.repeats // 2))
    if "bulk" not in args.skip and photos:
        from emotion.batch import bench_bulk

        report["bulk"] = {"images": args.bulk_images, **bench_bulk(args.photos, n=args.bulk_images)}
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
