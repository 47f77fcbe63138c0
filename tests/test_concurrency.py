"""Many request threads at once: each test guards against one way the old, shared-state design broke.

Real components only (real MTCNN on real photos, the real tiny transformers ViT); monkeypatching only
wraps real functions to add a delay or record timings and thread ids, or fakes GPU queries.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

import emotion.backends.local as local
from emotion.backends.cache import ModelCache
from emotion.backends.local import LocalClassifier, load_model
from emotion.crop import crop_faces
from emotion.detectors import get_detector
from emotion.device import pick_dtype
from emotion.errors import ModelError
from emotion.explain import explain
from emotion.image import load_image
from emotion.pipeline import Pipeline
from emotion.results import Analysis
from emotion.serving.export import request_folder, sweep, write_exports
from emotion.settings import Settings
from tests.conftest import photo

APOLLO = "nasa_apollo11_crew.jpg"  # three faces
BRYAN = "codait_bryan.png"  # one face


def run_threads(targets, timeout: float = 60.0) -> list:
    """Run each callable in its own thread, all started together; re-raise the first error in the test thread."""
    results, errors = [None] * len(targets), []

    def body(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i, fn), daemon=True) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def apollo_crops():
    """Real face crops of different sizes (MTCNN on the Apollo 11 crew photo)."""
    image = load_image(photo(APOLLO))
    detections = get_detector("mtcnn", Settings(device="cpu"))(image)
    crops = crop_faces(image, [d.box for d in detections], 0.25)
    assert len(crops) == 3
    return crops


def check_heatmaps(heatmaps, crops):
    assert len(heatmaps) == len(crops)
    for heat, crop in zip(heatmaps, crops):
        assert heat.shape == (crop.height, crop.width)
        assert np.isfinite(heat).all()
        assert heat.min() >= 0.0 and heat.max() <= 1.0


# 1. explain under concurrency ------------------------------------------------------------------------


def test_explain_is_correct_while_another_thread_classifies_with_the_same_model(tiny_model, apollo_crops):
    """Old explain hooked the shared cached model, so a concurrent classification broke the heatmaps."""
    explainer = LocalClassifier(str(tiny_model), "cpu")
    classifier = LocalClassifier(str(tiny_model), "cpu")
    assert explainer.loaded is classifier.loaded  # one shared model: the situation that broke
    done = threading.Event()
    rounds = 30

    def explain_loop():
        try:
            for _ in range(rounds):
                check_heatmaps(explain(explainer, apollo_crops), apollo_crops)
            # The same through the pipeline, as the app calls it.
            analysis = Pipeline(Settings(device="cpu")).analyze(photo(APOLLO), model=str(tiny_model), explain=True)
            assert len(analysis.faces) == 3
            for face in analysis.faces:
                x1, y1, x2, y2 = face.crop_box
                assert face.heatmap.shape == (y2 - y1, x2 - x1)
                assert 0.0 <= face.heatmap.min() and face.heatmap.max() <= 1.0
        finally:
            done.set()

    def classify_loop():
        n = 0
        while not done.is_set():  # keeps forward passes going for as long as explain runs
            probs = classifier(apollo_crops[: 1 + n % 3])  # varying batch sizes
            assert probs.shape == (1 + n % 3, 7)
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
            n += 1
        return n

    _, classified = run_threads([explain_loop, classify_loop])
    assert classified >= rounds  # the two really ran side by side
    # Nothing may be left attached to the shared model.
    for module in classifier.loaded.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


# 2. explain for any dtype ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_explain_works_for_every_dtype(tiny_model, apollo_crops, dtype):
    """Old explain needed gradients through the model (int8 could not give them); forward passes suffice now."""
    clf = LocalClassifier(str(tiny_model), "cpu", dtype)
    assert clf.loaded.dtype == getattr(torch, dtype)
    assert next(clf.loaded.model.parameters()).dtype == getattr(torch, dtype)
    check_heatmaps(explain(clf, apollo_crops), apollo_crops)
    # Forward passes only, no gradients: it also works where autograd is switched off.
    with torch.inference_mode():
        check_heatmaps(explain(clf, apollo_crops), apollo_crops)


def test_int8_is_refused_with_the_allowed_dtypes_named(tiny_model):
    """int8 was removed: asking for it must say what is allowed, not fail deep inside torch."""
    with pytest.raises(ModelError) as info:
        LocalClassifier(str(tiny_model), "cpu", "int8")
    message = str(info.value)
    assert "int8" in message
    for allowed in ("auto", "float32", "bfloat16", "float16"):
        assert allowed in message


# 3. no cross-request batching leader -----------------------------------------------------------------


def test_each_request_runs_its_own_forward_pass_in_its_own_thread(tiny_model, apollo_crops, monkeypatch):
    """The old MicroBatcher made the first request run everyone's forward pass (8 callers: 3 s worst wait)."""
    real_forward = LocalClassifier.forward
    calls = []  # (thread id, batch size)
    lock = threading.Lock()

    def recording_forward(self, pixel_values):
        with lock:
            calls.append((threading.get_ident(), len(pixel_values)))
        time.sleep(0.05)  # callers overlap: a batcher would have merged them
        return real_forward(self, pixel_values)

    monkeypatch.setattr(LocalClassifier, "forward", recording_forward)
    callers = 8
    # Thread k classifies k + 1 crops: a merged batch would show up as a size no caller passed.
    inputs = [[apollo_crops[i % 3] for i in range(k + 1)] for k in range(callers)]
    barrier = threading.Barrier(callers)
    idents = [None] * callers

    def request(k):
        def go():
            idents[k] = threading.get_ident()
            clf = LocalClassifier(str(tiny_model), "cpu")
            barrier.wait()
            start = time.perf_counter()
            probs = clf(inputs[k])
            return probs, time.perf_counter() - start, clf.loaded.flip_average

        return go

    results = run_threads([request(k) for k in range(callers)])
    for k, (probs, wait_s, flip) in enumerate(results):
        assert probs.shape == (k + 1, 7)
        mine = [size for ident, size in calls if ident == idents[k]]
        # Exactly one forward pass, in this caller's thread, holding only this caller's crops.
        assert mine == [(k + 1) * (2 if flip else 1)]
        assert wait_s < 2.0  # nobody waits for the others' work
    assert len(calls) == callers


# 4. the model cache ----------------------------------------------------------------------------------


def test_a_slow_load_does_not_block_other_models(tiny_model, tmp_path, monkeypatch):
    """Old cache held one global lock while loading: a slow hub download froze every request."""
    slow = shutil.copytree(tiny_model, tmp_path / "slow")
    other = shutil.copytree(tiny_model, tmp_path / "other")
    real_load = local._load
    sleeping = threading.Event()

    def delayed_load(source, *args):
        if str(source) == str(slow.resolve()):
            sleeping.set()
            time.sleep(3.0)
        return real_load(source, *args)

    local._cache.clear()
    load_model(str(tiny_model), "cpu")  # already cached before the slow load starts
    monkeypatch.setattr(local, "_load", delayed_load)
    slow_thread = threading.Thread(target=load_model, args=(str(slow), "cpu"), daemon=True)
    slow_thread.start()
    try:
        assert sleeping.wait(10)
        start = time.perf_counter()
        load_model(str(tiny_model), "cpu")  # a cache hit
        assert time.perf_counter() - start < 1.0
        load_model(str(other), "cpu")  # a different model, loaded from disk meanwhile
        assert slow_thread.is_alive()  # ... and finished while the slow one is still loading
    finally:
        slow_thread.join(30)
    assert not slow_thread.is_alive()
    local._cache.clear()


def test_cache_evicts_the_least_recently_used_model():
    """A bounded cache: models beyond max_items go, least recently used first."""
    cache = ModelCache(max_items=2)
    one, two, three = object(), object(), object()
    assert cache.get(1, lambda: one, lambda _: 1) is one
    assert cache.get(2, lambda: two, lambda _: 1) is two
    assert cache.get(1, lambda: pytest.fail("key 1 is cached"), lambda _: 1) is one  # touch key 1
    assert cache.get(3, lambda: three, lambda _: 1) is three
    assert cache.keys() == [1, 3]  # key 2 was the least recently used


def test_cache_keeps_within_its_memory_budget():
    """Few large models must not exceed the memory budget; the newest always stays, even alone over it."""
    cache = ModelCache(max_items=10, max_bytes=100)
    for key in "abc":
        cache.get(key, object, lambda _: 40)
    assert cache.keys() == ["b", "c"]  # 3 x 40 > 100: the oldest went
    cache.get("big", object, lambda _: 150)
    assert cache.keys() == ["big"]


def test_cache_remembers_failures_for_the_ttl():
    """A failing model id must not be loaded again on every request (hammering the hub)."""
    calls = []

    def failing():
        calls.append(1)
        raise ModelError("no such model")

    cache = ModelCache(failure_ttl_s=60)
    for _ in range(2):
        with pytest.raises(ModelError, match="no such model"):
            cache.get("bad", failing, lambda _: 1)
    assert len(calls) == 1
    calls.clear()
    cache = ModelCache(failure_ttl_s=0)  # no memory of failures: tried each time
    for _ in range(2):
        with pytest.raises(ModelError):
            cache.get("bad", failing, lambda _: 1)
    assert len(calls) == 2


def test_one_cache_entry_for_one_folder_but_each_caller_keeps_its_spelling(tiny_model, monkeypatch):
    """Old code keyed the cache by the typed name (duplicate models) or reported the first caller's name."""
    monkeypatch.chdir(tiny_model.parent)
    spellings = [
        str(tiny_model),
        str(tiny_model) + "/",
        f"{tiny_model}/../{tiny_model.name}",
        f"./{tiny_model.name}",
    ]
    classifiers = [LocalClassifier(s, "cpu") for s in spellings]
    assert all(c.loaded is classifiers[0].loaded for c in classifiers)
    assert [c.name for c in classifiers] == spellings
    pipeline = Pipeline(Settings(device="cpu"))
    for spelling in spellings[1:3]:
        assert pipeline.analyze(photo(BRYAN), model=spelling).model == spelling


def test_concurrent_requests_for_one_model_load_it_once(tiny_model, tmp_path, monkeypatch):
    """Two requests for the same uncached model must share one load (per-key lock), not load it twice."""
    folder = shutil.copytree(tiny_model, tmp_path / "once")
    real_load = local._load
    calls = []

    def slow_load(*args):
        calls.append(threading.get_ident())
        time.sleep(1.0)  # both requests arrive while the first is loading
        return real_load(*args)

    monkeypatch.setattr(local, "_load", slow_load)
    barrier = threading.Barrier(2)

    def request():
        barrier.wait()
        return load_model(str(folder), "cpu")

    first, second = run_threads([request, request])
    assert len(calls) == 1
    assert first is second


# 5. detection in parallel ----------------------------------------------------------------------------


def test_two_requests_detect_at_the_same_time(monkeypatch):
    """Old code serialised MTCNN behind a global lock: one slow photo held up every other request."""
    detector = get_detector("mtcnn", Settings(device="cpu"))
    image = load_image(photo(APOLLO))
    expected = detector(image)  # single-threaded reference
    real_detect = detector.stages
    intervals, lock = [], threading.Lock()

    def timed_detect(*args, **kwargs):
        start = time.perf_counter()
        time.sleep(0.2)  # inside whatever lock the caller holds: overlap is certain only without one
        out = real_detect(*args, **kwargs)
        with lock:
            intervals.append((start, time.perf_counter()))
        return out

    monkeypatch.setattr(detector, "stages", timed_detect)
    barrier = threading.Barrier(2)

    def request():
        barrier.wait()
        return detector(image)

    results = run_threads([request, request])
    (s1, e1), (s2, e2) = intervals
    assert s1 < e2 and s2 < e1, f"detections did not overlap: {intervals}"
    # Sharing the networks without a lock must not change the answer.
    for found in results:
        assert len(found) == len(expected) == 3
        for a, b in zip(found, expected):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)


# 6. export cleanup race ------------------------------------------------------------------------------


def test_concurrent_exports_clean_old_folders_without_racing(tmp_path):
    """Old cleanup failed when two requests removed the same old export folder at once. (One process now
    sweeps a root at most once a minute; processes sharing the folder still sweep it at the same time.)"""
    folder = tmp_path / "exports"
    analysis = Analysis((), "m", "local", (10, 10))
    past = time.time() - 7200
    callers = 8
    for attempt in range(5):  # a race: give it several chances
        for i in range(100):
            old = folder / f"old{attempt}_{i}"
            old.mkdir(parents=True)
            for name in ("results.json", "results.csv", "extra.txt"):
                (old / name).write_text("x")
            os.utime(old, (past, past))
        barrier = threading.Barrier(callers)

        def export(k, barrier):
            def go():
                barrier.wait()  # all eight clean the same old folders at the same moment
                sweep(folder, max_age_s=60)
                return write_exports([(f"photo{k}.jpg", analysis)], request_folder(folder, max_age_s=60))

            return go

        results = run_threads([export(k, barrier) for k in range(callers)])
        assert len({p.parent for paths in results for p in paths}) == callers  # each its own folder
        for paths in results:
            assert [p.name for p in paths] == ["results.json", "results.csv"]
            assert all(p.is_file() for p in paths)
        assert not list(folder.glob("old*"))  # the old folders are gone


# 7. bf16 only where native ---------------------------------------------------------------------------


def test_bf16_only_on_gpus_with_native_support(monkeypatch):
    """bf16 emulated on pre-Ampere GPUs (T4, V100) is slower than fp16: is_bf16_supported() must not decide."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts as support
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 0))
    assert pick_dtype(torch.device("cuda")) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    assert pick_dtype(torch.device("cuda")) is torch.bfloat16
