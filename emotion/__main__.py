"""Command line: python -m emotion PHOTO... [--json] [--model M] [--backend local|remote]."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from emotion.errors import EmotionError
from emotion.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion", description="Find faces and classify their emotions.")
    parser.add_argument("photos", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="print one JSON document for all photos")
    parser.add_argument("--model", default="", help="'bundled' (default), a hub id or a model folder")
    parser.add_argument("--backend", choices=["local", "remote"], default="local")
    parser.add_argument("--threshold", type=float, default=Settings.threshold)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")

    from emotion.pipeline import analyze

    settings = Settings(device=args.device)
    documents, failed = {}, 0
    for photo in args.photos:
        try:
            result = analyze(photo, backend=args.backend, model=args.model, threshold=args.threshold, settings=settings)
        except EmotionError as exc:
            failed += 1
            print(f"{photo}: error: {exc}", file=sys.stderr)
            documents[photo] = {"error": str(exc)}
            continue
        documents[photo] = result.to_dict()
        if not args.json:
            print(f"{photo}: {result.message}")
            for i, face in enumerate(result.faces, start=1):
                extra = f" ({' + '.join(face.above_threshold)})" if len(face.above_threshold) > 1 else ""
                print(f"  face {i} at {list(face.box)}: {face.label} {face.confidence:.0%}{extra}")
    if args.json:
        json.dump(documents, sys.stdout, indent=2)
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
