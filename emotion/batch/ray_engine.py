"""The Ray engine: the same chunks as the local engine, as a Ray Data pipeline on a cluster (or locally).

    paths -> ray.data.from_items -> map_batches(RayAnalyzer, actor pool) -> iter_batches -> parts -> FILE.parquet

Each actor holds one ``ChunkAnalyzer`` (MTCNN + classifier loaded once) and reads its images itself
(local paths on a shared folder, or s3://... through pyarrow), so images never pass through the driver.
Only the rows come back: about 200 bytes per face, so the driver commits them with the same atomic part
files as the local engine (one resume rule for both engines) instead of Ray's write_parquet, whose files
are not committed atomically and could be left half-written by a killed job.

Actors: one per GPU where the cluster has GPUs (more with --workers share each GPU), else one per CPU,
each with one torch thread. Ray itself is imported only in this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import ray

from emotion.batch.analyze import ChunkAnalyzer, quiet_model_loading, spread_batch
from emotion.batch.store import PartWriter
from emotion.errors import EmotionError
from emotion.settings import Settings

log = logging.getLogger(__name__)


class RayAnalyzer:
    """The callable class of map_batches: built once per actor, called per batch of paths."""

    def __init__(self, settings: Settings, model: str):
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
        quiet_model_loading()
        self.analyze = ChunkAnalyzer(settings, model)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.analyze([str(p) for p in batch["path"]])


def connect(num_cpus: int | None = None) -> bool:
    """Joins RAY_ADDRESS (or the Ray this process already runs); else starts a local instance. True if started.

    ``num_cpus`` limits a local instance (tests); by default it uses every core.
    """
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    cores = num_cpus or os.cpu_count() or 1
    log.info("RAY_ADDRESS is not set: starting a local Ray instance with %d CPUs", cores)
    ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING, runtime_env=_local_runtime_env())
    return True


def _local_runtime_env() -> dict:
    # Local workers must import this package even when it runs from a checkout rather than an install.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def actor_plan(resources: dict, workers: int | None) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for the cluster's resources."""
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus >= 1:
        actors = workers or int(gpus)
        return actors, min(1.0, gpus / actors), 1.0
    actors = workers or max(1, int(cpus))
    # More actors than CPUs share them; a fixed-size pool asking for more than the cluster has would never start.
    return actors, 0.0, min(1.0, cpus / actors)


def run_ray(
    todo: list[str],
    sink: PartWriter,
    *,
    settings: Settings,
    model: str,
    batch_size: int,
    workers: int | None,
    progress: Callable[[int], None],
) -> None:
    started = connect()
    try:
        actors, gpus, cpus = actor_plan(ray.cluster_resources(), workers)
        actors = min(actors, len(todo))
        batch_size = spread_batch(len(todo), batch_size, actors)
        log.info(
            "ray engine: %d actor(s), %.2g GPU and %.2g CPU each, %d images per batch", actors, gpus, cpus, batch_size
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the run's own bar counts images; Ray's would draw over it
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset execution plans on stderr
        # One block per batch: results stream back as each batch finishes (finer progress, smaller parts).
        blocks = max(1, min(-(-len(todo) // batch_size), 10_000))
        dataset = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
        rows = dataset.map_batches(
            RayAnalyzer,
            fn_constructor_kwargs={"settings": settings, "model": model},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus,
            num_cpus=cpus,
            batch_format="numpy",
        )
        for table in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
            progress(sink.add(table))
    except ray.exceptions.RayError as exc:
        # A failed actor wraps our own error (a model that does not load...): show its message, not Ray's trace.
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EmotionError):
            raise cause from None
        raise
    finally:
        if started:
            ray.shutdown()
