"""Stream shapes: the resolutions and frame rates a player picks among, and what a container
with given limits offers of them. The page, the indexer and the container agree on these."""

from __future__ import annotations

Shape = tuple[int, int, int]  # width, height, frames per second

SHAPES: tuple[Shape, ...] = (
    (1280, 720, 60),
    (1920, 1080, 60),
    (1280, 720, 120),
    (1920, 1080, 120),
)


def advertised_shapes(max_width: int, max_height: int, max_fps: int) -> list[Shape]:
    """The shapes players pick among (SHAPES) within the container's limits, and its largest."""
    shapes = [
        (w, h, fps) for w, h, fps in SHAPES if w <= max_width and h <= max_height and fps <= max_fps
    ]
    if (max_width, max_height, max_fps) not in shapes:
        shapes.append((max_width, max_height, max_fps))
    return shapes
