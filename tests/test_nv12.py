"""BT.709 limited-range NV12, the numpy twin of the GPU kernel, against swscale."""

from __future__ import annotations

import av
import numpy as np
import pytest

from benchmarks.convert import measure_conversion
from contracts.marker import FrameMarker, paint_marker, read_marker
from contracts.planes import nv12_planes
from reference_game.colour import rgb_to_nv12
from reference_game.game import ReferenceGame
from tests.samples import played


def swscale_nv12(picture: np.ndarray) -> np.ndarray:
    """FFmpeg's own RGB(A) -> NV12, BT.709 limited range: the reference for the twin.

    Area interpolation, because swscale's default (bilinear) filters chroma across
    neighbouring 2 x 2 blocks, while NV12 for NVENC takes each block's mean, which is what
    the area filter computes when halving.
    """
    layout = "rgb24" if picture.shape[2] == 3 else "rgba"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=layout)
    converted = frame.reformat(
        format="nv12", dst_colorspace="ITU709", dst_color_range="MPEG", interpolation="AREA"
    )
    return converted.to_ndarray()


def played_picture(width: int, height: int) -> np.ndarray:
    """A game picture with the player moved, the crosshair filled and the marker painted."""
    picture = played(ReferenceGame(width, height, seed=5), pointer=(0.7, 0.3)).render().copy()
    paint_marker(picture, FrameMarker(20, 1_234_567, 3))
    return picture


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [
        ((255, 255, 255), (235, 128, 128)),
        ((0, 0, 0), (16, 128, 128)),
        ((128, 128, 128), (126, 128, 128)),
        ((255, 0, 0), (63, 102, 240)),
        ((0, 255, 0), (173, 42, 26)),
        ((0, 0, 255), (32, 240, 118)),
    ],
)
def test_known_bt709_values(rgb: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    nv12 = rgb_to_nv12(np.full((4, 6, 3), rgb, dtype=np.uint8))
    luma, chroma = nv12_planes(nv12)
    assert (luma == yuv[0]).all()
    assert (chroma[:, 0::2] == yuv[1]).all()
    assert (chroma[:, 1::2] == yuv[2]).all()


def test_flat_colours_match_swscale_within_one() -> None:
    for colour in np.random.default_rng(3).integers(0, 256, size=(50, 3)):
        picture = np.broadcast_to(colour.astype(np.uint8), (16, 16, 3))
        error = np.abs(rgb_to_nv12(picture).astype(int) - swscale_nv12(picture))
        assert error.max() <= 1, colour


@pytest.mark.parametrize("size", [(640, 360), (1280, 720)], ids=str)
@pytest.mark.parametrize("channels", [3, 4], ids=["rgb", "rgba"])
def test_whole_game_picture_matches_swscale_within_one(
    size: tuple[int, int], channels: int
) -> None:
    picture = played_picture(*size)
    if channels == 4:  # alpha is carried, never used
        alpha = np.random.default_rng(1).integers(0, 256, size=(size[1], size[0], 1))
        picture = np.concatenate([picture, alpha.astype(np.uint8)], axis=2)
    ours, reference = rgb_to_nv12(picture), swscale_nv12(picture)
    assert ours.shape == reference.shape == (size[1] * 3 // 2, size[0])
    assert np.abs(ours.astype(int) - reference).max() <= 1


def test_one_contiguous_buffer_luma_then_interleaved_chroma() -> None:
    picture = np.zeros((4, 8, 3), dtype=np.uint8)
    picture[:, :4] = (255, 0, 0)  # red left half, blue right half
    picture[:, 4:] = (0, 0, 255)
    nv12 = rgb_to_nv12(picture)
    assert nv12.shape == (6, 8)
    assert nv12.dtype == np.uint8
    assert nv12.flags.c_contiguous
    luma, chroma = nv12_planes(nv12)
    assert np.shares_memory(luma, nv12) and np.shares_memory(chroma, nv12)
    assert luma.shape == (4, 8) and chroma.shape == (2, 8)
    assert luma.tolist() == [[63] * 4 + [32] * 4] * 4
    assert chroma.tolist() == [[102, 240, 102, 240, 240, 118, 240, 118]] * 2


def test_the_two_planes_are_what_pyav_takes_through_dlpack() -> None:
    # The NVENC path hands PyAV these two views of a CuPy buffer; a numpy one checks the layout.
    nv12 = rgb_to_nv12(played_picture(640, 360))
    frame = av.VideoFrame.from_dlpack(nv12_planes(nv12), format="nv12")
    assert (frame.format.name, frame.width, frame.height) == ("nv12", 640, 360)
    assert np.array_equal(frame.to_ndarray(), nv12)


def test_marker_reads_back_from_nv12_luma() -> None:
    luma, _ = nv12_planes(rgb_to_nv12(played_picture(1280, 720)))
    assert read_marker(luma) == FrameMarker(20, 1_234_567, 3)


@pytest.mark.parametrize(
    ("picture", "message"),
    [
        (np.zeros((3, 4, 3), dtype=np.uint8), r"needs even dimensions, got 4x3"),
        (np.zeros((4, 5, 4), dtype=np.uint8), r"needs even dimensions, got 5x4"),
        (np.zeros((4, 4), dtype=np.uint8), r"H x W x 3 \(RGB\) or x 4 \(RGBA\).*\(4, 4\)"),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"H x W x 3 \(RGB\) or x 4 \(RGBA\).*\(4, 4, 2\)"),
        (np.zeros((4, 4, 3), dtype=np.float32), "8-bit samples \\(uint8\\), got float32"),
    ],
)
def test_unusable_pictures_are_refused(picture: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rgb_to_nv12(picture)


def test_measure_conversion_with_numpy() -> None:
    result = measure_conversion("numpy", 256, 144, frames=3)
    assert set(result) == {"frames", "fps", "p50_ms", "p95_ms", "mean_ms"}
    assert result["frames"] == 3
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["fps"] > 0


@pytest.mark.parametrize(
    ("backend", "frames", "message"),
    [("opencl", 3, "unknown conversion backend 'opencl'"), ("numpy", 0, "at least 1, got 0")],
)
def test_measure_conversion_refuses_bad_arguments(backend: str, frames: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_conversion(backend, 256, 144, frames)
