"""Raw frame layouts the streamer sends and readers sample: I420 and NV12 in one buffer each.

Every layout is one contiguous array of (H * 3/2) rows of W bytes, luma first: what x264 and
NVENC take as is, and what the marker is painted into and read from.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I420Frame = npt.NDArray[np.uint8]  # (H * 3/2) x W: the Y plane, then U, then V, each packed
NV12Frame = npt.NDArray[np.uint8]  # (H * 3/2) x W: the Y plane, then rows of interleaved U, V
Plane = npt.NDArray[np.uint8]


def i420_planes(frame: I420Frame) -> tuple[Plane, Plane, Plane]:
    """Views of the Y (H x W), U and V (H/2 x W/2) planes inside one I420 buffer."""
    rows, width = frame.shape
    height = rows * 2 // 3
    flat = frame.reshape(-1)
    luma = height * width
    quarter = luma // 4
    u = flat[luma : luma + quarter].reshape(height // 2, width // 2)
    v = flat[luma + quarter :].reshape(height // 2, width // 2)
    return frame[:height], u, v


def nv12_planes(frame: NV12Frame) -> tuple[Plane, Plane]:
    """Views of the Y (H x W) and interleaved UV (H/2 x W) planes inside one NV12 buffer.

    Plain slicing, so it works on a CuPy array too: the two planes `av.VideoFrame.from_dlpack`
    takes, still one allocation.
    """
    height = frame.shape[0] * 2 // 3
    return frame[:height], frame[height:]
