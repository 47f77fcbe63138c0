"""The real MTCNN on real photos."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from emotion.crop import square_box
from emotion.detectors.mtcnn import MTCNNDetector
from emotion.image import load_image
from emotion.workload import working
from tests.conftest import PHOTOS, photo

_detectors = {}


def detect_faces(image, max_side: int = 1600):
    if max_side not in _detectors:
        _detectors[max_side] = MTCNNDetector(torch.device("cpu"), max_side=max_side)
    return _detectors[max_side](image)


def test_apollo_crew_has_three_faces():
    faces = detect_faces(load_image(photo("nasa_apollo11_crew.jpg")))
    assert len(faces) == 3
    assert all(f.score > 0.95 and len(f.landmarks) == 5 for f in faces)


def test_no_face_is_an_empty_list():
    assert detect_faces(load_image(photo("noface_pen.jpg"))) == []


@pytest.mark.parametrize("name", ["codait_bryan.png", "codait_luciano.png", "skimage_camera.png"])
def test_rgba_and_greyscale_photos(name):
    assert len(detect_faces(load_image(photo(name)))) == 1


def test_tiny_images_give_no_face():
    assert detect_faces(Image.new("RGB", (1, 1))) == []
    assert detect_faces(Image.new("RGB", (11, 40))) == []


def test_downscaled_detection_maps_boxes_back():
    image = load_image(photo("nasa_apollo11_crew.jpg"))
    full = sorted(f.box for f in detect_faces(image))
    half = sorted(f.box for f in detect_faces(image, max_side=300))  # detected at half size
    assert len(half) == 3
    for a, b in zip(full, half):
        assert all(abs(x - y) < 8 for x, y in zip(a, b))


@pytest.mark.parametrize(
    "box, size, expected",
    [
        ((40, 40, 60, 60), (100, 100), (38, 38, 62, 62)),  # margin 0.2: side 24 around centre 50
        ((0, 0, 20, 30), (100, 100), (0, 0, 36, 36)),  # pushed inside at the corner, not cut
        ((90, 90, 100, 100), (100, 100), (88, 88, 100, 100)),
        ((0, 0, 100, 50), (100, 50), (25, 0, 75, 50)),
    ],  # larger than the image: cut to it, centred
)
def test_square_box(box, size, expected):
    assert square_box(box, size, margin=0.2) == expected


def test_twelve_megapixel_photo_is_detected_downscaled_with_boxes_mapped_back():
    image = load_image(photo("nasa_apollo11_crew.jpg"))
    scale = 4000 / image.width  # 4000 x 3140: 12.6 MP
    big = image.resize((4000, round(image.height * scale)), Image.BICUBIC)
    small_boxes = sorted(f.box for f in detect_faces(image))
    big_boxes = sorted(f.box for f in detect_faces(big))  # default max_side: detected at 1600 px
    assert len(big_boxes) == 3
    for a, b in zip(small_boxes, big_boxes):
        assert all(abs(x * scale - y) < 0.05 * 4000 / 6 for x, y in zip(a, b))


def test_downscaling_loses_no_face_of_the_shared_photos():
    photo("nasa_apollo11_crew.jpg")  # skips when ../shared is absent, instead of checking nothing
    paths = [p for p in sorted(PHOTOS.glob("*.*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(paths) >= 10
    for path in paths:
        image = load_image(path)
        assert len(detect_faces(image)) == len(detect_faces(image, max_side=10_000)), path.name


# ONNX Runtime, the pyramid and the stages against stock facenet-pytorch -------------------------------------


def shared_photos():
    photo("nasa_apollo11_crew.jpg")  # skips when ../shared is absent
    return [p for p in sorted(PHOTOS.glob("*.*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def stock_faces(image, min_score=0.9):
    """Stock ``MTCNN(keep_all=True).detect`` on the copy the app detects on (at most 1600 px); boxes clipped
    to it as the package clips them, in the original's pixels."""
    from facenet_pytorch import MTCNN

    from emotion.bench import app_copy

    small, scale = app_copy(image, 1600)
    boxes, probs, points = MTCNN(keep_all=True).detect(small, landmarks=True)
    if boxes is None:
        return []
    w, h = small.size
    return [
        ((max(0, b[0]) / scale, max(0, b[1]) / scale, min(w, b[2]) / scale, min(h, b[3]) / scale), pts / scale)
        for b, p, pts in zip(boxes, probs, points)
        if p >= min_score
    ]


def assert_same_faces(found, stock, tolerance=2.0):
    assert len(found) == len(stock)
    for box, points in stock:
        face = min(found, key=lambda f: max(abs(a - b) for a, b in zip(f.box, box)))
        assert max(abs(a - b) for a, b in zip(face.box, box)) <= tolerance, (face.box, box)
        assert max(abs(a - b) for p, q in zip(face.landmarks, points) for a, b in zip(p, q)) <= tolerance


def test_boxes_match_stock_mtcnn_within_two_pixels_on_the_shared_photos():
    for path in shared_photos():
        image = load_image(path)
        assert_same_faces(detect_faces(image), stock_faces(image))


def test_the_torch_networks_give_the_same_boxes():
    """On a GPU the stages run facenet-pytorch's torch modules and torch's area resize (TorchArea): the same
    stages, the same faces."""
    from facenet_pytorch import MTCNN

    from emotion.detectors.mtcnn import TorchArea

    image = load_image(photo("nasa_apollo11_crew.jpg"))
    detector = MTCNNDetector(torch.device("cpu"))
    detector.net = MTCNN(keep_all=True)  # what a CUDA device gets
    detector._sampler = lambda rgb: TorchArea(rgb, torch.device("cpu"))
    assert_same_faces(detector(image), stock_faces(image))


def test_pyramid_is_stock_mtcnns_less_its_largest_scales():
    from emotion.detectors.mtcnn import pyramid

    stock, scale, side = [], 12 / 20, 471 * 12 / 20  # facenet-pytorch's loop for a 600 x 471 image
    while side >= 12:
        stock.append(scale)
        scale, side = scale * 0.709, side * 0.709
    assert pyramid(471, 600, 20) == stock
    assert pyramid(471, 600, 28) == stock[1:]  # 20 / 0.709 = 28.2 px: the largest scale is dropped
    assert pyramid(471, 600, 12)[0] == 1.0  # below 20, as stock MTCNN with that min_face_size
    assert pyramid(10, 600, 20) == []
    # P-Net's pixels capped: a 1600 x 1124 copy starts at stock's third scale (faces of 40 px and more).
    full = pyramid(1124, 1600, 20)
    assert pyramid(1124, 1600, 20, 250_000) == full[2:]
    assert pyramid(471, 600, 20, 250_000) == stock  # 360 x 283 px at the first scale: all of it


def test_onnx_export_is_cached_and_matches_the_wheels_torch_networks(tmp_path):
    import numpy as np
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    from emotion.detectors import onnx_nets

    nets = onnx_nets.OnnxMTCNN(1, folder=tmp_path)
    files = sorted(p.name for p in tmp_path.glob("*/*.onnx"))
    assert files == ["onet.onnx", "pnet.onnx", "rnet.onnx"]
    assert (tmp_path / onnx_nets.fingerprint() / "rnet.onnx").read_bytes() == onnx_nets.model_bytes("rnet", tmp_path)
    torch.manual_seed(0)
    for ours, stock, shape in (
        (nets.pnet, PNet(), (1, 3, 57, 83)),  # any size: P-Net runs on every scale of the pyramid
        (nets.rnet, RNet(), (5, 3, 24, 24)),
        (nets.onet, ONet(), (3, 3, 48, 48)),
    ):
        x = torch.randn(shape)
        with torch.inference_mode():
            expected = stock.eval()(x)
        for a, b in zip(ours(x), expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_openvino_runs_give_onnx_runtimes_outputs_at_every_size():
    """R-Net and O-Net in OpenVINO cut batches into runs of a few sizes, and P-Net's levels are padded to
    a multiple of 16 px with its last row or column recomputed at odd sides: outputs as ONNX Runtime's, in
    the same shapes, for batches across the chunk sizes and levels of odd and even sides."""
    import numpy as np

    from emotion.detectors import onnx_nets

    fast = onnx_nets.OnnxMTCNN(1)
    exact = onnx_nets.OnnxMTCNN(1, runtime="onnxruntime")
    assert isinstance(fast.pnet.session, onnx_nets.PaddedPNet)
    assert type(fast.rnet.session).__name__ == "OpenVinoSession"
    assert type(exact.rnet.session).__name__ == "InferenceSession"
    rng = np.random.default_rng(0)

    def same(name, shape):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        got = getattr(fast, name).session.run(None, {"x": x})
        expected = getattr(exact, name).session.run(None, {"x": x})
        assert [g.shape for g in got] == [e.shape for e in expected], (name, shape)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-5, err_msg=f"{name} {shape}")

    for n in (1, 3, 4, 5, 32, 33, 70):
        same("rnet", (n, 3, 24, 24))
    for n in (1, 2, 17, 20, 31, 45):
        same("onet", (n, 3, 48, 48))
    for h, w in [(283, 361), (201, 256), (100, 129), (97, 96), (64, 128), (57, 83), (13, 17), (12, 600)]:
        same("pnet", (1, 3, h, w))
    assert fast.rnet.session.run(None, {"x": np.zeros((0, 3, 24, 24), np.float32)})[0].shape == (0, 4)


def test_batches_are_cut_into_runs_of_a_few_sizes_that_cover_every_row_once():
    """R-Net's rest is padded to a power of two (its rows cost less than a run), O-Net's split into
    power-of-two pieces (its rows cost more): in order, every row once, shapes only powers of two."""
    from emotion.onnx_runtime import pieces

    assert pieces(70, 32, split=False) == [(0, 32), (32, 32), (64, 8)]
    assert pieces(70, 32, split=True) == [(0, 32), (32, 32), (64, 4), (68, 2)]
    assert pieces(3, 32, split=False) == [(0, 4)]
    assert pieces(0, 32, split=False) == pieces(0, 32, split=True) == []
    for n in range(150):
        for split in (False, True):
            runs = pieces(n, 32, split)
            starts = [sum(rows for _, rows in runs[:i]) for i in range(len(runs))]
            assert [start for start, _ in runs] == starts
            assert all(rows in (1, 2, 4, 8, 16, 32) for _, rows in runs)
            covered = sum(rows for _, rows in runs)
            assert covered == n if split else n <= covered < n + 32


def test_o_net_splits_its_last_batch_and_r_net_pads_its_own():
    """Which of the two each network gets (chosen in onnx_nets._open): splitting suits O-Net, whose crops
    cost more than a run, padding R-Net, whose crops cost less."""
    pytest.importorskip("openvino")
    from emotion.detectors.onnx_nets import CROP_BATCH, session

    onet, rnet = session("onet", 1), session("rnet", 1)
    assert (onet.batch, onet.split) == (CROP_BATCH, True)
    assert (rnet.batch, rnet.split) == (CROP_BATCH, False)


def test_an_openvino_session_has_run_once_when_it_is_made():
    """Two threads making the process's first OpenVINO run at once deadlocked in OpenVINO's Python layer
    (seen with two lanes of one detection): each session runs once, alone, in the thread that makes it."""
    import threading

    import numpy as np

    from emotion.detectors import onnx_nets
    from emotion.onnx_runtime import openvino_session

    seen = {}

    def make():
        session = openvino_session(onnx_nets.model_bytes("rnet"), 1, (1, 3, 24, 24))
        # This thread's copy has run on the sample: its output holds one row (none before any run).
        seen.update(session=session, rows=list(session._local.request.get_output_tensor(0).shape))

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    assert seen["rows"] == [1, 4]
    outputs = seen["session"].run(None, {"x": np.zeros((3, 3, 24, 24), np.float32)})  # this thread: its own copy
    assert [o.shape for o in outputs] == [(3, 4), (3, 2)]


def test_without_openvino_every_network_runs_in_onnx_runtime(monkeypatch):
    from emotion.detectors import onnx_nets

    def missing(*args, **kwargs):
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(onnx_nets, "openvino_session", missing)
    monkeypatch.setattr(onnx_nets, "_sessions", {})
    nets = onnx_nets.OnnxMTCNN(1)
    assert {type(getattr(nets, n).session).__name__ for n in onnx_nets.NETS} == {"InferenceSession"}


def test_an_unwritable_cache_still_detects(tmp_path):
    from emotion.detectors import onnx_nets

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert onnx_nets.model_bytes("pnet", blocker)[:2]  # exported in memory, with a warning in the log


def test_concurrent_detections_find_the_same_faces():
    """Request threads share the detector (its ONNX sessions, its two detection threads)."""
    from concurrent.futures import ThreadPoolExecutor

    image = load_image(photo("nasa_apollo11_crew.jpg"))
    alone = sorted(f.box for f in detect_faces(image))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sorted(f.box for f in detect_faces(image)), range(8)))
    assert all(boxes == alone for boxes in results)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a detection spreads over lanes only with two cores")
def test_a_lone_detection_spread_over_lanes_gives_the_one_thread_result():
    """A lone detection's network runs (pyramid levels, crop batches) go to the lanes as they are made; the
    boxes, scores and landmarks are put back in order, so they are exactly those of one thread."""
    import threading

    detect_faces(Image.new("RGB", (8, 8)))  # makes the shared detector (lanes: one per core, up to four)
    spreading = _detectors[1600]
    one = MTCNNDetector(torch.device("cpu"), threads=1)  # one thread per network run, no lanes
    threads = set()
    hook = spreading.net.pnet.register_forward_hook(lambda *_: threads.add(threading.current_thread().name))
    try:
        for name in ("nasa_apollo11_crew.jpg", "pexels_neutral.jpeg", "codait_bryan.png"):
            image = load_image(photo(name))
            spread, alone = spreading(image), one(image)
            assert spread and spread == alone, name  # boxes, scores and landmarks, exactly
    finally:
        hook.remove()
    # The levels were shared out: some ran on a lane, some on the detection's own thread.
    assert any(t.startswith("mtcnn-lane") for t in threads) and any(not t.startswith("mtcnn-lane") for t in threads)


def test_the_calling_thread_makes_every_input_and_the_lanes_run_some():
    """_overlapped: the inputs are made in order by the detection's own thread (numpy work, which holds the
    interpreter lock); the runs go to the lanes as the inputs are made, and the calling thread runs, last to
    first, those no lane has started; each result is finished once, and all come back in order. The lanes
    run in inference mode, as the calling thread does (torch networks refuse inference tensors otherwise)."""
    import threading
    import time

    detector = MTCNNDetector(torch.device("cpu"))
    if detector._lanes is None:
        pytest.skip("a detection spreads over lanes only where the process may use two cores")
    me = threading.current_thread().name
    made, ran, finished = [], [], []

    def make(item):
        made.append((item, threading.current_thread().name))
        return item

    def run(item):
        time.sleep(0.03)  # long enough that the lane takes the first before this thread reaches it
        ran.append((item, threading.current_thread().name, torch.is_inference_mode_enabled()))
        return item * 10

    def finish(item, output):
        finished.append(item)
        return item, output

    with torch.inference_mode():
        out = detector._overlapped(make, run, list(range(8)), 2, finish)
    assert out == [(i, i * 10) for i in range(8)]
    assert sorted(finished) == list(range(8))  # each finished once
    assert made == [(i, me) for i in range(8)]
    assert sorted(item for item, _, _ in ran) == list(range(8))  # each run once
    assert all(mode for _, _, mode in ran)
    lane_items = [item for item, thread, _ in ran if thread != me]
    own_items = [item for item, thread, _ in ran if thread == me]
    assert 0 in lane_items and 7 in own_items  # the lanes from the first, this thread from the last
    # Outputs that are None or falsy come back as they are, wherever they ran.
    assert detector._overlapped(lambda i: i, lambda i: None if i % 2 else 0, list(range(6)), 2) == [0, None] * 3

    # A run that fails: its error reaches the caller.
    def fail(item):
        raise ValueError(item)

    with pytest.raises(ValueError):
        detector._overlapped(lambda i: i, fail, [1, 2, 3], 2)
    # One lane: the calling thread does everything, in order.
    ran.clear()
    assert detector._overlapped(make, run, [1, 2], 1) == [10, 20]
    assert [thread for _, thread, _ in ran] == [me, me]


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not 2 <= len(os.sched_getaffinity(0)) <= 4,
    reason="lanes pin only where they span every CPU (2 to 4)",
)
def test_a_lone_detection_and_its_lanes_each_keep_to_a_cpu_of_their_own_and_give_it_back():
    """After a pause the kernel woke the lanes on the waking thread's core (a lone detection then took as long
    on two cores as on one): each lane keeps to a CPU, the detection's thread to another while it runs, and
    it gets all of its CPUs back when it is done."""
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    detector = MTCNNDetector(torch.device("cpu"))
    seen = {}

    def where(*_):
        seen.setdefault(threading.get_ident(), set()).add(frozenset(os.sched_getaffinity(0)))

    hook = detector.net.pnet.register_forward_hook(where)
    try:
        assert len(detector(load_image(photo("pexels_neutral.jpeg")))) == 1
    finally:
        hook.remove()
    pinned = [sets.pop() for sets in seen.values() if len(sets) == 1]
    assert len(pinned) == len(seen) >= 2  # P-Net ran on two threads or more, each always on the same CPUs
    assert all(len(one) == 1 for one in pinned) and len(set(pinned)) == len(pinned)  # one CPU each, distinct
    assert frozenset({cpus[0]}) in pinned  # the detection's own thread, on the first while it spread
    # Done: the detection threads have every CPU again (the lanes keep theirs).
    assert all(detector._pool.submit(os.sched_getaffinity, 0).result() == set(cpus) for _ in range(4))
    # While another analysis is in progress, a detection does not spread, nor is it pinned: it goes where the
    # kernel puts it.
    seen.clear()
    hook = detector.net.pnet.register_forward_hook(where)
    busy, done = threading.Event(), threading.Event()

    def other_analysis():  # another request in progress meanwhile (classifying, drawing: any of it)
        with working():
            busy.set()
            done.wait(30)

    other = threading.Thread(target=other_analysis)
    other.start()
    try:
        assert busy.wait(30)
        assert len(detector(load_image(photo("nasa_apollo11_crew.jpg")))) == 3
    finally:
        done.set()
        other.join()
        hook.remove()
    assert len(seen) == 1 and set().union(*seen.values()) == {frozenset(cpus)}


def test_lanes_do_not_pin_where_they_leave_cpus_free(monkeypatch):
    """On a machine of more CPUs than lanes, several processes (bulk workers) would pin theirs to the same
    few: there the kernel places every thread."""
    from emotion.detectors import mtcnn

    monkeypatch.setattr(mtcnn, "_usable_cpus", lambda: list(range(16)))
    detector = MTCNNDetector(torch.device("cpu"))
    assert detector._max_lanes == mtcnn.MAX_LANES and not detector._pin
    assert detector._lanes.submit(os.sched_getaffinity, 0).result() == os.sched_getaffinity(0)
    assert len(detector(load_image(photo("nasa_apollo11_crew.jpg")))) == 3


def test_a_detection_given_fewer_lanes_than_the_pool_keeps_to_them(monkeypatch):
    """On a larger machine with other analyses in progress, a detection gets fewer lanes than its pool has
    threads (cores // analyses): its network runs then take at most that many lanes at a time, beside its
    own thread."""
    import threading
    import time

    from emotion.detectors import mtcnn

    monkeypatch.setattr(mtcnn, "_usable_cpus", lambda: list(range(16)))
    detector = MTCNNDetector(torch.device("cpu"))  # MAX_LANES: three lane threads
    me = threading.current_thread().name
    lock, running, most = threading.Lock(), [0], [0]

    def run(item):
        on_lane = threading.current_thread().name != me
        with lock:
            running[0] += on_lane
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= on_lane
        return item

    assert detector._overlapped(lambda i: i, run, list(range(12)), 2) == list(range(12))
    assert most[0] == 1  # lanes - 1 = one lane thread at a time
    most[0] = 0
    assert detector._overlapped(lambda i: i, run, list(range(12)), mtcnn.MAX_LANES) == list(range(12))
    assert most[0] > 1  # all of them when the detection may use every lane


@pytest.mark.parametrize("network", ["rnet", "onet"])
def test_crops_spread_over_lanes_go_through_the_same_runs_as_in_one_thread(network):
    """OpenVINO may round a batch differently by its size (on an AMD EPYC, O-Net's outputs for a crop run
    alone were 1e-7 off those in a batch of two), so the lanes part the crops only where the network's own
    runs end: run alone, each part makes exactly the runs it had as rows of the whole batch."""
    from emotion.detectors.mtcnn import _parts
    from emotion.detectors.onnx_nets import session

    runs = session(network, 1)
    for n in range(1, 161):
        whole = runs.run_ends(n)
        for lanes in (2, 3, 4):
            parts = _parts(whole, n, lanes)
            assert parts[0][0] == 0 and parts[-1][1] == n and all(start < end for start, end in parts)
            assert all(end == start for (_, end), (start, _) in zip(parts, parts[1:]))  # consecutive
            for start, end in parts:
                assert [start + e for e in runs.run_ends(end - start)] == [e for e in whole if start < e <= end]
    # Balanced where the runs allow: 300 R-Net crops (runs of 32) go 160 and 140; 29 O-Net crops (16, 8, 4, 1)
    # 16 and 13.
    assert _parts(session("rnet", 1).run_ends(300), 300, 2) == [(0, 160), (160, 300)]
    assert _parts(session("onet", 1).run_ends(29), 29, 2) == [(0, 16), (16, 29)]


def test_detections_run_on_one_torch_thread_and_leave_other_threads_alone():
    import threading

    detector = MTCNNDetector(torch.device("cpu"))
    assert detector._pool.submit(torch.get_num_threads).result() == 1
    before, seen = torch.get_num_threads(), []
    MTCNNDetector(torch.device("cpu"))
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and seen == [before]


@pytest.mark.parametrize("size", [(471, 600), (97, 13), (1067, 1600)])
def test_summed_area_resampling_is_torchs_area_resize_bit_for_bit(size, monkeypatch):
    """The pyramid and the crops come from emotion.detectors.area on the CPU: the same float32 numbers as
    F.interpolate(mode="area") and adaptive_avg_pool2d, which stock MTCNN uses. (Bit for bit while torch's
    float32 sums are exact: windows under 65,000 pixels; MTCNN's, at least 12 per side of the photo, are.)"""
    import numpy as np
    import torch.nn.functional as F

    from emotion.detectors import area
    from emotion.detectors.area import AreaSampler

    h, w = size
    rng = np.random.default_rng(h)
    rgb = np.array(load_image(photo("nasa_apollo11_crew.jpg")).resize((w, h)))
    rgb[: h // 3] = rng.integers(0, 256, rgb[: h // 3].shape, dtype=np.uint8)  # noise: every bit counts
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float()
    sampler = AreaSampler(rgb)
    # The table, built CHUNK rows at a time, is the plain cumulative sum down the rows and along the columns
    # of each channel, the three packed in 21-bit fields (modulo 2**64, as unsigned integers wrap).
    plain = np.zeros((h + 1, w + 1, 3), np.int64)
    plain[1:, 1:] = rgb.astype(np.int64).cumsum(0).cumsum(1)
    packed = plain.astype(np.uint64) @ (np.uint64(1) << np.array([0, 21, 42], np.uint64))
    assert np.array_equal(sampler.table, packed)
    # Built by several threads at once, in bands of rows (a detection's lanes): the same table.
    monkeypatch.setattr(area, "MIN_PART_ROWS", 4)  # even the smallest photo in bands
    with ThreadPoolExecutor(3) as pool:

        def spread(fn, groups):
            return list(pool.map(fn, groups))

        for parts in (2, 3, 4):
            assert np.array_equal(AreaSampler(rgb, spread, parts).table, packed), parts
    for out in [(h, w), (max(1, h // 2), w * 2 // 3), (int(h * 0.43 + 1), int(w * 0.43 + 1)), (12, 12)]:
        assert torch.equal(sampler.resize(*out), F.interpolate(x, size=out, mode="area")), out
    y0 = rng.integers(0, h - 1, 50)
    x0 = rng.integers(0, w - 1, 50)
    y1 = np.minimum(h, y0 + rng.integers(1, h + 1, 50))
    x1 = np.minimum(w, x0 + rng.integers(1, w + 1, 50))
    for side in (24, 48):
        expected = torch.cat([F.adaptive_avg_pool2d(x[:, :, a:b, c:d], side) for a, b, c, d in zip(y0, y1, x0, x1)])
        assert torch.equal(sampler.crops(y0, y1, x0, x1, side), expected)


def test_windows_too_large_for_a_packed_field_are_summed_in_pieces(monkeypatch):
    """A window's three channel sums share one 64-bit number, 21 bits each: larger windows are summed in
    pieces. With the limit lowered to a few pixels every window is cut (unevenly too): still torch's numbers."""
    import numpy as np
    import torch.nn.functional as F

    from emotion.detectors import area

    assert area.MAX_WINDOW * 255 < 2**21 <= (area.MAX_WINDOW + 1) * 255
    for rows, cols in [(1, 1), (90, 91), (300, 7), (2, 9000)]:
        kr, kc = area.pieces(rows, cols)
        assert -(-rows // kr) * -(-cols // kc) <= area.MAX_WINDOW
    assert area.pieces(90, 91) == (1, 1) and area.pieces(91, 91) == (2, 1)

    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (83, 61, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float()
    monkeypatch.setattr(area, "MAX_WINDOW", 5)
    sampler = area.AreaSampler(rgb)
    for out in [(12, 12), (20, 7), (83, 30)]:
        assert torch.equal(sampler.resize(*out), F.interpolate(x, size=out, mode="area")), out
    y0, x0 = rng.integers(0, 40, 9), rng.integers(0, 30, 9)
    y1, x1 = y0 + rng.integers(1, 43, 9), x0 + rng.integers(1, 31, 9)
    for side in (5, 24):
        expected = torch.cat([F.adaptive_avg_pool2d(x[:, :, a:b, c:d], side) for a, b, c, d in zip(y0, y1, x0, x1)])
        assert torch.equal(sampler.crops(y0, y1, x0, x1, side), expected)


def test_box_arithmetic_and_suppression_are_facenet_pytorchs_and_torchvisions_bit_for_bit():
    """emotion.detectors.boxes against the helpers stock MTCNN calls, on random maps and boxes with many
    equal scores (equal scores decide which box a suppression keeps)."""
    import numpy as np
    from facenet_pytorch.models.utils import detect_face as stock
    from torchvision.ops import nms as torchvision_nms

    from emotion.detectors import boxes

    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        h, w = 5 + trial, 31 - trial
        reg = torch.randn(1, 4, h, w, generator=g)
        probs = torch.rand(1, h, w, generator=g)
        probs[probs > 0.9] = 1.0  # saturated scores, as P-Net gives for clear faces
        scale = 0.6 * 0.709**trial
        expected, _ = stock.generateBoundingBox(reg, probs, scale, 0.6)
        found = boxes.windows(reg, probs, scale, 0.6)
        assert torch.equal(found, expected)

        b = found[:, :9].clone()
        offsets = torch.randn(len(b), 4, generator=g) * 0.2
        assert torch.equal(boxes.regress(b, offsets)[:, :5], stock.bbreg(b.clone()[:, :5], offsets))
        assert torch.equal(boxes.square(b)[:, :5], stock.rerec(b.clone()[:, :5]))
        for ours, theirs in zip(boxes.clip(b, w * 12, h * 12), stock.pad(b.clone(), w * 12, h * 12)):
            assert np.array_equal(ours, theirs)

        for threshold in (0.5, 0.7):
            assert torch.equal(boxes.nms(b[:, :4], b[:, 4], threshold), torchvision_nms(b[:, :4], b[:, 4], threshold))
        ours = boxes.nms_min(b[:, :4], b[:, 4], 0.7)
        theirs = stock.batched_nms_numpy(b[:, :4], b[:, 4], torch.zeros(len(b)), 0.7, "Min")
        assert torch.equal(ours, theirs)
    # Many blocks of boxes (boxes.BLOCK at a time), with many ties: the same answer.
    many = torch.rand(3000, 2, generator=g) * 400
    b = torch.cat([many, many + 10 + torch.rand(3000, 2, generator=g) * 30], 1)
    scores = (torch.rand(3000, generator=g) * 20).round() / 20  # many ties
    assert torch.equal(boxes.nms(b, scores, 0.5), torchvision_nms(b, scores, 0.5))


def test_a_thread_whose_networks_fail_to_prepare_still_detects_later():
    """Preparing runs in each detection thread as it starts; a failure there is logged, not a broken pool."""
    from emotion.detectors.mtcnn import _one_torch_thread_pool

    def fail():
        raise RuntimeError("no compiler today")

    pool = _one_torch_thread_pool(2, fail)
    assert pool.submit(lambda: 41 + 1).result(timeout=30) == 42
    pool.shutdown()


def test_a_phone_sized_photo_gives_the_faces_stock_finds_on_a_plain_copy():
    """A 12.8 MP photo is detected on one plain BILINEAR resize to 1600 px, the copy stock MTCNN is compared
    with (blocks of pixels averaged first, as for the picture shown, moved these boxes by 2.7 px)."""
    from facenet_pytorch import MTCNN

    image = load_image(photo("nasa_apollo11_crew.jpg")).resize((4032, 3165), Image.BICUBIC)
    scale = 1600 / 4032
    plain = image.resize((1600, round(3165 * scale)), Image.BILINEAR)
    boxes, probs, points = MTCNN(keep_all=True).detect(plain, landmarks=True)
    stock = [(tuple(b / scale), pts / scale) for b, p, pts in zip(boxes, probs, points) if p >= 0.9]
    assert len(stock) == 3
    assert_same_faces(detect_faces(image), stock)


def test_detect_threads_from_the_environment_one_turns_the_lanes_off(monkeypatch):
    """EMOTION_DETECT_THREADS=1 (the bench's "lanes off"): every detection on one thread, the same faces."""
    from emotion.detectors import get_detector
    from emotion.settings import Settings

    monkeypatch.setenv("EMOTION_DETECT_THREADS", "1")
    settings = Settings()
    assert settings.detect_threads == 1 and Settings(detect_threads=0).detect_threads == 0
    detector = get_detector("mtcnn", settings)
    assert detector._lanes is None and detector._lanes_now() == 1
    image = load_image(photo("nasa_apollo11_crew.jpg"))
    assert detector(image) == get_detector("mtcnn", Settings(detect_threads=0))(image)  # boxes, scores, landmarks
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv("EMOTION_DETECT_THREADS", bad)
        with pytest.raises(ValueError, match="EMOTION_DETECT_THREADS must be a whole number"):
            Settings()
