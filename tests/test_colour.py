"""BT.601 limited-range conversion, and the game drawn straight into I420 against swscale."""

from __future__ import annotations

import av
import numpy as np
import pytest

from contracts.marker import FrameMarker, paint_marker, paint_marker_i420, read_marker
from contracts.planes import i420_planes
from reference_game.colour import rgb_to_i420, rgb_to_yuv
from reference_game.game import ReferenceGame
from tests.samples import played


def swscale_i420(rgb: np.ndarray) -> np.ndarray:
    """FFmpeg's own RGB -> yuv420p: the reference both of our conversions must agree with."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p").to_ndarray()


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [((0, 0, 0), (16, 128, 128)), ((255, 255, 255), (235, 128, 128)), ((255, 0, 0), (81, 90, 240))],
)
def test_known_colours(rgb: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    assert rgb_to_yuv(rgb) == yuv


def test_flat_colours_match_swscale_within_one() -> None:
    rng = np.random.default_rng(3)
    for colour in rng.integers(0, 256, size=(50, 3)):
        expected = swscale_i420(np.broadcast_to(colour.astype(np.uint8), (16, 16, 3)))
        y, u, v = i420_planes(expected)
        ours = rgb_to_yuv((int(colour[0]), int(colour[1]), int(colour[2])))
        assert abs(ours[0] - int(y[0, 0])) <= 1
        assert abs(ours[1] - int(u[0, 0])) <= 1
        assert abs(ours[2] - int(v[0, 0])) <= 1


def test_whole_picture_luma_matches_swscale_within_one() -> None:
    picture = ReferenceGame(640, 360, seed=4).render()
    ours, reference = rgb_to_i420(picture), swscale_i420(picture)
    assert ours.shape == reference.shape == (540, 640)
    luma_error = np.abs(i420_planes(ours)[0].astype(int) - i420_planes(reference)[0])
    assert luma_error.max() <= 1


def test_odd_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="even dimensions"):
        rgb_to_i420(np.zeros((3, 4, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (640, 360)])
def test_game_drawn_in_i420_is_the_rgb_picture_converted(size: tuple[int, int]) -> None:
    game = played(ReferenceGame(*size, seed=2))
    reference = swscale_i420(game.render())
    drawn = game.render_i420()
    luma_error = np.abs(i420_planes(drawn)[0].astype(int) - i420_planes(reference)[0])
    assert luma_error.max() <= 1  # every pixel of the geometry is where the RGB render has it
    chroma_error = np.abs(drawn[size[1] :].astype(int) - reference[size[1] :])
    # Chroma differs only at edges (rectangles, grid lines), where swscale filters across
    # neighbouring blocks and we take each 2x2 block as it is.
    assert np.mean(chroma_error > 2) < 0.05


def test_marker_painted_in_i420_reads_back_and_matches_the_rgb_marker() -> None:
    game = ReferenceGame(1280, 720, seed=1)
    marker = FrameMarker(77, 123_456_789, 9)
    rgb = game.render().copy()
    paint_marker(rgb, marker)
    drawn = game.render_i420()
    paint_marker_i420(drawn, marker)
    assert read_marker(i420_planes(drawn)[0]) == marker
    strip = 40  # 1280 / 64 * 2
    assert np.array_equal(drawn[:strip], swscale_i420(rgb)[:strip])
    assert (i420_planes(drawn)[1][: strip // 2] == 128).all()
