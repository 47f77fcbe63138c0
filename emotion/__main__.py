"""Command line: python -m emotion PHOTO_OR_VIDEO... [--json] [--model M] [--backend local|remote].

Videos (found by their name, or for an unknown suffix by probing the container) are analysed with
emotion.video; photos exactly as before.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from emotion.errors import EmotionError
from emotion.settings import Settings

log = logging.getLogger("emotion")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion", description="Find faces in photos and videos and classify their emotions."
    )
    parser.add_argument("photos", nargs="+", metavar="FILE", help="image or video files")
    parser.add_argument("--json", action="store_true", help="print one JSON document for all files")
    parser.add_argument("--model", default="", help="'bundled' (default), a hub id or a model folder")
    parser.add_argument("--backend", choices=["local", "remote"], default="local")
    parser.add_argument("--threshold", type=float, default=Settings.threshold)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--csv",
        type=Path,
        help="also write a CSV file: one row per face (photos), one row per track per analysed frame (videos); "
        "with both, the videos' rows go to NAME_videos.csv",
    )
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write each file with its labelled boxes here")
    parser.add_argument("--sample-fps", type=float, default=None, help="video frames analysed per second (default 5)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")

    from emotion.pipeline import Pipeline
    from emotion.serving.export import to_csv
    from emotion.serving.render import draw_faces
    from emotion.video import is_video

    pipeline = Pipeline(Settings(device=args.device))
    documents, named, videos, failed = {}, [], [], 0
    for photo in args.photos:
        if is_video(photo):
            ok = _video(pipeline, photo, args, documents, videos)
            failed += not ok
            continue
        try:
            result = pipeline.analyze(photo, backend=args.backend, model=args.model, threshold=args.threshold)
        except EmotionError as exc:
            failed += 1
            print(f"{photo}: error: {exc}", file=sys.stderr)
            documents[photo] = {"error": str(exc)}
            continue
        documents[photo] = result.to_dict()
        named.append((photo, result))
        if not args.json:
            print(f"{photo}: {result.message}")
            for i, face in enumerate(result.faces, start=1):
                extra = f" ({' + '.join(face.above_threshold)})" if len(face.above_threshold) > 1 else ""
                print(f"  face {i} at {list(face.box)}: {face.label} {face.confidence:.0%}{extra}")
        if args.annotate:
            args.annotate.mkdir(parents=True, exist_ok=True)
            out = args.annotate / f"{Path(photo).stem}_faces.png"
            draw_faces(result.image, result).save(out)
            log.info("annotated image: %s", out)
    if args.json:
        json.dump(documents, sys.stdout, indent=2)
        print()
    if args.csv:
        _write_csv(args.csv, named, videos, to_csv)
    return 1 if failed else 0


def _video(pipeline, path: str, args, documents: dict, videos: list) -> bool:
    from emotion.serving.video import render_video, safe_stem
    from emotion.video import analyze_video

    try:
        analysis = analyze_video(
            path,
            backend=args.backend,
            model=args.model,
            threshold=args.threshold,
            sample_fps=args.sample_fps,
            pipeline=pipeline,
        )
    except EmotionError as exc:
        print(f"{path}: error: {exc}", file=sys.stderr)
        documents[path] = {"error": str(exc)}
        return False
    documents[path] = analysis.to_dict()
    videos.append((path, analysis))
    if not args.json:
        print(f"{path}: {analysis.message}")
        for track in analysis.tracks:
            print(
                f"  track {track.id} ({track.first_t:.1f}-{track.last_t:.1f} s, {len(track.frames)} frames): "
                f"{track.label} {track.share[track.label]:.0%} of the time"
            )
    if args.annotate:
        args.annotate.mkdir(parents=True, exist_ok=True)
        out = render_video(path, analysis, args.annotate / f"{safe_stem(path)}_annotated.mp4")
        log.info("annotated video: %s", out)
    return True


def _write_csv(target: Path, named: list, videos: list, photo_csv) -> None:
    from emotion.serving.video import to_csv as video_csv

    if named or not videos:
        target.write_text(photo_csv(named))
    if videos:
        # Photos and videos have different columns: the videos get their own file when both are present.
        path = target.with_name(f"{target.stem}_videos{target.suffix}") if named else target
        path.write_text(video_csv([(Path(p).name, a) for p, a in videos]))


if __name__ == "__main__":
    sys.exit(main())
