"""MTCNN with facenet-pytorch's three networks (their weights ship inside its wheel), run in stages here.

The stages are facenet-pytorch's own (the box arithmetic and the suppression are its and torchvision's,
step for step, in emotion.detectors.boxes, and the pyramid and the crops are its area resampling, number for
number, so the boxes match stock MTCNN's); what differs:

- a budget: after the first and the second stage only the ``max_candidates`` best-scoring boxes go on.
  Stock MTCNN sends every candidate through the later networks, so a canvas of hundreds of tiny faces
  costs tens of seconds; here it costs at most two bounded batches.
- on the CPU the networks run in OpenVINO, else ONNX Runtime (emotion.detectors.onnx_nets), faster than
  torch's convolutions for these narrow networks; on a GPU they stay facenet-pytorch's torch modules.
- on the CPU the pyramid and the crops come from one summed-area table of the photo
  (emotion.detectors.area): the same float32 numbers as torch's area resize, without reading the whole
  photo once per scale and every box once per crop.
- a lone detection spreads its network runs over every core: its own thread makes the pyramid's levels and
  the crop batches (numpy, which holds the interpreter lock) while the lanes run P-Net, R-Net and O-Net on
  those already made (which does not; see _overlapped). While other analyses are in progress
  (emotion.workload: another request detecting, classifying, drawing), each detection takes one core
  (each stage decides when it starts). The result is the same to the bit. Where the lanes span every
  CPU, each keeps to one, so a detection after a pause still gets every core.
- detections run on a few threads of their own with one torch thread each (see _one_torch_thread_pool):
  torch's OpenMP threads made each of the hundreds of small operations per photo wait on a busy machine.
- the pyramid's largest scales (the most expensive: each costs about twice the next) are dropped when
  they are under ``min_face_size`` or give P-Net more than ``max_pyramid_pixels``; the others are exactly
  stock MTCNN's, so the faces that remain are found with the same boxes.

Below the budgets and at ``min_face_size`` 20 the result is stock MTCNN's. Above them it can differ:
measured on collages of the Apollo portrait (27 to 76 faces of about 50 px in a 1600-px image), boxes
were 2-6 px off stock's (the candidate budget and the dropped finest scales), and of 76 faces 75 were
found; with both budgets lifted the boxes are stock's exactly. Photos over 600 x 420 px are not searched
for their smallest faces (under 40 px at 1600 px).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import adaptive_avg_pool2d, interpolate

from emotion.detectors import Detection
from emotion.detectors.area import AreaSampler
from emotion.detectors.boxes import clip, nms, nms_min, regress, square, windows
from emotion.device import pick_device
from emotion.image import shrunk
from emotion.workload import in_progress, working

log = logging.getLogger(__name__)

THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for the three stages
FACTOR = 0.709  # image pyramid: each scale is this fraction of the previous one
STOCK_MIN_FACE = 20  # facenet-pytorch's default min_face_size: the pyramid's scales are counted from it
MAX_LANES = 4  # threads one detection may spread over (the pyramid has about ten scales)
# Crop batches per lane: this thread cuts the next batch while the lanes run the network on the last, so that
# a lane waits only for the first (Apollo portrait, pexels_neutral and pexels_dog_human together: 114 -> 111 ms).
PIECES = 2
# Crops per batch at least: fewer are not worth a thread hand-off. An O-Net crop costs about 0.45 ms, an
# R-Net crop 0.08 ms.
MIN_LANE_CROPS = {"rnet": 8, "onet": 2}


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """MTCNN's input scaling, in place (each stage's pixels are a fresh tensor of its own): the same float32
    steps as stock's ``(x - 127.5) * 0.0078125``, without two temporary copies."""
    return pixels.sub_(127.5).mul_(0.0078125)


def pyramid(h: int, w: int, min_face_size: float, max_pixels: float = float("inf")) -> list[float]:
    """The image pyramid's scales: stock MTCNN's for min_face_size 20 (or less), less those whose 12-px
    window is a face smaller than ``min_face_size`` and those giving P-Net more than ``max_pixels``."""
    scale = 12.0 / min(STOCK_MIN_FACE, min_face_size)
    side = min(h, w) * scale  # stock's loop, step for step, so the scales are the same floats
    scales = []
    while side >= 12:
        if 12.0 / scale >= min_face_size * (1 - 1e-6) and h * w * scale * scale <= max_pixels:
            scales.append(scale)
        scale *= FACTOR
        side *= FACTOR
    return scales


class MTCNNDetector:
    """Photos larger than ``max_side`` are detected on a downscaled copy (MTCNN's image pyramid makes big
    inputs slow) and the boxes are mapped back; ``min_face_size`` is in pixels of that copy.

    The networks are only read during inference, so request threads share one instance with no lock:
    ``workers`` requests detect at the same time (the app's concurrency), the others wait their turn.
    ``threads`` 0 (the default): one thread per network run, and a detection spreads its work over every
    core (up to MAX_LANES) while it is the only analysis in progress (emotion.workload), else it takes one
    core; each stage chooses anew when it starts. ``threads`` > 0: that many threads per network run, no spreading.
    """

    def __init__(
        self,
        device: torch.device,
        min_face_size: int = 20,
        min_score: float = 0.9,
        max_side: int = 1600,
        max_candidates: int = 400,
        threads: int = 0,
        workers: int = 2,
        max_pyramid_pixels: int = 250_000,
    ):
        log.info("loading MTCNN on %s", device)
        self.device = device
        # min_face_size counts pixels of the image MTCNN sees: on a downscaled 12 MP photo the smallest face
        # found is larger in the original, which costs little (faces much under 48 px carry too little detail
        # for the classifier anyway) and keeps big photos fast. MTCNN's first stage needs a 12-px window.
        self.min_face_size = max(12, min_face_size)
        self.min_score = min_score
        self.max_side = max_side
        self.max_candidates = max_candidates
        # P-Net's largest scale costs most (about half of the pyramid): capping its pixels makes the smallest
        # face searched grow with the photo, from min_face_size up to 600 x 420 px, then to 40 px at 1600 x
        # 1124 (a 50-px crop: about the classifier's 48-px input; smaller faces are upscaled for it anyway).
        self.max_pyramid_pixels = max_pyramid_pixels
        self.net = _networks(device, threads or 1)
        self._cpus = _usable_cpus()
        self._cores = len(self._cpus)
        # Each thread prepares its own copy of the networks now, not at the first request (emotion.onnx_runtime:
        # OpenVINO compiles one per thread, about 0.15 s for the three).
        prepare = getattr(self.net, "prepare", None)
        self._pool = _one_torch_thread_pool(workers, prepare)
        # Lanes: threads that run part of a lone detection's networks (pyramid levels, crop batches), one core
        # each. Splitting the work beat giving each network run two threads (measured on two cores: P-Net
        # ran only 1.3x faster with two ONNX Runtime threads); the numpy work stays on the detection's thread.
        lanes = min(self._cores, MAX_LANES) if device.type == "cpu" and not threads else 1
        # Each lane keeps to a core of its own, the detection's own thread to the first while it spreads (see
        # _pinned): after a pause of a few tenths of a second the kernel woke the lanes on the core of the
        # thread that woke them, and a lone detection took as long on two cores as on one (Apollo portrait:
        # 50 ms after 0.5 s idle, 33 ms back to back; pinned, 37 ms). Only where the lanes span every CPU
        # this process may use: on a larger machine several processes (bulk workers) would pin theirs to
        # the same few cores.
        self._pin = lanes > 1 and lanes == self._cores and _can_pin()
        pins = iter(self._cpus[1:lanes]) if self._pin else None
        self._lanes = _one_torch_thread_pool(lanes - 1, prepare, pins, "mtcnn-lane") if lanes > 1 else None
        self._max_lanes = lanes

    @property
    def networks(self) -> list:
        """The networks this detector runs (hooks on them see every batch)."""
        return [self.net]

    def _lanes_now(self) -> int:
        """Lanes for the stage starting now: the cores shared among the analyses in progress at this moment
        (this detection's among them)."""
        return max(1, min(self._max_lanes, self._cores // max(1, in_progress())))

    def _spread(self, fn, groups: list) -> list:
        """fn(group) for each group, the first in this thread and the others on the lanes, results in order."""
        if len(groups) == 1:
            return [fn(groups[0])]
        futures = [self._lanes.submit(fn, group) for group in groups[1:]]
        return [fn(groups[0]), *(f.result() for f in futures)]

    def _overlapped(self, make, run, items: list, lanes: int, finish=None) -> list:
        """[finish(item, run(make(item))) for item in items] (without ``finish``, the runs' outputs). With ``lanes``
        > 1, this thread makes the inputs one after another and the lanes run the network on each as soon as
        it is made, first to last; when all are made, this thread runs, last to first, those no lane has
        started, and then finishes the results while the lanes end their last runs.

        Why not give each lane whole items (make, run, finish): ``make`` and ``finish`` are numpy work, dozens
        of small operations that each take and give back the interpreter lock, and two threads doing such work
        at once handed the lock to and fro, each woken by the other (measured on this project's 2-core VM:
        operations on 1,000 floats ran 2x slower in two threads than in one). A network run gives the lock
        back for its whole length, so this thread's numpy work and the lanes' runs overlap instead."""
        finish = finish or (lambda _item, output: output)
        if lanes == 1 or len(items) == 1:
            return [finish(item, run(make(item))) for item in items]
        # Fewer lanes than the pool has (other analyses in progress on a larger machine): this call's runs
        # hold one of lanes - 1 permits, so the detection keeps to its share of the cores.
        share = threading.Semaphore(lanes - 1) if lanes < self._max_lanes else None
        inputs, futures, own = [], [], {}
        try:
            for item in items:
                inputs.append(make(item))
                futures.append(self._lanes.submit(_inferring, run, inputs[-1], share))
            for k in reversed(range(len(items))):
                if futures[k].cancel():  # no lane has started it
                    own[k] = run(inputs[k])
            results, left = [None] * len(items), set(range(len(items)))
            while left:
                done = sorted(k for k in left if k in own or futures[k].done())
                if not done:
                    wait([futures[k] for k in left], return_when=FIRST_COMPLETED)
                for k in done:
                    results[k] = finish(items[k], own[k] if k in own else futures[k].result())
                    left.discard(k)
            return results
        except BaseException:
            for future in futures:  # what no lane has started yet is not worth running now
                future.cancel()
            raise

    def __call__(self, image: Image.Image) -> list[Detection]:
        with working():  # counted once where the caller's analysis already is
            return self._pool.submit(self._detect, image).result()

    def _detect(self, image: Image.Image) -> list[Detection]:
        with _pinned(self._cpus[0] if self._pin and self._lanes_now() > 1 else None):
            return self._find(image)

    def _find(self, image: Image.Image) -> list[Detection]:
        w, h = image.size
        small, scale = shrunk(image, self.max_side)  # one plain resize: the copy stock MTCNN is compared on
        if min(small.size) < 12:
            return []
        rgb = np.asarray(small if small.mode == "RGB" else small.convert("RGB"), dtype=np.uint8)  # read only
        with torch.inference_mode():
            boxes, points = self.stages(self._sampler(rgb))
        found = []
        for box, pts in zip(boxes, points / scale):
            prob = float(box[4])  # a probability: only the coordinates are mapped back to the full size
            if prob < self.min_score:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in box[:4])
            clipped = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
                continue
            found.append(Detection(clipped, prob, tuple((float(x), float(y)) for x, y in pts)))
        return found

    def _sampler(self, rgb: np.ndarray):
        """What resizes the photo and cuts the crops: on the CPU from its summed-area table (same numbers,
        a fraction of the time), elsewhere torch's area resize on the device."""
        if self.device.type == "cpu":
            return AreaSampler(rgb, self._spread, self._lanes_now())
        return TorchArea(rgb, self.device)

    def stages(self, photo) -> tuple[np.ndarray, np.ndarray]:
        """(n, 5) boxes with scores and (n, 5, 2) landmarks, for one photo's AreaSampler or TorchArea."""
        h, w = photo.h, photo.w
        boxes = self._propose(photo, h, w)
        if len(boxes):
            boxes = self._refine(photo, boxes, h, w)
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        return self._output(photo, boxes, h, w)

    def _propose(self, photo, h: int, w: int) -> torch.Tensor:
        """Stage 1: P-Net over the image pyramid -> squared candidate boxes, best first, at most the budget."""
        scales = pyramid(h, w, self.min_face_size, self.max_pyramid_pixels)
        if not scales:
            return torch.zeros((0, 5), device=self.device)

        def level(scale: float) -> torch.Tensor:
            return _normalise(photo.resize(int(h * scale + 1), int(w * scale + 1)))

        def candidates(scale: float, maps) -> torch.Tensor:
            reg, probs = maps
            boxes = windows(reg, probs[:, 1], scale, THRESHOLDS[0])
            return boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)]

        # Largest first: the lanes start on the costliest level while this thread makes the others.
        boxes = torch.cat(self._overlapped(level, self.net.pnet, scales, self._lanes_now(), candidates))
        # nms returns indices best first: the slice keeps the highest-scoring candidates.
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)][: self.max_candidates]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * width,
                boxes[:, 1] + boxes[:, 6] * height,
                boxes[:, 2] + boxes[:, 7] * width,
                boxes[:, 3] + boxes[:, 8] * height,
                boxes[:, 4],
            ],
            dim=1,
        )
        return square(regressed)

    def _networks_on_crops(self, network: str, photo, boxes: torch.Tensor, h: int, w: int, size: int) -> list:
        """The boxes that overlap the photo, then the network's outputs for their size x size crops, in order.

        Spread over the lanes, the crops are parted only where the network's own runs end (its session's
        ``run_ends``: OpenVINO's fixed batches), so each run holds the same crops as in one thread and the
        outputs are the same to the bit. OpenVINO's kernels may round a batch differently by its size
        (seen on an AMD EPYC: O-Net's outputs for a crop run alone were 1e-7 off those in a batch of two),
        and a detection must not depend on whether another one was running at the same time."""
        boxes, regions = _regions(boxes, h, w)
        n = len(boxes)
        if not n:
            return [boxes]
        net = getattr(self.net, network)
        most = max(1, n // MIN_LANE_CROPS[network])  # batches worth a hand-off each
        lanes = min(self._lanes_now(), most)
        pieces = min(lanes * PIECES, most) if lanes > 1 else 1
        ends = getattr(getattr(net, "session", None), "run_ends", None)
        parts = _parts(ends(n) if ends else range(1, n + 1), n, pieces)

        def crops(part):
            start, end = part
            return _normalise(photo.crops(*(r[start:end] for r in regions), size))

        outputs = self._overlapped(crops, net, parts, lanes)
        if len(outputs) == 1:
            return [boxes, *outputs[0]]
        return [boxes] + [torch.cat([out[k] for out in outputs]) for k in range(len(outputs[0]))]

    def _refine(self, photo, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Stage 2: R-Net on 24x24 crops; survivors regressed and squared, at most the budget."""
        boxes, *outputs = self._networks_on_crops("rnet", photo, boxes, h, w, 24)
        if not len(boxes):
            return boxes
        reg, probs = outputs
        keep = probs[:, 1] > THRESHOLDS[1]
        boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        reg = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)[: self.max_candidates]
        return square(regress(boxes[pick], reg[pick]))

    def _output(self, photo, boxes: torch.Tensor, h: int, w: int):
        """Stage 3: O-Net on 48x48 crops -> final boxes, scores and five landmarks (numpy arrays)."""
        boxes, *outputs = self._networks_on_crops("onet", photo, boxes, h, w, 48)
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        reg, marks, probs = outputs
        keep = probs[:, 1] > THRESHOLDS[2]
        boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        reg, marks = reg[keep], marks[keep]
        # Landmarks come relative to the box before its final regression (as in facenet-pytorch).
        bw = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
        bh = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
        xs = bw * marks[:, :5] + boxes[:, 0:1] - 1
        ys = bh * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack([xs, ys], dim=2)
        boxes = regress(boxes, reg)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick].cpu().numpy(), points[pick].cpu().numpy()


def _inferring(run, x, share: threading.Semaphore | None):
    """run(x) on a lane, holding one of ``share``'s permits if given, in inference mode as in the detection's
    own thread (the mode is per thread): facenet-pytorch's torch modules (the CPU's networks where ONNX Runtime
    is missing) refuse the detection's inference tensors otherwise."""
    with share or nullcontext(), torch.inference_mode():
        return run(x)


def _regions(boxes: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, tuple[np.ndarray, ...]]:
    """The boxes that overlap the image, and their regions as facenet-pytorch cuts them (the box clipped to
    the image, rows y - 1 to ey and columns x - 1 to ex): int64 arrays y0, y1, x0, x1 of rows [y0, y1) and
    columns [x0, x1), for the sampler's ``crops``."""
    y, ey, x, ex = clip(boxes, w, h)
    valid = np.flatnonzero((ey > y - 1) & (ex > x - 1))
    regions = tuple(v[valid].astype(np.int64) for v in (y - 1, ey, x - 1, ex))
    return boxes[torch.from_numpy(valid)], regions


def _parts(ends, n: int, lanes: int) -> list[tuple[int, int]]:
    """Up to ``lanes`` consecutive (start, end) parts of ``n`` rows, parted only at ``ends`` (where the
    network's runs end, ascending, the last n), each time at the end nearest an even share."""
    cuts = [0]
    inner = [e for e in ends if 0 < e < n]
    for k in range(1, lanes):
        later = [e for e in inner if e > cuts[-1]]
        if later:
            cuts.append(min(later, key=lambda e: abs(e - k * n / lanes)))
    cuts.append(n)
    return list(zip(cuts, cuts[1:]))


class TorchArea:
    """AreaSampler's interface on torch's own area resize, for GPUs (where it is fast) and as the reference."""

    def __init__(self, rgb: np.ndarray, device: torch.device):
        self.h, self.w = rgb.shape[:2]
        pixels = torch.from_numpy(rgb.copy()).to(device)  # a copy: the photo's array is read-only
        # contiguous NCHW: the resizes and convolutions are slower on the permuted (channels-last) view. The
        # bytes are reordered before the conversion to float: a quarter of the memory to move.
        self.pixels = pixels.permute(2, 0, 1).contiguous().unsqueeze(0).float()

    def resize(self, out_h: int, out_w: int) -> torch.Tensor:
        return interpolate(self.pixels, size=(out_h, out_w), mode="area")

    def crops(self, y0, y1, x0, x1, size: int) -> torch.Tensor:
        regions = zip(y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist())
        # What interpolate (mode "area") computes, called directly: hundreds of crops per photo
        # pay interpolate's argument handling each time.
        return torch.cat([adaptive_avg_pool2d(self.pixels[:, :, a:b, c:d], size) for a, b, c, d in regions])


def _usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container's share, not the machine's count), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _can_pin() -> bool:
    return hasattr(os, "sched_setaffinity")


@contextmanager
def _pinned(cpu: int | None):
    """The calling thread kept to ``cpu`` (None: left as it is) for the block, then given back its CPUs."""
    before = os.sched_getaffinity(0) if cpu is not None else None
    if before is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:  # a CPU taken away since the start: run unpinned
            log.debug("could not pin the detection to CPU %s: %s", cpu, exc)
            before = None
    try:
        yield
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def _one_torch_thread_pool(workers: int, prepare=None, pins=None, name: str = "mtcnn") -> ThreadPoolExecutor:
    """Threads for the detections, each with one torch thread; ``prepare()``, if given, runs in each at start;
    ``pins``, if given, an iterator of CPUs: each thread keeps to the next one.

    torch parallelises every area resize, hundreds of tiny crops per photo among them, over its OpenMP
    threads; on two busy cores each such region waits milliseconds for the second thread to be scheduled
    (8 ms instead of 0.07 ms per crop, measured). With OpenMP, torch.set_num_threads sets the calling
    thread's count, so the classifier's threads keep theirs.
    """
    workers = max(1, workers)
    default = torch.get_num_threads()
    started = threading.Barrier(workers + 1, timeout=60)

    def one_thread():
        torch.get_num_threads()  # torch's per-thread set-up first, or it would later reset the count
        torch.set_num_threads(1)
        if pins is not None:
            try:
                os.sched_setaffinity(0, {next(pins)})  # os calls with 0 act on the calling thread alone
            except OSError as exc:  # the thread runs anywhere, as it would unpinned
                log.debug("could not pin a detection lane: %s", exc)
        try:
            if prepare:
                prepare()
        except Exception as exc:  # a thread's first run prepares it instead (and says what goes wrong)
            log.warning("preparing the detector's networks: %s", exc)
        finally:
            started.wait()

    pool = ThreadPoolExecutor(workers, name, initializer=one_thread)
    for _ in range(workers):  # start every thread now (each submit while none is idle starts one)
        pool.submit(int)
    started.wait()
    # set_num_threads also set the count that threads which have not used torch yet will start with: put
    # that back, so this module changes no other thread.
    torch.set_num_threads(default)
    return pool


def _networks(device: torch.device, threads: int):
    """ONNX Runtime sessions with ``threads`` threads each on the CPU, else facenet-pytorch's torch modules."""
    if device.type == "cpu":
        try:
            from emotion.detectors.onnx_nets import OnnxMTCNN

            return OnnxMTCNN(threads)
        except ImportError as exc:  # onnxruntime is a requirement; without it MTCNN still works, slower
            log.warning("ONNX Runtime unavailable (%s): MTCNN runs on torch", exc)
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, post_process=False, device=device)


def build(settings) -> MTCNNDetector:
    return MTCNNDetector(
        pick_device(settings.device),
        settings.min_face_size,
        settings.min_detection_score,
        settings.detect_max_side,
        settings.detect_max_candidates,
        settings.detect_threads,
        settings.concurrency,
        getattr(settings, "detect_pyramid_pixels", 250_000),
    )
