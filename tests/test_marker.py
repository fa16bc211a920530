"""The frame marker against shared/MARKER.md: geometry, fields, CRC, and survival through coding."""

from __future__ import annotations

import math
import struct
import zlib

import av
import numpy as np
import numpy.typing as npt
import pytest

from contracts.marker import (
    FrameMarker,
    MarkerError,
    capture_age_ms,
    paint_marker,
    read_marker,
    strip_height,
)
from tests.samples import h264_round_trip

U32_MAX = (1 << 32) - 1
SIZES = [(128, 4), (640, 360), (854, 480), (1280, 720), (1366, 768), (1920, 1080)]
MARKERS = [
    FrameMarker(0, 0, 0),
    FrameMarker(U32_MAX, U32_MAX, U32_MAX),
    FrameMarker(0, U32_MAX, 0),
    FrameMarker(12_345, 1_700_000_000_000 % (1 << 32), 678),
]
# FrameMarker(1, 2, 3), row by row: frame 1 | capture 2, then input 3 | CRC-32 0x8F67D0F6.
GOLDEN_BITS_1_2_3 = [
    "0000000000000000000000000000000100000000000000000000000000000010",
    "0000000000000000000000000000001110001111011001111101000011110110",
]

Picture = npt.NDArray[np.uint8]


def background(width: int, height: int, seed: int = 0) -> Picture:
    """Random RGB noise, so a reader that looks outside a cell's centre would trip over it."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def luma(rgb: Picture) -> Picture:
    """BT.601 luma, as a decoder of an RGB-converted stream would see it."""
    weighted = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    plane: Picture = np.clip(np.rint(weighted), 0, 255).astype(np.uint8)
    return plane


def cell_box(width: int, row: int, column: int) -> tuple[slice, slice]:
    """Pixel extent of one cell per MARKER.md: cell i spans [i*c, (i+1)*c), c = W/64."""
    cell = width / 64
    return (
        slice(math.ceil(row * cell), math.ceil((row + 1) * cell)),
        slice(math.ceil(column * cell), math.ceil((column + 1) * cell)),
    )


def painted(width: int, height: int, marker: FrameMarker) -> Picture:
    rgb = background(width, height)
    paint_marker(rgb, marker)
    return rgb


def test_golden_bits_of_1_2_3() -> None:
    marker = FrameMarker(1, 2, 3)
    assert marker.payload() == struct.pack(">III", 1, 2, 3)
    assert marker.crc() == zlib.crc32(struct.pack(">III", 1, 2, 3)) == 0x8F67D0F6
    assert ["".join(map(str, row)) for row in marker.bits().tolist()] == GOLDEN_BITS_1_2_3


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("marker", MARKERS)
def test_round_trip(size: tuple[int, int], marker: FrameMarker) -> None:
    assert read_marker(luma(painted(*size, marker))) == marker


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_paint_fills_whole_cells_and_nothing_else(size: tuple[int, int]) -> None:
    width, height = size
    marker = FrameMarker(1, 2, 3)
    rgba = np.full((height, width, 4), 77, dtype=np.uint8)
    paint_marker(rgba, marker)
    bits = marker.bits()
    for row in range(2):
        for column in range(64):
            cell = rgba[cell_box(width, row, column)]
            assert (cell[..., :3] == 255 * bits[row, column]).all(), (row, column)
    assert strip_height(width) == math.ceil(2 * width / 64)
    assert (rgba[strip_height(width) :] == 77).all()
    assert (rgba[..., 3] == 77).all()


def test_strip_is_1280x40_at_720p() -> None:
    assert strip_height(1280) == 40


@pytest.mark.parametrize(
    "fields",
    [(1 << 32, 0, 0), (0, 1 << 32, 0), (0, 0, 1 << 32), (-1, 0, 0)],
)
def test_fields_must_fit_32_bits(fields: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="must fit in 32 bits"):
        FrameMarker(*fields)


@pytest.mark.parametrize(
    ("unix_ms", "wrapped"),
    [(0, 0), (U32_MAX, U32_MAX), (1 << 32, 0), (3 * (1 << 32) + 7, 7)],
)
def test_at_wraps_capture_time(unix_ms: int, wrapped: int) -> None:
    assert FrameMarker.at(5, unix_ms, 9) == FrameMarker(5, wrapped, 9)


@pytest.mark.parametrize("captured_unix_ms", [1_700_000_000_000, 5 * (1 << 32) - 10, 1 << 32])
@pytest.mark.parametrize("age", [0, 1, 25, 250_000])
def test_capture_age_undoes_the_wrap(captured_unix_ms: int, age: int) -> None:
    marker = FrameMarker.at(0, captured_unix_ms, 0)
    assert capture_age_ms(marker.capture_time_ms, captured_unix_ms + age) == age


@pytest.mark.parametrize("cell", [(0, 0), (0, 31), (0, 40), (1, 5), (1, 63)])
def test_flipped_cell_fails_crc(cell: tuple[int, int]) -> None:
    rgb = painted(1280, 720, FrameMarker(1, 2, 3))
    box = cell_box(1280, *cell)
    rgb[box] = 255 - rgb[box]
    with pytest.raises(MarkerError, match="CRC"):
        read_marker(luma(rgb))


@pytest.mark.parametrize("size", [(127, 720), (1280, 39), (854, 26), (0, 0)])
def test_too_small_picture(size: tuple[int, int]) -> None:
    width, height = size
    with pytest.raises(MarkerError, match="too small"):
        read_marker(np.zeros((height, width), dtype=np.uint8))
    with pytest.raises(MarkerError, match="too small"):
        paint_marker(np.zeros((height, width, 3), dtype=np.uint8), FrameMarker(0, 0, 0))


def test_smallest_pictures_are_accepted() -> None:
    assert strip_height(854) == 27
    assert read_marker(luma(painted(854, 27, FrameMarker(4, 5, 6)))) == FrameMarker(4, 5, 6)


def box_blur(plane: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    padded = np.pad(plane, size // 2, mode="edge")
    height, width = plane.shape
    shifted = [padded[y : y + height, x : x + width] for y in range(size) for x in range(size)]
    blurred: npt.NDArray[np.float64] = np.mean(shifted, axis=0)
    return blurred


@pytest.mark.parametrize("size", [(854, 480), (1280, 720), (1920, 1080)], ids=str)
def test_survives_noise_and_blur(size: tuple[int, int]) -> None:
    marker = FrameMarker(987_654, 3_000_000_000, 4_321)
    plane = luma(painted(*size, marker)).astype(np.float64)
    noisy = box_blur(plane, 3) + np.random.default_rng(1).normal(0.0, 20.0, plane.shape)
    assert read_marker(np.clip(noisy, 0, 255).astype(np.uint8)) == marker


def test_survives_h264_round_trip() -> None:
    width, height = 1280, 720
    sent = [FrameMarker.at(n, 1_700_000_000_000 + 16 * n, 3 * n) for n in range(5)]
    frames = (
        av.VideoFrame.from_ndarray(painted(width, height, marker), format="rgb24").reformat(
            format="yuv420p"
        )
        for marker in sent
    )
    assert [read_marker(plane) for plane in h264_round_trip(frames)] == sent
