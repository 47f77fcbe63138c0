"""A video's analysis for people: the annotated MP4, a timeline, a summary table, CSV and JSON downloads.

``video_outputs`` is the whole request for the Video tab and the /analyze_video endpoint; the other
functions are its parts (the CLI uses them too). The analysis itself is emotion.video's; everything
here turns its VideoAnalysis into files and Gradio's formats.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from emotion.labels import LABELS
from emotion.serving.render import COLORS
from emotion.video import VideoAnalysis, VideoLimits, VideoReader, analyze_video, limits_from

log = logging.getLogger(__name__)

SUMMARY_HEADERS = ["track", "dominant", "share of time", "frames", "first seen (s)", "last seen (s)", *LABELS]
TIMELINE_COLUMNS = ["t", "track", "emotion", "probability", "series"]
_MS = Fraction(1, 1000)
CSV_COLUMNS = [
    "video",
    "track",
    "frame",
    "t",
    "x1",
    "y1",
    "x2",
    "y2",
    "detection_score",
    "label",
    *LABELS,
    "model",
    "backend",
]


def video_outputs(
    pipeline,
    video_path,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    sample_fps: float | None = None,
    folder: Path,
    progress=None,
    limits: VideoLimits | None = None,
):
    """Analyse ``video_path`` and write its outputs into ``folder`` (one request's own folder).

    Returns, in this order:
      0. annotated video path (str): H.264 MP4, yuv420p, one frame per analysed frame at its own time;
      1. timeline (pandas DataFrame, TIMELINE_COLUMNS) for gr.LinePlot(x="t", y="probability", color="series");
      2. summary rows (list of lists, SUMMARY_HEADERS), one per track;
      3. message (str, Markdown-safe plain text);
      4. downloads [csv path, json path] (str), named after the video's file name;
      5. the JSON document (dict: VideoAnalysis.to_dict()).
    ``progress(done, total)`` is called after each analysed chunk of frames. Raises emotion.errors.InputError
    (or another EmotionError) with a message for the user.
    """
    limits = limits or limits_from(pipeline.settings)
    analysis = analyze_video(
        video_path,
        backend=backend,
        model=model,
        threshold=threshold,
        token=token,
        sample_fps=sample_fps,
        pipeline=pipeline,
        limits=limits,
        progress=progress,
    )
    threshold = pipeline.settings.threshold if threshold is None else threshold
    stem = safe_stem(video_path)
    folder = Path(folder)
    annotated = render_video(video_path, analysis, folder / f"{stem}_annotated.mp4", limits)
    csv_path, json_path = folder / f"{stem}_emotions.csv", folder / f"{stem}_emotions.json"
    csv_path.write_text(to_csv([(Path(video_path).name, analysis)]))
    document = analysis.to_dict()
    json_path.write_text(json.dumps(document, indent=2))
    return (
        str(annotated),
        timeline_frame(analysis, threshold),
        summary_rows(analysis),
        analysis.message,
        [str(csv_path), str(json_path)],
        document,
    )


def safe_stem(path) -> str:
    """The file's stem, reduced to characters that are safe in a download's name."""
    stem = re.sub(r"[^\w.-]+", "_", Path(str(path)).stem).strip("._")
    return stem[:80] or "video"


def timeline_frame(analysis: VideoAnalysis, threshold: float = 0.3):
    """Long format, one row per (track, analysed frame, emotion): t, track, emotion, probability, series.

    To stay readable, a track's plot keeps only the emotions that reach ``threshold`` at some point (always
    its dominant one); every probability is in the CSV and the JSON.
    """
    import pandas as pd

    rows = []
    for track in analysis.tracks:
        dominant = track.label
        shown = [k for k in LABELS if k == dominant or max(f.scores[k] for f in track.frames) >= threshold]
        for f in track.frames:
            for k in shown:
                rows.append((f.t, track.id, k, f.scores[k], f"track {track.id} {k}"))
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)


def summary_rows(analysis: VideoAnalysis) -> list[list]:
    rows = []
    for track in analysis.tracks:
        share = track.share
        rows.append(
            [
                track.id,
                track.label,
                round(share[track.label], 3),
                len(track.frames),
                round(track.first_t, 2),
                round(track.last_t, 2),
                *(round(share[k], 3) for k in LABELS),
            ]
        )
    return rows


def to_csv(named: list[tuple[str, VideoAnalysis]]) -> str:
    """One row per track per analysed frame it was seen in (smoothed probabilities), for each (video name,
    analysis)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for name, analysis in named:
        for track in analysis.tracks:
            for f in track.frames:
                writer.writerow(
                    [
                        name,
                        track.id,
                        f.index,
                        f"{f.t:.3f}",
                        *f.box,
                        f"{f.detection_score:.4f}",
                        f.label,
                        *(f"{f.scores[k]:.6f}" for k in LABELS),
                        analysis.model,
                        analysis.backend,
                    ]
                )
    return out.getvalue()


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _text_color(fill: str) -> str:
    r, g, b = ImageColor.getrgb(fill)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


def draw_tracks(image: Image.Image, boxes: list[tuple[int, object]], scale: float) -> Image.Image:
    """``image`` with a box and "#id label confidence" for each (track id, TrackFrame); boxes are in video
    pixels, ``scale`` maps them onto the image."""
    draw = ImageDraw.Draw(image)
    short = min(image.size)
    width = max(2, round(short / 200))
    font = _font(max(11, round(short / 28)))
    for track_id, f in boxes:
        color = COLORS[f.label]
        x1, y1, x2, y2 = (v * scale for v in f.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = f"#{track_id} {f.label} {f.confidence:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        ty = y1 - th if y1 - th >= 0 else y1  # above the box when there is room
        tx = min(max(0, x1), max(0, image.width - tw))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=color)
        draw.text((tx + width - left, ty + width - top), text, font=font, fill=_text_color(color))
    return image


def render_video(video_path, analysis: VideoAnalysis, out_path: Path, limits: VideoLimits | None = None) -> Path:
    """The analysed frames with their tracks drawn, as an H.264 MP4 a browser plays (yuv420p, even size).

    The video is decoded again with the same sampling, so no frame had to be kept in memory meanwhile;
    each output frame is shown at its own timestamp, so the clip lasts as long as the original.
    """
    import av

    limits = limits or VideoLimits()
    by_frame: dict[int, list] = {}
    for track in analysis.tracks:
        for f in track.frames:
            by_frame.setdefault(f.index, []).append((track.id, f))
    with VideoReader(video_path, limits) as reader:
        frames = reader.frames(analysis.sample_fps, limits.analyze_max_side)
        with av.open(str(out_path), "w", options={"movflags": "+faststart"}) as out:
            stream = None
            for index, ((_, image), expected) in enumerate(zip(frames, analysis.times)):
                if stream is None:
                    w, h = image.width - image.width % 2, image.height - image.height % 2  # yuv420p: even sides
                    stream = out.add_stream("libx264", rate=Fraction(analysis.sample_fps).limit_denominator(1000))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    # Millisecond timestamps: each frame keeps its own time (the sampling is not exactly regular).
                    stream.time_base = stream.codec_context.time_base = _MS
                    stream.options = {"crf": "23", "preset": "veryfast"}
                    scale = image.width / analysis.size[0]
                if image.size != (w, h):
                    image = image.crop((0, 0, w, h))
                draw_tracks(image, by_frame.get(index, []), scale)
                frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
                frame.pts = round(expected * 1000)
                frame.time_base = _MS  # not stream.time_base: the muxer may change that once the header is out
                for packet in stream.encode(frame):
                    out.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)
    log.info("annotated video: %s", out_path)
    return out_path
