"""Frame marker, version 1 (shared/MARKER.md): paint it into a frame and read it back.

The marker is two rows of 64 square cells at the top-left of the picture, each cell W/64 pixels
wide, white for a 1 bit and black for a 0 bit. It carries the frame sequence, the capture time,
the highest applied input sequence and a CRC-32 over those three, so a receiver can tell a
readable frame from a damaged one using the decoded picture alone.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np
import numpy.typing as npt

from contracts.errors import ContractError
from contracts.planes import i420_planes

CELLS_PER_ROW = 64
ROWS = 2
_FIELD_BITS = 32
_U32 = 1 << 32
LUMA_THRESHOLD = 128
MIN_WIDTH = 2 * CELLS_PER_ROW  # below this a cell has no central half to sample


class MarkerError(ContractError):
    """A picture does not hold a readable marker (too small, or its CRC does not match)."""


@dataclass(frozen=True, slots=True)
class FrameMarker:
    """The three fields a marker carries; each is an unsigned 32-bit integer."""

    frame_sequence: int
    capture_time_ms: int
    input_sequence: int

    def __post_init__(self) -> None:
        for name in ("frame_sequence", "capture_time_ms", "input_sequence"):
            value = getattr(self, name)
            if not 0 <= value < _U32:
                raise ValueError(f"{name} must fit in 32 bits, got {value}")

    @classmethod
    def at(cls, frame_sequence: int, unix_time_ms: int, input_sequence: int) -> FrameMarker:
        """Build a marker for a capture at `unix_time_ms`, wrapping it modulo 2^32 as specified."""
        return cls(frame_sequence, unix_time_ms % _U32, input_sequence)

    def payload(self) -> bytes:
        return struct.pack(">III", self.frame_sequence, self.capture_time_ms, self.input_sequence)

    def crc(self) -> int:
        return zlib.crc32(self.payload())

    def bits(self) -> npt.NDArray[np.uint8]:
        """The 2 x 64 cell values, most significant bit in the leftmost cell."""
        words = np.array(
            [self.frame_sequence, self.capture_time_ms, self.input_sequence, self.crc()],
            dtype=">u4",
        )
        return np.unpackbits(words.view(np.uint8)).reshape(ROWS, CELLS_PER_ROW)


def capture_age_ms(capture_time_ms: int, now_unix_ms: int) -> int:
    """Milliseconds from a marker's capture time to `now`, undoing the modulo-2^32 wrap.

    Signed, in [-2^31, 2^31): between two machines whose clocks are aligned only to within a
    few milliseconds, a fresh frame can look slightly older than now, never 49 days old.
    """
    return (now_unix_ms - capture_time_ms + _U32 // 2) % _U32 - _U32 // 2


def strip_height(width: int) -> int:
    """Pixel rows the marker covers in a frame `width` pixels wide (2 cells of W/64)."""
    return _cell_edges(width, ROWS)[-1]


@lru_cache(maxsize=16)
def _cell_edges(width: int, cells: int) -> tuple[int, ...]:
    """Pixel boundaries of `cells` cells of size width/64 (cell i spans [i*c, (i+1)*c))."""
    cell = width / CELLS_PER_ROW
    return tuple(int(np.ceil(i * cell)) for i in range(cells + 1))


@lru_cache(maxsize=16)
def _column_cells(width: int) -> npt.NDArray[np.intp]:
    """The cell index of each pixel column."""
    return np.floor(np.arange(width) / (width / CELLS_PER_ROW)).astype(np.intp)


@lru_cache(maxsize=16)
def _sample_windows(width: int) -> tuple[tuple[tuple[int, int], ...], npt.NDArray[np.intp]]:
    """The central half of each cell: row spans, and interleaved column starts/ends."""
    cell = width / CELLS_PER_ROW

    def central(index: int) -> tuple[int, int]:
        start = int(np.ceil((index + 0.25) * cell))
        return start, max(int(np.ceil((index + 0.75) * cell)), start + 1)

    rows = tuple(central(row) for row in range(ROWS))
    columns = np.array([edge for i in range(CELLS_PER_ROW) for edge in central(i)], dtype=np.intp)
    return rows, columns


def paint_marker(rgb: npt.NDArray[np.uint8], marker: FrameMarker, xp: ModuleType = np) -> None:
    """Paint `marker` in place into an H x W x C uint8 picture (RGB or RGBA).

    `rgb` is an array of the module `xp`: numpy, or cupy for a picture in GPU memory (the
    cell values are computed on the host and uploaded, two rows of W bytes).
    """
    for rows, pixel_row in _marker_rows(rgb, marker, on=255, off=0):
        rgb[rows, :, :3] = xp.asarray(pixel_row)[:, None]


def paint_marker_i420(frame: npt.NDArray[np.uint8], marker: FrameMarker) -> None:
    """Paint `marker` in place into one I420 buffer ((H * 3/2) x W, Y then U then V).

    White and black are Y 235 and 16 (limited range) with neutral chroma: the same samples an
    RGB marker becomes after BT.601 conversion, so a reader cannot tell the two apart.
    """
    luma, u, v = i420_planes(frame)
    for rows, pixel_row in _marker_rows(luma, marker, on=235, off=16):
        luma[rows] = pixel_row
    chroma_rows = (strip_height(luma.shape[1]) + 1) // 2
    u[:chroma_rows] = 128
    v[:chroma_rows] = 128


def _marker_rows(
    picture: npt.NDArray[np.uint8], marker: FrameMarker, on: int, off: int
) -> list[tuple[slice, npt.NDArray[np.uint8]]]:
    """For each marker row: the pixel rows it covers and one row of pixel values."""
    height, width = picture.shape[:2]
    if width < MIN_WIDTH or height < strip_height(width):
        raise MarkerError(f"a {width}x{height} picture is too small for the marker")
    levels = np.array([off, on], dtype=np.uint8)
    pixel_rows = levels[marker.bits()][:, _column_cells(width)]
    edges = _cell_edges(width, ROWS)
    return [(slice(edges[row], edges[row + 1]), pixel_rows[row]) for row in range(ROWS)]


def read_marker(luma: npt.NDArray[np.uint8]) -> FrameMarker:
    """Read the marker from an H x W luma plane (0-255), raising MarkerError if unreadable.

    Each bit is the mean of the central half of its cell, as MARKER.md prescribes, so the
    blurred cell edges that coding and scaling leave do not decide a bit.
    """
    height, width = luma.shape[:2]
    if width < MIN_WIDTH or height < strip_height(width):
        raise MarkerError(f"a {width}x{height} picture is too small to hold a marker")
    row_spans, column_bounds = _sample_windows(width)
    bands = np.zeros((ROWS, width + 1))  # one spare column: reduceat needs every bound < len
    for row, (y0, y1) in enumerate(row_spans):
        bands[row, :width] = luma[y0:y1].mean(axis=0)
    sums = np.add.reduceat(bands, column_bounds, axis=1)[:, ::2]
    widths = np.diff(column_bounds)[::2]
    bits = (sums / widths > LUMA_THRESHOLD).astype(np.uint8)
    words = np.packbits(bits.reshape(-1)).view(">u4")
    frame_sequence, capture_time_ms, input_sequence, crc = (int(w) for w in words)
    marker = FrameMarker(frame_sequence, capture_time_ms, input_sequence)
    if marker.crc() != crc:
        raise MarkerError("marker CRC does not match: the frame is unreadable")
    return marker
