"""Benchmark: python -m emotion.bench [--json OUT] [--compare FOLDER] [--skip ...]

All numbers of one run come from the same machine and process, so read them as ratios:
1. classify stage: the seed's loop (one processor call, one forward and .item() per face)
   against the package's batched path, at 1, 8 and 32 faces, for the bundled model, a
   ViT-B/16-shaped model (random weights: speed does not depend on them) and any --compare folder;
2. end to end per photo of ../shared/photos: the Pipeline itself (its own stage timings) plus
   rendering; p50/p95;
3. served: concurrent gradio_client callers against `python app.py` on loopback.
Options (eager vs SDPA attention) are measured on the classify stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emotion.backends.local import LocalClassifier
from emotion.labels import LABELS

log = logging.getLogger(__name__)
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"


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


def bench_end_to_end(photos: list[Path], repeats: int, model: str) -> list[dict]:
    """The Pipeline as the app calls it, per photo: its own stage timings, plus drawing the result."""
    from emotion.pipeline import Pipeline
    from emotion.serving.render import draw_faces
    from emotion.settings import Settings

    pipeline = Pipeline(Settings(model=model))
    rows = []
    for path in photos:
        pipeline.analyze(path)  # warm-up
        stages = {k: [] for k in ("load", "detect", "classify", "render", "total")}
        for _ in range(repeats):
            result = pipeline.analyze(path)
            t = time.perf_counter()
            draw_faces(result.image, result)
            render = (time.perf_counter() - t) * 1000
            for key in ("load", "detect", "classify"):
                stages[key].append(result.timing_ms[key])
            stages["render"].append(render)
            stages["total"].append(result.timing_ms["total"] + render)
        row = {"photo": path.name, "size": list(result.image_size), "faces": len(result.faces)}
        for key, values in stages.items():
            row[f"{key}_p50_ms"] = percentile(values, 50)
            row[f"{key}_p95_ms"] = percentile(values, 95)
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


def start_app(model: str, timeout_s: float = 180.0):
    """``python app.py`` on a free loopback port, as a user starts it; returns (process, url)."""
    import socket
    import subprocess
    import sys

    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "EMOTION_MODEL": model}
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(root / "app.py")], cwd=root, env=env, stdout=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + timeout_s
    while True:
        try:
            Client(url, verbose=False)
            return proc, url
        except Exception:  # not listening yet
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("app.py did not start") from None
            time.sleep(0.5)


def bench_served(photos: list[Path], callers: int, requests_each: int, model: str) -> dict:
    """Concurrent gradio_client callers on loopback against the real app."""
    from gradio_client import Client, handle_file

    proc, url = start_app(model)
    latencies, errors, lock = [], [], threading.Lock()
    try:
        Client(url, verbose=False).predict(handle_file(str(photos[0])), "local", "", 0.3, api_name="/analyze")

        def caller(k: int):
            client = Client(url, verbose=False)
            for i in range(requests_each):
                photo = photos[(k + i) % len(photos)]
                t = time.perf_counter()
                try:
                    client.predict(handle_file(str(photo)), "local", "", 0.3, api_name="/analyze")
                    with lock:
                        latencies.append((time.perf_counter() - t) * 1000)
                except Exception as exc:  # counted, and reported below
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

        start = time.perf_counter()
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = {
        "callers": callers,
        "requests": callers * requests_each,
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "errors": len(errors),
        "error_samples": errors[:3],
    }
    log.info(
        "served: %d callers, %.2f req/s, p50 %.0f ms, p95 %.0f ms, %d errors",
        callers,
        result["requests_per_s"],
        result["p50_ms"],
        result["p95_ms"],
        len(errors),
    )
    return result


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
    if report.get("served"):
        s = report["served"]
        lines.append(
            f"\nserved: {s['callers']} callers x {s['requests'] // s['callers']} requests: "
            f"{s['requests_per_s']:.2f} req/s, p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
            f"{s['errors']} errors"
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
    parser.add_argument("--requests", type=int, default=5, help="requests per caller")
    parser.add_argument(
        "--compare", type=Path, nargs="*", default=[], help="model folders to time beside the bundled one"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["classify", "options", "end_to_end", "served"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
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
    if "served" not in args.skip and photos:
        report["served"] = bench_served(photos, args.callers, args.requests, "bundled")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
