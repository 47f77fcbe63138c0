"""Command line: python -m emotion PHOTO... [--json] [--model M] [--backend local|remote]."""

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
    parser = argparse.ArgumentParser(prog="python -m emotion", description="Find faces and classify their emotions.")
    parser.add_argument("photos", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="print one JSON document for all photos")
    parser.add_argument("--model", default="", help="'bundled' (default), a hub id or a model folder")
    parser.add_argument("--backend", choices=["local", "remote"], default="local")
    parser.add_argument("--threshold", type=float, default=Settings.threshold)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--csv", type=Path, help="also write a CSV file, one row per face")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write each photo with its labelled boxes here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")

    from emotion.pipeline import Pipeline
    from emotion.serving.export import to_csv
    from emotion.serving.render import draw_faces

    pipeline = Pipeline(Settings(device=args.device))
    documents, named, failed = {}, [], 0
    for photo in args.photos:
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
        args.csv.write_text(to_csv(named))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
