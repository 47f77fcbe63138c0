"""Video: decode with PyAV, sample frames, find and classify faces chunk by chunk, follow them as tracks.

    >>> from emotion.video import analyze_video
    >>> result = analyze_video("clip.mp4", sample_fps=5)
    >>> [(t.id, t.label, len(t.frames)) for t in result.tracks]

Data path: the file is probed (limits, readable messages), frames are decoded and sampled at
``sample_fps`` (every decoded frame is read, only the sampled ones are converted), downscaled for
detection, and handed to ``Pipeline.analyze_many`` a chunk at a time: each frame is detected on its own
and ALL the faces of the chunk go through one classification forward. The tracker then follows the
faces from frame to frame and smooths each track's probabilities. Boxes come back in pixels of the
upright video frame.
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from emotion.errors import InputError
from emotion.labels import LABELS
from emotion.pipeline import Pipeline, check_threshold
from emotion.settings import Settings
from emotion.tracking import FaceTracker

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(".mp4 .m4v .mov .qt .webm .mkv .avi .mpg .mpeg .ogv .3gp .wmv .flv .ts .mts .m2ts".split())
# Containers FFmpeg opens but that hold still pictures: the CLI treats those files as photos.
_IMAGE_FORMATS = ("image2", "gif", "apng", "webp", "tiff")
NOT_A_VIDEO = "The file is not a video this app can read (MP4, WebM, MOV, AVI, MKV...). Is it complete?"


@dataclass(frozen=True)
class VideoLimits:
    """What one video request may cost, and how it is sampled. Candidates for Settings (see the report)."""

    sample_fps: float = 5.0  # frames analysed per second of video by default: expressions last longer than 0.2 s
    max_sample_fps: float = 30.0  # a higher request is refused (most videos have no more frames than that)
    max_duration_s: float = 600.0  # 10 min; longer videos are refused before any decoding
    max_side: int = 4096  # px, the larger side of a frame (4K); larger videos are refused
    max_frames: int = 600  # frames analysed per video; a long video is sampled more sparsely to fit
    max_mb: int = 500  # file size
    analyze_max_side: int = 960  # frames are downscaled to this for detection and crops; boxes are mapped back
    chunk_frames: int = 16  # frames whose faces share one classification forward (bounds memory too)
    # Tracks seen in fewer frames, or in less than this share of the frames between their first and last
    # sighting, are left out: a real face is found frame after frame, a false detection flickers.
    min_track_frames: int = 3
    min_track_presence: float = 0.5
    smoothing: float = 0.5  # weight of the newest frame in each track's moving average (at 5 fps: ~0.4 s memory)
    max_missed: int = 3  # sampled frames a face may go undetected before its track ends


def limits_from(settings: Settings) -> VideoLimits:
    """VideoLimits with any ``video_*`` field the settings carry (Settings may grow them later)."""
    defaults = VideoLimits()
    names = defaults.__dataclass_fields__
    values = {name: getattr(settings, f"video_{name}", getattr(defaults, name)) for name in names}
    return VideoLimits(**values)


@dataclass(frozen=True)
class VideoInfo:
    width: int  # upright frame size (rotation metadata applied)
    height: int
    fps: float  # the stream's average frame rate; 0 when the file does not say
    duration_s: float  # 0 when the file does not say
    codec: str
    rotation: int = 0  # degrees counter-clockwise that the frames are turned to be upright


@dataclass(frozen=True)
class TrackFrame:
    index: int  # which sampled frame (0-based), the same for every track seen in it
    t: float  # seconds from the start of the video
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the upright frame
    detection_score: float
    scores: dict[str, float]  # the track's smoothed probabilities at this frame, all seven labels
    raw_scores: dict[str, float]  # this frame's own classification

    @property
    def label(self) -> str:
        return max(self.scores, key=self.scores.get)

    @property
    def confidence(self) -> float:
        return self.scores[self.label]

    def to_dict(self) -> dict:
        return {
            "t": round(self.t, 3),
            "box": list(self.box),
            "label": self.label,
            "scores": {k: round(self.scores[k], 4) for k in LABELS},
            "raw_scores": {k: round(self.raw_scores[k], 4) for k in LABELS},
            "detection_score": round(self.detection_score, 4),
        }


@dataclass(frozen=True)
class VideoTrack:
    id: int  # 1, 2, ... in order of first appearance
    frames: tuple[TrackFrame, ...]  # in time order

    @property
    def share(self) -> dict[str, float]:
        """Fraction of this track's frames whose (smoothed) label is each emotion."""
        n = len(self.frames)
        return {k: sum(f.label == k for f in self.frames) / n for k in LABELS}

    @property
    def label(self) -> str:
        """The dominant emotion: the most frequent label; a tie goes to the higher mean probability."""
        share = self.share
        mean = {k: statistics.fmean(f.scores[k] for f in self.frames) for k in LABELS}
        return max(LABELS, key=lambda k: (share[k], mean[k]))

    @property
    def first_t(self) -> float:
        return self.frames[0].t

    @property
    def last_t(self) -> float:
        return self.frames[-1].t

    def to_dict(self) -> dict:
        share = self.share
        return {
            "id": self.id,
            "frames": [f.to_dict() for f in self.frames],
            "summary": {"label": self.label, "share": {k: round(share[k], 4) for k in LABELS}},
        }


@dataclass(frozen=True)
class VideoAnalysis:
    tracks: tuple[VideoTrack, ...]  # in order of first appearance
    times: tuple[float, ...]  # timestamp of every analysed frame, increasing
    fps: float  # the video's own frame rate
    sample_fps: float  # the rate frames were analysed at (lower than asked when the video is long)
    duration_s: float
    size: tuple[int, int]  # upright frame width, height
    model: str
    backend: str
    timing_ms: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user should know: a lowered rate, a damaged end, short tracks left out

    @property
    def frames_analyzed(self) -> int:
        return len(self.times)

    @property
    def message(self) -> str:
        n = len(self.tracks)
        text = (
            f"{n} face track{'s' if n != 1 else ''} in {self.frames_analyzed} frames analysed at "
            f"{self.sample_fps:g} fps ({self.duration_s:.1f} s of video)."
        )
        if not n:
            text = "No face found in this video. " + text
        return " ".join([text, *self.notes])

    def to_dict(self) -> dict:
        return {
            "tracks": [t.to_dict() for t in self.tracks],
            "fps": round(self.fps, 3),
            "sample_fps": round(self.sample_fps, 3),
            "duration_s": round(self.duration_s, 3),
            "frames_analyzed": self.frames_analyzed,
            "size": list(self.size),
            "model": self.model,
            "backend": self.backend,
            "timing_ms": {k: round(v, 1) for k, v in self.timing_ms.items()},
            "message": self.message,
        }


def is_video(path: str | Path) -> bool:
    """True for a file named like a video; for an unknown suffix, a file FFmpeg opens as moving pictures."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in Image.registered_extensions() or not path.is_file():
        return False
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) and not container.format.name.endswith(("_pipe", *_IMAGE_FORMATS))
    except Exception:  # noqa: BLE001  anything FFmpeg cannot open is not a video
        return False


def check_sample_fps(sample_fps, limits: VideoLimits) -> float:
    if sample_fps is None:
        return limits.sample_fps
    if isinstance(sample_fps, bool) or not isinstance(sample_fps, numbers.Real) or not math.isfinite(sample_fps):
        raise InputError(f"sample_fps must be a number of frames per second, not {sample_fps!r}.")
    if not 0 < sample_fps <= limits.max_sample_fps:
        raise InputError(f"sample_fps must be above 0 and at most {limits.max_sample_fps:g}, not {sample_fps:g}.")
    return float(sample_fps)


class VideoReader:
    """An open video: ``info`` from its header, then ``frames(rate)`` yields upright sampled frames.

    Use as a context manager. Every failure to read is an InputError with a message for the user.
    """

    def __init__(self, path: str | Path, limits: VideoLimits | None = None):
        import av

        self.limits = limits = limits or VideoLimits()
        self.notes: list[str] = []
        path = Path(path)
        if not path.is_file():
            raise InputError(f"No such video file: {path.name}")
        size = path.stat().st_size
        if size == 0:
            raise InputError("The file is empty.")
        if size > limits.max_mb * 2**20:
            raise InputError(f"The file is {size / 2**20:.0f} MB; the limit is {limits.max_mb} MB.")
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except Exception as exc:  # noqa: BLE001  FFmpeg fed arbitrary bytes may fail in many ways
            log.info("opening %s failed: %s: %s", path.name, type(exc).__name__, exc)
            raise InputError(NOT_A_VIDEO) from exc
        try:
            self.info = self._probe()
        except BaseException:
            self.container.close()
            raise

    def _probe(self) -> VideoInfo:
        limits, container = self.limits, self.container
        if not container.streams.video:
            if container.streams.audio:
                raise InputError("The file has no video track (audio only): please upload a video.")
            raise InputError("The file has no video frames: please upload a video.")
        self.stream = stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-level threads: decoding keeps up with detection on 2 cores
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise InputError(NOT_A_VIDEO)
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            duration = 0.0
        # Both limits are checked from the header, before a single frame is decoded.
        if max(width, height) > limits.max_side:
            raise InputError(
                f"The video is {width}x{height} pixels; the limit is {limits.max_side} px on the larger side. "
                "Please upload a smaller version."
            )
        if duration > limits.max_duration_s:
            raise InputError(
                f"The video is {_clock(duration)} long; the limit is {_clock(limits.max_duration_s)}. Please trim it."
            )
        rotation = self._rotation()
        if rotation % 180:
            width, height = height, width
        return VideoInfo(width, height, float(rate or 0), duration, ctx.name, rotation)

    def _rotation(self) -> int:
        """Phones store portrait video sideways with a display matrix; read it from the first frame."""
        self._stream_frames = self._decoded()  # one generator for the whole read: no decoded frame is lost
        self._first = next(self._stream_frames, None)
        if self._first is None:
            raise InputError("The video has no frames that could be decoded.")
        return round(self._first.rotation or 0) % 360

    def _decoded(self) -> Iterator:
        """Decoded frames; a damaged stretch ends the video there (with a note) instead of the request."""
        import av

        frames = self.container.decode(self.stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                log.info("decoding stopped: %s", exc)
                self.notes.append("The video is damaged or cut short: only the part before that was analysed.")
                return
            yield frame

    def plan(self, sample_fps: float) -> float:
        """The rate actually used: ``sample_fps``, lowered so a long video stays within max_frames."""
        duration, cap = self.info.duration_s, self.limits.max_frames
        if duration * sample_fps > cap:
            # Ticks at 0, 1/rate, ... up to the duration: (cap - 1) intervals make at most cap frames.
            lowered = math.floor((cap - 1) / duration * 1000) / 1000
            self.notes.append(
                f"The video is {_clock(duration)} long: it was sampled at {lowered:g} fps instead of "
                f"{sample_fps:g} to stay within {cap} analysed frames."
            )
            return lowered
        return sample_fps

    def expected_frames(self, rate: float) -> int:
        """An estimate for progress bars (the header's duration may be missing or approximate)."""
        if self.info.duration_s:
            return max(1, min(self.limits.max_frames, math.ceil(self.info.duration_s * rate)))
        return self.limits.max_frames

    def frames(self, rate: float, max_side: int | None = None) -> Iterator[tuple[float, Image.Image]]:
        """(seconds, upright RGB frame) at ``rate`` per second: the first frame at or after each tick.

        Frames are downscaled so their larger side is at most ``max_side``. Stops at max_frames. The
        frames of a reader are read once: a second pass needs a new reader.
        """
        info, limits, stream = self.info, self.limits, self.stream
        step = 1.0 / rate
        # A frame a little before its tick still counts (timestamps are rounded to the stream's time base).
        slack = 0.25 / info.fps if info.fps else 1e-3
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        scale = min(1.0, (max_side or max(info.width, info.height)) / max(info.width, info.height))
        next_t, count, index, last_t = 0.0, 0, 0, -1.0
        first, self._first = self._first, None
        for frame in _chain(first, self._stream_frames) if first is not None else self._stream_frames:
            t = frame.time - start if frame.time is not None else (index / info.fps if info.fps else last_t + step)
            index += 1
            if t <= last_t:  # a repeated or out-of-order timestamp: keep time increasing
                continue
            if t + slack < next_t:
                continue
            if t > limits.max_duration_s:
                self.notes.append(f"Only the first {_clock(limits.max_duration_s)} were analysed.")
                return
            if count >= limits.max_frames:
                self.notes.append(f"Analysis stopped after {limits.max_frames} frames ({t:.1f} s).")
                return
            last_t = t
            count += 1
            while next_t <= t + slack:  # after a gap in the video, the ticks catch up without a burst
                next_t += step
            yield max(0.0, t), self._picture(frame, scale)

    def _picture(self, frame, scale: float) -> Image.Image:
        w, h = frame.width, frame.height
        if scale < 1.0:
            # swscale resizes while converting to RGB: cheaper than a PIL resize afterwards.
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            image = frame.to_image(width=w, height=h, interpolation="BILINEAR")
        else:
            image = frame.to_image()
        if self.info.rotation:
            image = image.rotate(self.info.rotation, expand=True)  # PIL turns counter-clockwise, as the matrix
        return image

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _chain(first, rest):
    yield first
    yield from rest


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"


def analyze_video(
    path: str | Path,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    sample_fps: float | None = None,
    settings: Settings | None = None,
    pipeline: Pipeline | None = None,
    limits: VideoLimits | None = None,
    progress=None,
) -> VideoAnalysis:
    """Every face of a video, followed across frames and classified into the seven emotions.

    ``sample_fps`` frames per second are analysed (default VideoLimits.sample_fps); ``progress(done,
    total)`` is called after each chunk of frames (``total`` is an estimate). InputError for anything
    that is not a readable video within the limits.
    """
    pipeline = pipeline or Pipeline(settings)
    limits = limits or limits_from(pipeline.settings)
    threshold = check_threshold(threshold, pipeline.settings)
    rate = check_sample_fps(sample_fps, limits)
    start = time.perf_counter()
    with VideoReader(path, limits) as reader:
        info = reader.info
        rate = reader.plan(rate)
        total = reader.expected_frames(rate)
        tracker = FaceTracker(alpha=limits.smoothing, max_missed=limits.max_missed, threshold=threshold)
        scale = min(1.0, limits.analyze_max_side / max(info.width, info.height))
        records: dict[int, list[TrackFrame]] = {}
        times: list[float] = []
        timing = {"decode": 0.0, "detect": 0.0, "classify": 0.0, "track": 0.0}
        names = {"model": "", "backend": backend}
        chunk: list[tuple[float, Image.Image]] = []

        def run_chunk():
            batch = pipeline.analyze_many(
                [image for _, image in chunk],
                backend=backend,
                model=model,
                threshold=threshold,
                token=token,
                strict=True,
            )
            t0 = time.perf_counter()
            for (t, _), (_, result) in zip(chunk, batch.results):
                smoothed, ids = tracker.step(result)
                index = len(times)
                times.append(t)
                for face, raw, track_id in zip(smoothed.faces, result.faces, ids):
                    box = tuple(int(round(v / scale)) for v in face.box)
                    frame = TrackFrame(index, t, box, face.detection_score, face.scores, raw.scores)
                    records.setdefault(track_id, []).append(frame)
                timing["detect"] += result.timing_ms["detect"] + result.timing_ms["load"]
            timing["track"] += (time.perf_counter() - t0) * 1000
            first = batch.results[0][1]
            timing["classify"] += first.timing_ms["classify"]  # one forward for the chunk, reported on each frame
            names.update(model=first.model, backend=first.backend)
            chunk.clear()
            if progress:
                progress(len(times), max(total, len(times)))

        t_read = time.perf_counter()
        for item in reader.frames(rate, limits.analyze_max_side):
            timing["decode"] += (time.perf_counter() - t_read) * 1000
            chunk.append(item)
            if len(chunk) >= limits.chunk_frames:
                run_chunk()
            t_read = time.perf_counter()
        timing["decode"] += (time.perf_counter() - t_read) * 1000
        if chunk:
            run_chunk()
        notes = list(reader.notes)
    if not times:
        raise InputError("The video has no frames that could be decoded.")
    tracks = _finish_tracks(records, len(times), limits, notes)
    timing["total"] = (time.perf_counter() - start) * 1000
    if not names["model"]:  # no chunk ran; cannot happen with frames, kept for clarity
        names["model"] = model
    analysis = VideoAnalysis(
        tracks=tracks,
        times=tuple(times),
        fps=info.fps,
        sample_fps=rate,
        duration_s=info.duration_s or (times[-1] + 1 / rate),
        size=(info.width, info.height),
        model=names["model"],
        backend=names["backend"],
        timing_ms=timing,
        notes=tuple(notes),
    )
    log.info("%s: %d frame(s), %d track(s) in %.0f ms", Path(path).name, len(times), len(tracks), timing["total"])
    return analysis


def _finish_tracks(records: dict[int, list[TrackFrame]], frames: int, limits: VideoLimits, notes: list) -> tuple:
    """Tracks numbered 1, 2, ... by first appearance, without the brief or flickering ones (see VideoLimits)."""
    keep_from = min(limits.min_track_frames, frames)  # a video of one frame still reports its faces

    def steady(r: list[TrackFrame]) -> bool:
        span = r[-1].index - r[0].index + 1
        return len(r) >= keep_from and len(r) >= limits.min_track_presence * span

    kept = [r for _, r in sorted(records.items()) if steady(r)]
    if len(records) > len(kept):
        notes.append(
            f"{len(records) - len(kept)} brief or intermittent detection(s) were left out "
            f"(seen in fewer than {keep_from} frames, or in under {limits.min_track_presence:.0%} of their span)."
        )
    # Tracker ids grow with creation, and faces of one frame come left to right: sorted ids are first appearance.
    kept.sort(key=lambda r: (r[0].index, r[0].box[0]))
    return tuple(VideoTrack(i, tuple(r)) for i, r in enumerate(kept, start=1))


# --- clips made from a still photo: for tests and the benchmark -------------------------------------------


def pan_clip(
    photo: str | Path | Image.Image,
    path: str | Path,
    *,
    seconds: float = 3.0,
    fps: int = 12,
    size: tuple[int, int] = (320, 240),
    codec: str = "libx264",
    window: float = 0.85,
    zoom: float = 0.1,
) -> Path:
    """A video of ``photo`` seen through a moving, slowly zooming window (faces move and change size).

    ``window`` is the window's side as a fraction of the photo's; it zooms in by ``zoom`` over the clip
    and pans from the left edge to the right one. ``codec``: libx264 (MP4), libvpx (WebM), mjpeg (AVI)...
    """
    import av

    image = photo if isinstance(photo, Image.Image) else Image.open(photo).convert("RGB")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    n = max(1, round(seconds * fps))
    # x264's macroblock-tree rate control made the same frames encode differently from one run to the next
    # (measured on an AMD EPYC, one thread or several); without it a clip is the same every time, and so
    # are the tests and bench readings made on it.
    options = {"x264-params": "mbtree=0"} if codec == "libx264" else {}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for i in range(n):
            p = i / max(1, n - 1)
            w = image.width * window * (1 - zoom * p)
            h = w * size[1] / size[0]
            h = min(h, image.height)
            x = (image.width - w) * p
            y = (image.height - h) / 2
            frame = image.resize(size, Image.BILINEAR, box=(x, y, x + w, y + h))
            for packet in stream.encode(av.VideoFrame.from_image(frame).reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)


def bench_video(
    clip_path: str | Path | None = None,
    repeats: int = 2,
    *,
    sample_fps: float = 5.0,
    model: str = "",
    settings: Settings | None = None,
) -> dict:
    """Frames analysed per second on this machine, batched (one classification forward per chunk of frames)
    against one forward per frame, in the same run (alternating, after a warm-up): read the ratio.

    Without ``clip_path``: a 6 s 640x480 clip panned over ../shared/photos/nasa_apollo11_crew.jpg (3 faces).
    """
    pipeline = Pipeline(settings)
    label = str(clip_path) if clip_path else "apollo_pan.mp4 (made here: 6 s, 640x480, 15 fps, H.264)"
    with tempfile.TemporaryDirectory() as tmp:
        if clip_path is None:
            photo = Path(__file__).resolve().parents[1].parent / "shared" / "photos" / "nasa_apollo11_crew.jpg"
            clip_path = pan_clip(photo, Path(tmp) / "apollo_pan.mp4", seconds=6, fps=15, size=(640, 480))
        base = limits_from(pipeline.settings)
        modes = {"batched": base, "per_frame": replace(base, chunk_frames=1)}
        # Warm-up on two frames: models loaded, first-call costs paid, before anything is timed.
        analyze_video(clip_path, pipeline=pipeline, model=model, limits=replace(base, max_frames=2))
        runs: dict[str, list[VideoAnalysis]] = {name: [] for name in modes}
        for _ in range(max(1, repeats)):
            for name, limits in modes.items():
                runs[name].append(
                    analyze_video(clip_path, pipeline=pipeline, model=model, sample_fps=sample_fps, limits=limits)
                )
    report = {"clip": label, "sample_fps": sample_fps, "repeats": max(1, repeats)}
    for name, analyses in runs.items():
        a = analyses[0]
        total_ms = statistics.median(r.timing_ms["total"] for r in analyses)
        report[name] = {
            "chunk_frames": modes[name].chunk_frames,
            "frames": a.frames_analyzed,
            "faces": sum(len(t.frames) for t in a.tracks),
            "tracks": len(a.tracks),
            "total_ms": round(total_ms, 1),
            "frames_per_s": round(a.frames_analyzed / (total_ms / 1000), 2),
            **{f"{k}_ms": round(statistics.median(r.timing_ms[k] for r in analyses), 1) for k in a.timing_ms},
        }
    report["model"] = runs["batched"][0].model
    report["speedup_total"] = round(report["per_frame"]["total_ms"] / report["batched"]["total_ms"], 2)
    report["speedup_classify"] = round(report["per_frame"]["classify_ms"] / report["batched"]["classify_ms"], 2)
    return report
