"""What a build needs of a container, and the one shape it streams at: its manifest says both,
selection filters by the first and the seat is booked at the second."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.stream_shapes import Shape


@dataclass(frozen=True, slots=True)
class Requirements:
    """A build's needs, as its manifest states them (builds/manifest.py)."""

    vram_mib: int = 0
    cpu_cores: int = 0
    ram_mib: int = 0
    uplink_mbps: float = 0.0
    encoders: frozenset[str] = frozenset()  # the container needs one of them; empty: any

    def describe(self) -> str:
        """The needs in words, e.g. "8192 MiB VRAM, encoder h264 or vp8"; "" without any."""
        parts = [
            f"{value:g} {unit}"
            for value, unit in (
                (self.vram_mib, "MiB VRAM"),
                (self.cpu_cores, "cores"),
                (self.ram_mib, "MiB RAM"),
                (self.uplink_mbps, "Mbit/s uplink"),
            )
            if value
        ]
        if self.encoders:
            parts.append("encoder " + " or ".join(sorted(self.encoders)))
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class BuildNeeds:
    """What playing a build takes: a host that meets `requirements`, and a seat of `shape`,
    the size and rate the build runs at whatever the player asked for."""

    requirements: Requirements
    shape: Shape
