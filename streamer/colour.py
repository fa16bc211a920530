"""RGB to Y'CbCr (BT.601, limited range) for pictures the streamer draws straight into I420.

The encoder wants I420. Converting a whole RGB frame costs more than drawing it (3.2 ms for
720p in swscale against 0.5 ms for the game: `gamecast bench render`), so the reference game
converts its background once and each flat colour once, then draws in I420 directly. The
matrix is BT.601 limited range, the same as swscale's default for yuv420p, and the encoder
signals it in the stream (streamer/encoder.py), so every decoder shows the intended colours.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RGB = tuple[int, int, int]
YUV = tuple[int, int, int]
I420Frame = npt.NDArray[np.uint8]  # (H * 3/2) x W: the Y plane, then U, then V, each packed

# Rows of the limited-range BT.601 matrix applied to 0-255 RGB, plus the offsets.
_MATRIX = (
    np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    / 255.0
)
_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_yuv(colour: RGB) -> YUV:
    """One colour's Y, U, V samples, rounded to the nearest integer."""
    y, u, v = np.rint(_MATRIX @ np.asarray(colour, dtype=np.float64) + _OFFSET)
    return int(y), int(u), int(v)


def rgb_to_i420(rgb: npt.NDArray[np.uint8]) -> I420Frame:
    """A whole H x W x 3 picture as one I420 buffer; chroma is the mean of each 2 x 2 block.

    Meant for pictures converted once (a background), not per frame.
    """
    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"I420 needs even dimensions, got {width}x{height}")
    channels = [rgb[:, :, i].astype(np.float32) for i in range(3)]
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    limits = (235, 240, 240)
    for plane, row, offset, high in zip(i420_planes(out), _MATRIX, _OFFSET, limits, strict=True):
        full = sum(np.float32(k) * c for k, c in zip(row, channels, strict=True)) + offset
        if plane.shape[0] != height:  # chroma: the mean of each 2 x 2 block
            full = full.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        plane[:] = np.clip(np.rint(full), 16, high)
    return out


def i420_planes(
    frame: I420Frame,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Views of the Y (H x W), U and V (H/2 x W/2) planes inside one I420 buffer."""
    rows, width = frame.shape
    height = rows * 2 // 3
    flat = frame.reshape(-1)
    luma = height * width
    quarter = luma // 4
    u = flat[luma : luma + quarter].reshape(height // 2, width // 2)
    v = flat[luma + quarter :].reshape(height // 2, width // 2)
    return frame[:height], u, v
