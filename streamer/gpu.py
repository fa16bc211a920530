"""The GPU frame path: the reference game drawn, marked and converted to NV12 in GPU memory.

A GPU container renders with CuPy and converts RGB(A) -> NV12 (BT.709, limited range) in one
kernel, into one contiguous buffer, luma first: what NVENC takes through DLPack with no host
copy (`av.VideoFrame.from_dlpack(nv12_planes(buffer))`). On a GPU without NVENC (H100, H200,
A100: shared/FIELD-NOTES.md) the NV12 is copied to the host once (`nv12_to_host`) and x264
encodes it.

This is the only module that imports CuPy, and only inside functions, so the CPU path and the
test suite run where CuPy is not installed. The kernel is the twin of
`reference_game.colour.rgb_to_nv12`: same float32 coefficients, same order of operations, no fused
multiply-add, same round-half-to-even, so the two give the same samples.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.marker import FrameMarker, paint_marker
from contracts.planes import NV12Frame
from reference_game.colour import BT709, CHROMA_RANGE, LUMA_RANGE, yuv420_shape
from reference_game.game import ReferenceGame
from streamer.errors import StreamerError

DeviceArray = Any  # a cupy.ndarray: CuPy ships no type information
INSTALL_HINT = "pip install 'gamecast[gpu]'"
_BLOCK = (32, 8)  # threads per CUDA block, one per 2 x 2 pixel block

# One thread per 2 x 2 block: four luma samples, one interleaved U, V pair. Every step is the
# numpy twin's (reference_game/colour.py `_weighted`), in the same order and in float32.
_KERNEL_SOURCE = r"""
__device__ unsigned char quantize(float value, float low, float high) {
    return (unsigned char)fminf(fmaxf(rintf(value), low), high);
}

extern "C" __global__ void rgb_to_nv12(
    const unsigned char* rgb, unsigned char* nv12, const float* k,
    int width, int height, int channels)
{
    const int bx = blockIdx.x * blockDim.x + threadIdx.x;
    const int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= width / 2 || by >= height / 2) return;
    float sum_r = 0.0f, sum_g = 0.0f, sum_b = 0.0f;
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            const size_t pixel = (size_t)(2 * by + dy) * width + (size_t)(2 * bx + dx);
            const unsigned char* p = rgb + pixel * channels;
            const float r = p[0], g = p[1], b = p[2];
            nv12[pixel] = quantize(r * k[0] + g * k[1] + b * k[2] + 16.0f, LUMA_LOW, LUMA_HIGH);
            sum_r += r;
            sum_g += g;
            sum_b += b;
        }
    }
    const float r = sum_r * 0.25f, g = sum_g * 0.25f, b = sum_b * 0.25f;
    unsigned char* uv = nv12 + (size_t)height * width + (size_t)by * width + 2 * (size_t)bx;
    uv[0] = quantize(r * k[3] + g * k[4] + b * k[5] + 128.0f, CHROMA_LOW, CHROMA_HIGH);
    uv[1] = quantize(r * k[6] + g * k[7] + b * k[8] + 128.0f, CHROMA_LOW, CHROMA_HIGH);
}
"""


def _cupy() -> Any:
    """CuPy, imported on first use, so that nothing on the CPU path ever loads it."""
    import cupy  # noqa: PLC0415

    return cupy


class GpuUnavailableError(StreamerError, RuntimeError):
    """The GPU path was asked for on a host where it cannot run; the message says why."""


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """None where the GPU path works on this host; else why not, in words (probed once).

    Works means: CuPy imports, a CUDA device answers, and the conversion kernel compiles and
    runs on a tiny picture. Each can fail on its own (no wheel, no driver, no NVRTC), and the
    reason names which.
    """
    try:
        cupy = _cupy()
    except ModuleNotFoundError as error:
        if error.name == "cupy":
            return f"cupy is not installed ({INSTALL_HINT})"
        return f"cupy does not import: {error}"
    except ImportError as error:
        return f"cupy does not import: {error}"
    # CuPy reports a missing driver, device or library with several exception types
    # (CUDARuntimeError, CompileException, RuntimeError, OSError): each is a reason here.
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device: the driver reports none"
        cupy.zeros(16, dtype=cupy.uint8).get()
    except Exception as error:
        return f"no CUDA device: {error}"
    try:
        rgb_to_nv12_gpu(cupy.zeros((2, 2, 3), dtype=cupy.uint8)).get()
    except Exception as error:
        return f"the CUDA conversion kernel does not compile or run: {error}"
    return None


def require_gpu() -> None:
    """Raise GpuUnavailableError, with the probe's reason, unless the GPU path works here."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise GpuUnavailableError(f"the GPU frame path cannot run here: {reason}")


@functools.cache
def _kernel() -> tuple[Any, DeviceArray]:
    """The compiled kernel and its coefficients in device memory (BT.709 rows Y, Cb, Cr)."""
    cupy = _cupy()
    defines = (
        f"#define LUMA_LOW {LUMA_RANGE[0]}.0f\n#define LUMA_HIGH {LUMA_RANGE[1]}.0f\n"
        f"#define CHROMA_LOW {CHROMA_RANGE[0]}.0f\n#define CHROMA_HIGH {CHROMA_RANGE[1]}.0f\n"
    )
    # No fused multiply-add: numpy rounds after every multiply and add, and so must we.
    kernel = cupy.RawKernel(defines + _KERNEL_SOURCE, "rgb_to_nv12", options=("--fmad=false",))
    return kernel, cupy.asarray(BT709.reshape(-1))


def rgb_to_nv12_gpu(rgb: DeviceArray, out: DeviceArray | None = None) -> DeviceArray:
    """An H x W x 3 (RGB) or x 4 (RGBA) uint8 CuPy picture as BT.709 NV12, on the device.

    Writes into `out` when given (a C-contiguous uint8 CuPy array of (H * 3/2) x W, so a
    caller can allocate once), else into a new one; returns it. Asynchronous on the current
    CUDA stream, like any CuPy operation.
    """
    cupy = _cupy()
    height, width = yuv420_shape(rgb.shape)
    if rgb.dtype != cupy.uint8:
        raise ValueError(f"expected 8-bit samples (uint8), got {rgb.dtype}")
    shape = (height * 3 // 2, width)
    if out is None:
        out = cupy.empty(shape, dtype=cupy.uint8)
    elif out.shape != shape or out.dtype != cupy.uint8 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous uint8 array of shape {shape}, "
            f"got {out.dtype} {out.shape} (contiguous: {out.flags.c_contiguous})"
        )
    kernel, coefficients = _kernel()
    blocks = (width // 2, height // 2)  # one thread each
    grid = tuple(
        (count + threads - 1) // threads for count, threads in zip(blocks, _BLOCK, strict=True)
    )
    args = (cupy.ascontiguousarray(rgb), out, coefficients)
    kernel(grid, _BLOCK, (*args, np.int32(width), np.int32(height), np.int32(rgb.shape[2])))
    return out


def nv12_to_host(nv12: DeviceArray) -> NV12Frame:
    """Copy an NV12 buffer from the device, once: for x264 on a GPU without NVENC."""
    cupy = _cupy()
    host: NV12Frame = cupy.asnumpy(nv12)
    return host


class GpuFrameSource:
    """The reference game for a GPU container: drawn, marked and converted on the device.

    The game's state lives on the host exactly as on the CPU path (`game`: apply input and
    `advance` it there); `render_nv12` then draws that state with CuPy (the same picture as
    `game.render()`), paints the marker and converts it to NV12.
    """

    def __init__(self, game: ReferenceGame) -> None:
        require_gpu()
        self.game = game

    def render_nv12(self, marker: FrameMarker) -> DeviceArray:
        """The game's current state, with `marker` painted in, as NV12 in GPU memory.

        A new buffer each call, from CuPy's memory pool (no allocation once warm), so a frame
        still held by the encoder is never overwritten. One contiguous (H * 3/2) x W uint8
        array, luma first, as NVENC takes it. Returns once the device has finished writing
        it, so any consumer, on any CUDA stream, sees the final pixels.
        """
        cupy = _cupy()
        rgb = self.game.render_with(cupy)
        paint_marker(rgb, marker, xp=cupy)
        nv12 = rgb_to_nv12_gpu(rgb)
        cupy.cuda.get_current_stream().synchronize()
        return nv12


def conversion_times_ms(rgb: npt.NDArray[np.uint8], frames: int, warmup: int = 10) -> list[float]:
    """Milliseconds the kernel takes to convert `rgb` (uploaded once), per frame.

    Timed with CUDA events around each launch, after `warmup` launches (the first compiles
    the kernel), into one preallocated buffer. A sample includes the launch from Python, as
    in the frame path, and no transfer.
    """
    require_gpu()
    cupy = _cupy()
    device_rgb = cupy.asarray(rgb)
    out = cupy.empty((rgb.shape[0] * 3 // 2, rgb.shape[1]), dtype=cupy.uint8)
    for _ in range(warmup):
        rgb_to_nv12_gpu(device_rgb, out)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    samples = []
    for _ in range(frames):
        start.record()
        rgb_to_nv12_gpu(device_rgb, out)
        end.record()
        end.synchronize()
        samples.append(float(cupy.cuda.get_elapsed_time(start, end)))
    return samples
