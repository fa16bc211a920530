"""RGB to Y'CbCr for the streamer: BT.601 I420 on the CPU path, BT.709 NV12 for the GPU path.

The CPU encoder wants I420. Converting a whole RGB frame costs more than drawing it (3.2 ms for
720p in swscale against 0.5 ms for the game: `gamecast bench render`), so the reference game
converts its background once and each flat colour once, then draws in I420 directly. That
matrix is BT.601 limited range, the same as swscale's default for yuv420p, and the encoder
signals it in the stream (streamer/encoder.py), so every decoder shows the intended colours.

The GPU path converts every frame instead, RGB(A) -> NV12 (BT.709, limited range), because
NVENC takes NV12 from GPU memory and a kernel is cheap there (issue 4's target: 0.2 ms for
1080p on an H100; benchmarks/convert.py measures it). `rgb_to_nv12` is that kernel's numpy
twin: the reference the kernel in streamer/gpu.py is tested against, with the very same
float32 coefficients and order of operations, so both round every sample the same way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from contracts.planes import I420Frame, NV12Frame, Plane, i420_planes, nv12_planes

RGB = tuple[int, int, int]
YUV = tuple[int, int, int]
Matrix = npt.NDArray[np.float32]  # 3 x 3: rows Y, Cb, Cr, for 0-255 RGB

LUMA_RANGE = (16, 235)  # limited ("MPEG", "tv") range, 8 bits
CHROMA_RANGE = (16, 240)


def _limited_range(kr: float, kb: float) -> npt.NDArray[np.float64]:
    """The Y, Cb, Cr rows from the luma weights Kr and Kb (ITU-R BT.601-7 and BT.709-6, 3.2-3.5).

    Y' spans 219 codes from 16 and the colour differences 224 codes around 128.
    """
    kg = 1.0 - kr - kb
    rows = [
        [219 * kr, 219 * kg, 219 * kb],
        [-112 * kr / (1 - kb), -112 * kg / (1 - kb), 112.0],
        [112.0, -112 * kg / (1 - kr), -112 * kb / (1 - kr)],
    ]
    return np.array(rows) / 255.0


_BT601 = _limited_range(0.299, 0.114)
# float32 because that is what the GPU kernel computes in; the numpy twin uses the same
# numbers so that the two agree sample for sample.
BT709: Matrix = _limited_range(0.2126, 0.0722).astype(np.float32)
_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_yuv(colour: RGB) -> YUV:
    """One colour's BT.601 Y, U, V samples, rounded to the nearest integer."""
    y, u, v = np.rint(_BT601 @ np.asarray(colour, dtype=np.float64) + _OFFSET)
    return int(y), int(u), int(v)


def rgb_to_i420(rgb: npt.NDArray[np.uint8]) -> I420Frame:
    """A whole H x W x 3 picture as one BT.601 I420 buffer; chroma from each 2 x 2 block's mean.

    Meant for pictures converted once (a background), not per frame.
    """
    height, width = yuv420_shape(rgb.shape)
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    luma, u, v = i420_planes(out)
    luma[:], u[:], v[:] = _ycbcr_planes(rgb, _BT601.astype(np.float32))
    return out


def rgb_to_nv12(rgb: npt.NDArray[np.uint8]) -> NV12Frame:
    """An H x W x 3 (RGB) or x 4 (RGBA, alpha ignored) picture as one BT.709 NV12 buffer.

    The buffer is (H * 3/2) x W and contiguous, luma first, as NVENC and FFmpeg's nv12 expect;
    each chroma pair is the mean of a 2 x 2 block (what swscale's area filter computes).
    """
    height, width = yuv420_shape(rgb.shape)
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    luma, chroma = nv12_planes(out)
    pairs = chroma.reshape(height // 2, width // 2, 2)
    luma[:], pairs[:, :, 0], pairs[:, :, 1] = _ycbcr_planes(rgb, BT709)
    return out


def yuv420_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (height, width) of an H x W x 3|4 picture that 4:2:0 subsampling can take.

    Raises ValueError, saying what is wrong, for any other shape: 4:2:0 shares one chroma
    sample between 2 x 2 pixels, so odd sizes have no exact layout.
    """
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 (RGB) or x 4 (RGBA) picture, got shape {shape}")
    height, width = shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 (I420, NV12) needs even dimensions, got {width}x{height}")
    return height, width


def _ycbcr_planes(rgb: npt.NDArray[np.uint8], matrix: Matrix) -> tuple[Plane, Plane, Plane]:
    """Y (H x W) and Cb, Cr (H/2 x W/2), rounded half to even and clipped to limited range."""
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected 8-bit samples (uint8), got {rgb.dtype}")
    height, width = rgb.shape[:2]
    channels = [rgb[:, :, i].astype(np.float32) for i in range(3)]
    # The 2 x 2 mean is exact in float32: a sum of four bytes, times a power of two.
    means = [
        c.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3)) * np.float32(0.25)
        for c in channels
    ]
    return (
        _weighted(channels, matrix[0], 16, LUMA_RANGE),
        _weighted(means, matrix[1], 128, CHROMA_RANGE),
        _weighted(means, matrix[2], 128, CHROMA_RANGE),
    )


def _weighted(
    channels: list[npt.NDArray[np.float32]],
    row: npt.NDArray[np.float32],
    offset: int,
    limits: tuple[int, int],
) -> Plane:
    """One output plane, in float32 and in the kernel's order: ((k0*R + k1*G) + k2*B) + offset.

    numpy never fuses a multiply and an add, and the kernel is compiled without FMA, so the
    same order gives the same float32 value, hence the same rounding, on both sides.
    """
    red, green, blue = channels
    full = red * row[0] + green * row[1] + blue * row[2] + np.float32(offset)
    plane: Plane = np.clip(np.rint(full), *limits).astype(np.uint8)
    return plane
