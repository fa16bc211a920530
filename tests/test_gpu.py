"""The GPU frame path: CuPy kernel against its numpy twin, GPU game against CPU game.

Tests marked `gpu` need an NVIDIA GPU with CuPy; elsewhere conftest.py skips them with the
probe's reason. The rest run everywhere: the CPU path must never need CuPy.
"""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import av
import numpy as np
import pytest

import streamer.gpu
from benchmarks.convert import measure_conversion
from contracts.input_events import GamepadState, InputEvent, KeyEvent, PointerButton, PointerMove
from contracts.marker import FrameMarker, paint_marker, read_marker
from contracts.planes import nv12_planes
from reference_game.colour import rgb_to_nv12
from reference_game.game import ReferenceGame
from streamer.gpu import (
    GpuFrameSource,
    GpuUnavailableError,
    nv12_to_host,
    rgb_to_nv12_gpu,
)
from tests.samples import h264_round_trip

SCHEDULE: list[tuple[int, InputEvent]] = [
    (2, KeyEvent(1, "KeyD", True)),
    (5, PointerMove(2, x=0.1, y=0.9)),
    (6, PointerButton(3, 0, True)),
    (9, KeyEvent(4, "Space", True)),
    (12, GamepadState(5, (-0.7, 0.4), (0.0, 1.0, 1.0))),
    (14, KeyEvent(6, "KeyD", False)),
    (16, PointerMove(7, dx=-50, dy=20)),
    (18, PointerButton(8, 0, False)),
]
FRAMES = 24


@pytest.fixture
def cupy() -> ModuleType:
    import cupy  # noqa: PLC0415  (only where a GPU is: the hook skips these tests elsewhere)

    return cupy


def play(games: list[ReferenceGame], frame: int) -> None:
    """Apply frame `frame`'s scheduled input to every game, then advance them all."""
    for game in games:
        for event in (event for at, event in SCHEDULE if at == frame):
            game.apply(event)
        game.advance()


def game_picture(width: int, height: int) -> np.ndarray:
    game = ReferenceGame(width, height, seed=9)
    for frame in range(FRAMES):
        play([game], frame)
    picture = game.render().copy()
    paint_marker(picture, FrameMarker(FRAMES, 99, game.input_sequence))
    return picture


# Everywhere: the CPU path does not load CuPy, and a missing GPU is an error with a reason.


def test_cpu_path_never_imports_cupy() -> None:
    code = (
        "import sys, streamer.gpu, reference_game.game, reference_game.colour, benchmarks.convert\n"
        "from reference_game.game import ReferenceGame\n"
        "ReferenceGame(256, 144).render_i420(); ReferenceGame(256, 144).render()\n"
        "assert 'cupy' not in sys.modules, 'cupy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_a_gpu_the_source_and_the_benchmark_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streamer.gpu, "gpu_unavailable_reason", lambda: "no CUDA device: none")
    expected = "the GPU frame path cannot run here: no CUDA device: none"
    with pytest.raises(GpuUnavailableError, match=expected):
        GpuFrameSource(ReferenceGame(1280, 720))
    with pytest.raises(GpuUnavailableError, match=expected):
        measure_conversion("cupy", 1280, 720, frames=3)


# With a GPU.


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=str)
@pytest.mark.parametrize("content", ["game", "random-rgb", "random-rgba"])
def test_kernel_equals_numpy_twin(cupy: ModuleType, size: tuple[int, int], content: str) -> None:
    width, height = size
    if content == "game":
        picture = game_picture(width, height)
    else:
        channels = 3 if content == "random-rgb" else 4
        rng = np.random.default_rng(width)
        picture = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    out = cupy.empty((height * 3 // 2, width), dtype=cupy.uint8)
    assert rgb_to_nv12_gpu(cupy.asarray(picture), out) is out
    error = np.abs(nv12_to_host(out).astype(int) - rgb_to_nv12(picture))
    assert error.max() <= 1


@pytest.mark.gpu
def test_kernel_refuses_an_output_buffer_of_the_wrong_shape(cupy: ModuleType) -> None:
    picture = cupy.zeros((720, 1280, 3), dtype=cupy.uint8)
    with pytest.raises(ValueError, match=r"C-contiguous uint8 array of shape \(1080, 1280\)"):
        rgb_to_nv12_gpu(picture, cupy.empty((720, 1280), dtype=cupy.uint8))


@pytest.mark.gpu
def test_gpu_game_renders_the_cpu_picture_for_the_same_inputs(cupy: ModuleType) -> None:
    cpu = ReferenceGame(1280, 720, seed=7)
    gpu = GpuFrameSource(ReferenceGame(1280, 720, seed=7))
    for frame in range(FRAMES):
        play([cpu, gpu.game], frame)
        assert np.array_equal(cupy.asnumpy(gpu.game.render_with(cupy)), cpu.render()), frame
    alone = ReferenceGame(1280, 720, seed=7)  # the inputs did change the picture
    for _ in range(FRAMES):
        alone.advance()
    assert not np.array_equal(alone.render(), cpu.render())


@pytest.mark.gpu
def test_gpu_nv12_is_the_cpu_picture_with_its_marker_converted() -> None:
    cpu = ReferenceGame(1920, 1080, seed=4)
    gpu = GpuFrameSource(ReferenceGame(1920, 1080, seed=4))
    for frame in range(FRAMES):
        play([cpu, gpu.game], frame)
        marker = FrameMarker.at(frame, 1_700_000_000_000 + 16 * frame, cpu.input_sequence)
        picture = cpu.render().copy()
        paint_marker(picture, marker)
        nv12 = nv12_to_host(gpu.render_nv12(marker))
        assert np.abs(nv12.astype(int) - rgb_to_nv12(picture)).max() <= 1, frame
        assert read_marker(nv12_planes(nv12)[0]) == marker


@pytest.mark.gpu
def test_nv12_is_one_contiguous_allocation_luma_first_and_never_reused(cupy: ModuleType) -> None:
    width, height = 1280, 720
    source = GpuFrameSource(ReferenceGame(width, height, seed=1))
    first = source.render_nv12(FrameMarker(0, 0, 0))
    assert isinstance(first, cupy.ndarray)
    assert first.shape == (height * 3 // 2, width)
    assert first.dtype == cupy.uint8
    assert first.flags.c_contiguous
    luma, chroma = nv12_planes(first)
    assert luma.data.ptr == first.data.ptr
    assert chroma.data.ptr == first.data.ptr + width * height
    kept = nv12_to_host(first)
    source.game.advance()
    second = source.render_nv12(FrameMarker(1, 16, 0))
    assert second.data.ptr != first.data.ptr  # the encoder may still hold the first
    assert np.array_equal(nv12_to_host(first), kept)
    assert not np.array_equal(nv12_to_host(second), kept)


@pytest.mark.gpu
def test_dlpack_hands_pyav_the_device_buffer_without_a_host_copy() -> None:
    # What an NVENC encoder is given; reading it back here needs CUDA, not NVENC.
    nv12 = GpuFrameSource(ReferenceGame(1280, 720, seed=2)).render_nv12(FrameMarker(5, 80, 0))
    frame = av.VideoFrame.from_dlpack(nv12_planes(nv12), format="nv12")
    assert frame.format.name == "cuda"
    assert (frame.width, frame.height) == (1280, 720)
    assert np.array_equal(frame.reformat(format="nv12").to_ndarray(), nv12_to_host(nv12))


@pytest.mark.gpu
def test_gpu_frame_encoded_by_x264_decodes_with_the_marker_intact() -> None:
    # The path of a GPU without NVENC: NV12 copied to the host once, x264 encodes it.
    width, height = 1280, 720
    source = GpuFrameSource(ReferenceGame(width, height, seed=3))
    sent: list[FrameMarker] = []
    frames = []
    for frame_index in range(FRAMES):
        play([source.game], frame_index)
        unix_ms = 1_700_000_000_000 + 16 * frame_index
        marker = FrameMarker.at(frame_index, unix_ms, source.game.input_sequence)
        sent.append(marker)
        host = nv12_to_host(source.render_nv12(marker))
        frames.append(av.VideoFrame.from_ndarray(host, format="nv12"))
    assert [read_marker(luma) for luma in h264_round_trip(frames)] == sent


@pytest.mark.gpu
def test_measure_conversion_with_cupy() -> None:
    result = measure_conversion("cupy", 1920, 1080, frames=50)
    assert result["frames"] == 50
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["fps"] > 0
