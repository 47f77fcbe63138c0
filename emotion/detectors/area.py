"""Area resampling of one photo from its summed-area table: the same numbers as torch's "area" resize.

Stock MTCNN resizes the whole photo once per pyramid scale and every candidate box once per stage with
``F.interpolate(mode="area")`` (adaptive average pooling): each output pixel is the mean of the input
pixels in the window ``[floor(i * n / m), ceil((i + 1) * n / m))`` of each axis. Every scale reads the
whole photo again and every crop reads its whole box: about half of the detection's time on large photos.

Here the photo's summed-area table is built once, and each window sum is four lookups: a scale costs what
its output costs, a crop its 24 x 24 or 48 x 48 pixels. The three channels share one table: each pixel is
packed into one 64-bit integer, red + green << 21 + blue << 42, and the table holds the sums of those, modulo
2**64. Sums of packed pixels are the packed sums, so a window's four-lookup sum is its three channel sums side
by side, exact, as long as each fits its 21 bits: windows of up to MAX_WINDOW pixels (larger ones are summed
in pieces that fit). One lookup instead of three, and 8 bytes of table per pixel instead of 12: the crops
were 2-3x faster than from one table per channel, the pyramid levels about 1.3x.

The sums are exact integers and are divided as torch divides them (``sum / kh / kw`` in float32), so the
results are torch's, bit for bit, wherever torch's own float32 sums are exact: windows of under 65,000
pixels, which MTCNN's are (its smallest scale is 12 px per side; tests/test_detect.py checks it).
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 64  # rows of the table summed at a time: 64 rows of a 1600-px photo are 0.8 MB, about a core's cache
MIN_PART_ROWS = 256  # rows of the table one thread builds at least: a smaller photo's takes about 1 ms
BAND = 32  # output rows of a pyramid level made at a time (32 rows of a 1600-px table: 0.4 MB)
FIELD = 21  # bits of a packed pixel per channel (the last channel has the 22 bits left)
MASK = np.uint64((1 << FIELD) - 1)
MAX_WINDOW = ((1 << FIELD) - 1) // 255  # pixels whose sum fits a field: 8,224 (about 90 x 90)


def windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) of each output pixel's window, as adaptive pooling has them."""
    a = np.arange(n_out)
    return (a * n_in) // n_out, ((a + 1) * n_in + n_out - 1) // n_out


def pieces(rows: int, cols: int) -> tuple[int, int]:
    """Into how many pieces of rows and of columns a window of ``rows`` x ``cols`` pixels is cut so that each
    piece holds at most MAX_WINDOW pixels: (1, 1) for all but the smallest pyramid levels of large photos."""
    kr = kc = 1
    while -(-rows // kr) * -(-cols // kc) > MAX_WINDOW:
        if -(-rows // kr) >= -(-cols // kc):
            kr += 1
        else:
            kc += 1
    return kr, kc


def piece(lo: np.ndarray, hi: np.ndarray, j: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The j-th of k consecutive pieces of each window [lo, hi) (at most ceil((hi - lo) / k) long)."""
    n = hi - lo
    return lo + n * j // k, lo + n * (j + 1) // k


def pack(rgb: np.ndarray, out: np.ndarray | None = None, low: np.ndarray | None = None) -> np.ndarray:
    """Each pixel of (h, w, 3) uint8 ``rgb`` as one uint64: red + green << FIELD + blue << 2 * FIELD, written
    to ``out`` (uint64, (h, w)) if given, with ``low`` (uint32, (h, w)) as scratch."""
    # Red and green first in 32 bits (255 << 21 fits), then blue in 64: on 64-row chunks of a 1600-px photo
    # under half the time of a float64 product with (1, 2**21, 2**42), a ninth of shifts done all in 64 bits.
    # Into buffers reused chunk after chunk: fresh ones made the packing take 1.7x as long.
    h, w, _ = rgb.shape
    low = np.empty((h, w), np.uint32) if low is None else low
    out = np.empty((h, w), np.uint64) if out is None else out
    np.copyto(low, rgb[..., 1])
    np.left_shift(low, np.uint32(FIELD), out=low)
    np.bitwise_or(low, rgb[..., 0], out=low)
    np.copyto(out, rgb[..., 2])
    np.left_shift(out, np.uint64(2 * FIELD), out=out)
    np.bitwise_or(out, low, out=out)
    return out


def unpack(packed: np.ndarray, out: np.ndarray, channel_axis: int, add: bool) -> None:
    """The three channel sums held in ``packed`` (windows of at most MAX_WINDOW pixels) written, or added
    with ``add``, to ``out``, whose axis ``channel_axis`` is the channel."""
    fields = (packed & MASK, (packed >> np.uint64(FIELD)) & MASK, packed >> np.uint64(2 * FIELD))
    for c, value in enumerate(fields):
        target = out[(slice(None),) * channel_axis + (c,)]
        if add:
            target += value
        else:
            target[...] = value


def _sums(fill, r0, r1, c0, c1, shape: tuple) -> np.ndarray:
    """The windows' channel sums as a float32 array of ``shape``: ``fill(r0, r1, c0, c1, out, add)`` writes (or
    adds) them for windows of at most MAX_WINDOW pixels, so larger windows are filled piece by piece."""
    kr, kc = pieces(int((r1 - r0).max(initial=0)), int((c1 - c0).max(initial=0)))
    if kr == kc == 1:
        sums = np.empty(shape, np.float32)  # each sum is under 2**22: exact in float32
        fill(r0, r1, c0, c1, sums, False)
        return sums
    total = np.zeros(shape, np.uint64)
    for jr in range(kr):
        for jc in range(kc):
            fill(*piece(r0, r1, jr, kr), *piece(c0, c1, jc, kc), total, True)
    return total.astype(np.float32)  # exact integers, rounded once


class AreaSampler:
    """``resize`` (a pyramid level) and ``crops`` (regions resized to a square), both (N, 3, h, w) float32
    tensors with values 0-255, from one (H, W, 3) uint8 photo.

    ``spread(fn, groups)``, if given, returns ``[fn(g) for g in groups]``, run on as many threads at once
    (the detector's lanes): the table is then built in ``parts`` bands of rows at the same time."""

    def __init__(self, rgb: np.ndarray, spread=None, parts: int = 1):
        h, w, _ = rgb.shape
        self.h, self.w = h, w
        self.table = np.empty((h + 1, w + 1), np.uint64)  # unsigned: its sums wrap around 2**64, as they may
        self.table[0], self.table[:, 0] = 0, 0
        # table[i, j]: the packed sum of the pixels in rows < i and columns < j
        parts = max(1, min(parts, h // MIN_PART_ROWS)) if spread else 1
        cuts = sorted({round(h * k / parts / CHUNK) * CHUNK for k in range(parts)} | {h})
        bands = list(zip(cuts, cuts[1:]))
        if len(bands) == 1:
            self._band(rgb, bands[0])
            return
        spread(lambda band: self._band(rgb, band), bands)
        # Each band's sums start at zero: below the first, every row still lacks the sums of the rows above
        # its band, which are the bands' last rows added up (taken before any is corrected).
        above = [self.table[cuts[1]].copy()]
        for end in cuts[2:-1]:
            above.append(above[-1] + self.table[end])
        rows = cuts[1] + 1 + (h - cuts[1]) * np.arange(len(bands) + 1) // len(bands)
        spread(lambda span: self._raise(span, cuts, above), list(zip(rows, rows[1:])))

    def _band(self, rgb: np.ndarray, band: tuple[int, int]) -> None:
        """The table's rows start + 1 to end, summed from row start + 1 on (as if the photo began there)."""
        start, end = band
        # The sums in torch, on the table's bytes as int64 (two's complement: the same bits as uint64 sums
        # that wrap): its cumulative sums ran 2-4x faster than numpy's, and they release the interpreter
        # lock, which numpy's do not, so the bands of a detection's lanes are summed at the same time.
        table = torch.from_numpy(self.table.view(np.int64))
        out, low = np.empty((CHUNK, self.w), np.uint64), np.empty((CHUNK, self.w), np.uint32)  # pack's buffers
        for top in range(start, end, CHUNK):
            n = min(end, top + CHUNK) - top
            packed = torch.from_numpy(pack(rgb[top : top + n], out[:n], low[:n]).view(np.int64))
            rows = table[top + 1 : top + n + 1, 1:]
            # Each row's sums along its columns, then down the rows, CHUNK rows at a time, while they are
            # still in the cache.
            torch.cumsum(packed, dim=1, out=rows)
            if top > start:
                rows[0] += table[top, 1:]
            rows.cumsum_(dim=0)

    def _raise(self, span: tuple[int, int], cuts: list[int], above: list[np.ndarray]) -> None:
        """Rows [a, b) of the table, in the bands below the first, given the sums of the rows above them."""
        a, b = span
        for k, offset in enumerate(above, start=1):
            lo, hi = max(a, cuts[k] + 1), min(b, cuts[k + 1] + 1)
            if lo < hi:
                np.add(self.table[lo:hi], offset, out=self.table[lo:hi])

    def resize(self, out_h: int, out_w: int) -> torch.Tensor:
        """The whole photo at out_h x out_w: ``F.interpolate(photo, (out_h, out_w), mode="area")``."""
        r0, r1 = windows(self.h, out_h)
        c0, c1 = windows(self.w, out_w)
        out = torch.from_numpy(_sums(self._level, r0, r1, c0, c1, (3, out_h, out_w)))
        out /= torch.from_numpy((r1 - r0).astype(np.float32))[:, None]
        out /= torch.from_numpy((c1 - c0).astype(np.float32))
        return out.unsqueeze(0)

    def _level(self, r0, r1, c0, c1, out: np.ndarray, add: bool) -> None:
        """The level's sums (windows rows [r0, r1) x columns [c0, c1)) written, or added, to (3, h, w) ``out``."""
        # BAND output rows at a time: a whole level's temporaries are megabytes, each a fresh allocation the
        # kernel hands over page by page; a band's stay small and in the cache.
        for start in range(0, out.shape[1], BAND):
            rows = slice(start, start + BAND)
            strips = self.table[r1[rows]]  # (band, W + 1): the band's row windows, summed along the columns
            strips -= self.table[r0[rows]]
            band = np.take(strips, c1, axis=1)
            band -= np.take(strips, c0, axis=1)
            unpack(band, out[:, rows], 0, add)

    def crops(self, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, size: int) -> torch.Tensor:
        """Rows [y0, y1) and columns [x0, x1) of the photo, each resized to size x size:
        ``adaptive_avg_pool2d(photo[:, :, y0:y1, x0:x1], size)`` for every region at once."""
        a = np.arange(size)
        h, w = (y1 - y0)[:, None], (x1 - x0)[:, None]
        r0, r1 = y0[:, None] + (a * h) // size, y0[:, None] + ((a + 1) * h + size - 1) // size  # (N, size)
        c0, c1 = x0[:, None] + (a * w) // size, x0[:, None] + ((a + 1) * w + size - 1) // size

        def fill(r0, r1, c0, c1, out, add):
            unpack(self._corners(r0, r1, c0, c1), out, 1, add)

        out = torch.from_numpy(_sums(fill, r0, r1, c0, c1, (len(y0), 3, size, size)))
        out /= torch.from_numpy((r1 - r0).astype(np.float32))[:, None, :, None]
        out /= torch.from_numpy((c1 - c0).astype(np.float32))[:, None, None, :]
        return out

    def _corners(self, r0, r1, c0, c1) -> np.ndarray:
        """(N, size, size) packed sums of the windows rows [r0, r1) x columns [c0, c1) of each region."""
        flat = self.table.reshape(-1)
        stride = self.w + 1
        top, bottom = r0 * stride, r1 * stride

        def at(rows, cols):
            return flat[rows[:, :, None] + cols[:, None, :]]

        sums = at(bottom, c1)
        sums -= at(top, c1)
        sums -= at(bottom, c0)
        sums += at(top, c0)
        return sums
