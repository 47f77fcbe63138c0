"""python -m emotion.batch SOURCE --out FILE.parquet [--engine local|ray] [--model M] [--batch-size N]"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from emotion.batch.analyze import quiet_model_loading
from emotion.batch.job import DEFAULT_BATCH_SIZE, DEFAULT_PART_SIZE, ENGINES, run
from emotion.errors import EmotionError

log = logging.getLogger("emotion.batch")

DESCRIPTION = """\
Bulk analysis: every face of every image under SOURCE, one Parquet row per face.

SOURCE is a folder (read recursively; files with image suffixes, hidden ones skipped), a text file
listing image paths one per line (relative to the list file), or a URI folder such as s3://bucket/photos.

Output: one row per face (path, face 0.., x1 y1 x2 y2, detection_score, label, the seven scores,
uncertain); one row per image without a face (face and label null); one row per unreadable file
(error holds the message). While running, finished images are committed atomically to
FILE.parquet.parts/ (every --part-size images or every minute); at the end they are assembled into
FILE.parquet and the folder is removed.
Run the same command again after an interruption: images already written are skipped, no duplicates.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emotion.batch", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", metavar="SOURCE", help="folder, text file of paths, or URI folder (s3://...)")
    parser.add_argument("--out", required=True, metavar="FILE.parquet", help="the Parquet file to write (or resume)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="local (default, no Ray) or ray")
    parser.add_argument("--model", default="", help="'bundled' (default), a hub id or a model folder")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help="images per classification batch"
    )
    parser.add_argument(
        "--part-size",
        type=int,
        default=DEFAULT_PART_SIZE,
        metavar="N",
        help="images per committed part file (at least one part a minute)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="local: processes (default: one per core); ray: actors (default: one per GPU, else one per CPU)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every image")
    return parser.parse_args(argv)


def _stop(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt  # SIGTERM (a scheduler stopping the job) ends like Ctrl-C: finished work is kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # this command's own messages (engine, resume, Ray) are always shown
    previous = signal.signal(signal.SIGTERM, _stop)
    quiet_model_loading()
    try:
        summary = run(
            args.source,
            args.out,
            engine=args.engine,
            model=args.model,
            batch_size=args.batch_size,
            part_size=args.part_size,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except EmotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary.line(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
