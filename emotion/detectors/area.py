"""Area resampling of one photo from its summed-area table: the same numbers as torch's "area" resize.

Stock MTCNN resizes the whole photo once per pyramid scale and every candidate box once per stage with
``F.interpolate(mode="area")`` (adaptive average pooling): each output pixel is the mean of the input
pixels in the window ``[floor(i * n / m), ceil((i + 1) * n / m))`` of each axis. Every scale reads the
whole photo again and every crop reads its whole box: about half of the detection's time on large photos.

Here the photo's summed-area table is built once (integer sums of the 8-bit pixels, so exact), and each
window sum is four lookups: a scale costs what its output costs, a crop its 24 x 24 or 48 x 48 pixels.
The sums are exact integers and are divided as torch divides them (``sum / kh / kw`` in float32), so the
results are torch's, bit for bit, wherever torch's own float32 sums are exact: windows of under 65,000
pixels, which MTCNN's are (its smallest scale is 12 px per side; tests/test_detect.py checks it).
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 64  # rows of the table summed at a time: 64 rows of a 1600-px photo are 1.2 MB, about a core's cache
BAND = 32  # output rows of a pyramid level made at a time (32 rows of a 1600-px table: 0.6 MB)


def windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) of each output pixel's window, as adaptive pooling has them."""
    a = np.arange(n_out)
    return (a * n_in) // n_out, ((a + 1) * n_in + n_out - 1) // n_out


class AreaSampler:
    """``resize`` (a pyramid level) and ``crops`` (regions resized to a square), both (N, 3, h, w) float32
    tensors with values 0-255, from one (H, W, 3) uint8 photo."""

    def __init__(self, rgb: np.ndarray):
        h, w, _ = rgb.shape
        self.h, self.w = h, w
        wide = np.int32 if 255 * (h + 1) * (w + 1) < 2**31 else np.int64  # int64 only for photos over 8.4 MP
        table = np.empty((h + 1, 3, w + 1), wide)
        table[0], table[:, :, 0] = 0, 0
        planar = rgb.transpose(0, 2, 1)  # (H, 3, W)
        # Each row's sums along its columns (numpy's cumulative sum is fast along the last, contiguous axis),
        # then down the rows with one vector add per row (far faster than a cumulative sum down axis 0),
        # CHUNK rows at a time, while they are still in the cache: 9 ms instead of 15 for a 1600 x 1124 photo.
        # One thread: in two bands on two threads it saved at most 2 ms (7.2 vs 9.4 ms, 256-row chunks; slower
        # with smaller ones) for twice the CPU: the adds are short and bound by memory and the interpreter lock.
        for start in range(0, h, CHUNK):
            end = min(h, start + CHUNK)
            rows = table[start + 1 : end + 1, :, 1:]
            np.cumsum(np.ascontiguousarray(planar[start:end]), axis=-1, dtype=wide, out=rows)
            np.add(table[start, :, 1:], rows[0], out=rows[0])
            for i in range(1, end - start):
                np.add(rows[i - 1], rows[i], out=rows[i])
        self.table = table  # table[i, c, j]: the sum of channel c over rows < i and columns < j

    def resize(self, out_h: int, out_w: int) -> torch.Tensor:
        """The whole photo at out_h x out_w: ``F.interpolate(photo, (out_h, out_w), mode="area")``."""
        r0, r1 = windows(self.h, out_h)
        c0, c1 = windows(self.w, out_w)
        sums = np.empty((3, out_h, out_w), np.float32)
        # BAND output rows at a time: a whole level's temporaries are megabytes, each a fresh allocation the
        # kernel hands over page by page; a band's stay small and in the cache (the 12 shared photos' pyramids:
        # 82 instead of 96 ms on one thread).
        for start in range(0, out_h, BAND):
            rows = slice(start, start + BAND)
            strips = self.table[r1[rows]]  # (band, 3, W + 1): the band's row windows, summed along the columns
            strips -= self.table[r0[rows]]
            band = np.take(strips, c1, axis=2)
            band -= np.take(strips, c0, axis=2)
            sums[:, rows] = band.transpose(1, 0, 2)
        out = torch.from_numpy(sums)  # (3, out_h, out_w)
        out /= torch.from_numpy((r1 - r0).astype(np.float32))[:, None]
        out /= torch.from_numpy((c1 - c0).astype(np.float32))
        return out.unsqueeze(0)

    def crops(self, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, size: int) -> torch.Tensor:
        """Rows [y0, y1) and columns [x0, x1) of the photo, each resized to size x size:
        ``adaptive_avg_pool2d(photo[:, :, y0:y1, x0:x1], size)`` for every region at once."""
        a = np.arange(size)
        h, w = (y1 - y0)[:, None], (x1 - x0)[:, None]
        r0, r1 = y0[:, None] + (a * h) // size, y0[:, None] + ((a + 1) * h + size - 1) // size  # (N, size)
        c0, c1 = x0[:, None] + (a * w) // size, x0[:, None] + ((a + 1) * w + size - 1) // size
        flat = self.table.reshape(-1)
        stride_r, stride_c = 3 * (self.w + 1), self.w + 1
        channel = (np.arange(3) * stride_c)[None, :, None, None]

        def at(rows, cols):  # (N, 3, size, size) table values
            return flat[rows[:, None, :, None] * stride_r + channel + cols[:, None, None, :]]

        sums = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
        out = torch.from_numpy(sums.astype(np.float32))
        out /= torch.from_numpy((r1 - r0).astype(np.float32))[:, None, :, None]
        out /= torch.from_numpy((c1 - c0).astype(np.float32))[:, None, None, :]
        return out
