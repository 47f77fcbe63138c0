"""One chunk of paths -> one table of rows; the unit of work of both engines (a process or a Ray actor).

Images are read and decoded here, one by one, so an unreadable file becomes an error row; then the
readable ones go through ``Pipeline.analyze_many``: each is detected on its own and all their faces are
classified in ONE forward pass. That is the batching across images, and it is the package's own code
path, so the rows are the ones ``python -m emotion`` would print.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from emotion.batch.rows import analysis_rows, error_row, to_table
from emotion.batch.sources import read_source
from emotion.errors import InputError, ModelError
from emotion.image import load_image
from emotion.pipeline import Pipeline
from emotion.settings import BUNDLED, Settings

log = logging.getLogger(__name__)


def spread_batch(images: int, batch_size: int, workers: int) -> int:
    """The batch size that gives every worker work: a run of 12 images on 2 workers is 2 batches of 6, not
    one of 12 (detection, most of the time per image, runs one image at a time whatever the batch)."""
    return max(1, min(batch_size, -(-images // max(1, workers))))


def model_name(model: str, settings: Settings) -> str:
    """The name recorded with the rows: what --model said, else the settings' default."""
    return (model or "").strip() or settings.model or BUNDLED


class ChunkAnalyzer:
    """Builds the pipeline once (MTCNN and the classifier are loaded here, not per chunk)."""

    def __init__(self, settings: Settings | None = None, model: str = ""):
        self.pipeline = Pipeline(settings)
        self.model = model_name(model, self.pipeline.settings)
        self.pipeline.backend("local", self.model)  # load now: a bad --model fails before any image is read

    def __call__(self, paths: list[str]) -> pa.Table:
        rows: list[list[dict]] = [[] for _ in paths]  # per input, so the table keeps the input order
        readable, pictures = [], []
        for i, path in enumerate(paths):
            try:
                pictures.append(load_image(read_source(path), self.pipeline.settings.max_image_pixels))
                readable.append(i)
            except InputError as exc:
                rows[i] = [error_row(path, str(exc))]
            except OSError as exc:  # a URI that cannot be opened, a permission error...
                rows[i] = [error_row(path, f"The file could not be read: {exc.strerror or exc}")]
        for i, analysis in zip(readable, self._analyze(pictures, [paths[i] for i in readable])):
            failed = isinstance(analysis, str)  # the message of an analysis that raised
            rows[i] = [error_row(paths[i], analysis)] if failed else analysis_rows(paths[i], analysis)
        return to_table([row for image_rows in rows for row in image_rows], self.model)

    def _analyze(self, pictures: list, paths: list[str]) -> list:
        """An Analysis per picture; a message in place of one whose analysis failed."""
        if not pictures:
            return []
        try:
            # strict: every picture is already decoded, so nothing may go missing from the results silently.
            batch = self.pipeline.analyze_many(pictures, model=self.model, strict=True)
            return [analysis for _, analysis in batch.results]
        except ModelError:
            raise  # the model itself is broken: no image would succeed, so stop the run
        except Exception:  # noqa: BLE001  one odd image must not cost the others their rows: retry one by one
            log.warning("a batch of %d images failed; analysing them one by one", len(pictures), exc_info=True)
        out = []
        for picture, path in zip(pictures, paths):
            try:
                out.append(self.pipeline.analyze(picture, model=self.model))
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: analysis failed: %s", path, exc)
                out.append(f"The analysis failed: {type(exc).__name__}: {exc}")
        return out


def quiet_model_loading() -> None:
    """No "Loading weights" bar from transformers: each worker would draw one over the run's own progress bar."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
