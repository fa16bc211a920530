"""Host and GPU telemetry: psutil for the host, NVML (nvidia-ml-py) for NVIDIA GPUs.

Every NVML call of the project is in this module. The readings travel in the contract's
records (contracts/protocol.py: HostSpecs at registration, Telemetry with each heartbeat), so
what the agent measures and what the server validates are one definition.

`gpu_telemetry` turns raw NVML answers into a record and is pure; `TelemetryReader` is the
seam that talks to the driver. Its calls block (NVML asks the kernel driver, and psutil reads
/proc), so an async caller runs them in a worker thread.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import psutil
import pynvml  # type: ignore[import-untyped]

from contracts import protocol as p

log = logging.getLogger(__name__)

MIB = 1 << 20

# A reading NVML cannot give here is None, not an error: encoder queries on GPUs without NVENC
# (H100, H200, A100) and most queries under MIG answer NotSupported, an older driver lacks the
# function, and an unprivileged container may be refused a query.
_UNAVAILABLE = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLError_NoPermission,
)
_READING_LIMITS = {f.name: f.metadata for f in fields(p.GpuTelemetry) if f.metadata.get("null")}


@dataclass(frozen=True, slots=True)
class NvmlReadings:
    """One GPU's answers in NVML's own units (bytes, mW); None where NVML had no answer."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    gpu_util_percent: int | None = None
    memory_util_percent: int | None = None
    temperature_c: int | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    graphics_clock_mhz: int | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    encoder_util_percent: int | None = None
    # nvmlDeviceGetEncoderStats: (sessions, average fps, average latency in us)
    encoder_stats: tuple[int, int, int] | None = None
    encoder_capacity_h264: int | None = None
    encoder_capacity_hevc: int | None = None
    encoder_capacity_av1: int | None = None


def gpu_telemetry(raw: NvmlReadings) -> p.GpuTelemetry:
    """Convert NVML's answers into the contract's units (MiB, W).

    A reading outside the contract's range (a driver glitch, a sensor that is not wired) is
    reported as None: the server refuses a heartbeat with an out-of-range value, and one odd
    sensor must not cost the container its liveness.
    """
    sessions, fps, latency_us = raw.encoder_stats or (None, None, None)
    reading = p.GpuTelemetry(
        index=raw.index,
        name=raw.name[: p.MAX_GPU_NAME],
        uuid=raw.uuid[: p.MAX_GPU_NAME],
        memory_total_mib=_mib(raw.memory_total_bytes),
        memory_used_mib=_mib(raw.memory_used_bytes),
        gpu_util_percent=raw.gpu_util_percent,
        memory_util_percent=raw.memory_util_percent,
        temperature_c=raw.temperature_c,
        power_w=_watts(raw.power_mw),
        power_limit_w=_watts(raw.power_limit_mw),
        graphics_clock_mhz=raw.graphics_clock_mhz,
        sm_clock_mhz=raw.sm_clock_mhz,
        memory_clock_mhz=raw.memory_clock_mhz,
        encoder_util_percent=raw.encoder_util_percent,
        encoder_sessions=sessions,
        encoder_fps=fps,
        encoder_latency_us=latency_us,
        encoder_capacity_h264=raw.encoder_capacity_h264,
        encoder_capacity_hevc=raw.encoder_capacity_hevc,
        encoder_capacity_av1=raw.encoder_capacity_av1,
    )
    implausible: dict[str, Any] = {
        name: None
        for name, rules in _READING_LIMITS.items()
        if (value := getattr(reading, name)) is not None
        and not rules["low"] <= value <= rules["high"]
    }
    return replace(reading, **implausible)


def gpu_spec(reading: p.GpuTelemetry) -> p.GpuSpec:
    """The part of a reading that describes the GPU rather than its load."""
    return p.GpuSpec(reading.index, reading.name, reading.uuid, reading.memory_total_mib)


def cpu_model(cpuinfo: str) -> str:
    """The CPU's marketing name from /proc/cpuinfo text ('' when it names none, as on ARM)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()[: p.MAX_TEXT]
    return ""


def _mib(size: int | None) -> int | None:
    return None if size is None else size // MIB


def _watts(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000


class TelemetryReader:
    """Reads the host and its NVIDIA GPUs. NVML is initialised once, on the first read.

    Without a driver (or when NVML will not start) the reader says so in one log line and
    reports a CPU-only host from then on. `close` shuts NVML down; a later read starts it again.
    Reads and `close` may come from different threads (a cancelled `asyncio.to_thread` read
    still runs to its end), so they take turns on a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: bool | None = None  # None: not tried yet; False: no usable driver
        self._failing: set[int] = set()  # GPUs whose last read failed: warn once, not per beat

    def host_specs(self) -> p.HostSpecs:
        """What registration announces: CPU, cores, RAM and each GPU's name and memory."""
        cpuinfo = Path("/proc/cpuinfo")
        model = cpu_model(cpuinfo.read_text()) if cpuinfo.exists() else ""
        psutil.cpu_percent()  # opens the window the first heartbeat's CPU % covers
        return p.HostSpecs(
            cpu_model=model or platform.processor() or platform.machine() or "unknown",
            cpu_cores=psutil.cpu_count() or 1,
            ram_mib=max(1, psutil.virtual_memory().total // MIB),
            gpus=[gpu_spec(reading) for reading in self.gpus()],
        )

    def telemetry(self) -> p.Telemetry:
        """What a heartbeat carries. CPU % is over the time since the previous call."""
        return p.Telemetry(
            cpu_percent=psutil.cpu_percent(),
            ram_used_mib=psutil.virtual_memory().used // MIB,
            gpus=self.gpus(),
        )

    def gpus(self) -> list[p.GpuTelemetry]:
        """One reading per GPU (at most the contract's MAX_GPUS); [] without a driver."""
        with self._lock:
            if not self._started():
                return []
            readings = []
            for index in range(min(pynvml.nvmlDeviceGetCount(), p.MAX_GPUS)):
                try:
                    readings.append(gpu_telemetry(_read_device(index)))
                except pynvml.NVMLError as exc:  # a GPU fallen off the bus: report the rest
                    if index not in self._failing:
                        log.warning("GPU %d cannot be read (%s); leaving it out", index, exc)
                    self._failing.add(index)
                else:
                    self._failing.discard(index)
            return readings

    def close(self) -> None:
        with self._lock:
            if self._nvml:
                pynvml.nvmlShutdown()
            self._nvml = None
            self._failing.clear()

    def __enter__(self) -> TelemetryReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _started(self) -> bool:
        if self._nvml is None:
            try:
                pynvml.nvmlInit()
            except (pynvml.NVMLError, OSError) as exc:
                self._nvml = False
                log.info("no NVIDIA driver (%s): reporting CPU-only specs", exc)
            else:
                self._nvml = True
                log.info(
                    "NVML started: driver %s, %d GPU(s)",
                    pynvml.nvmlSystemGetDriverVersion(),
                    pynvml.nvmlDeviceGetCount(),
                )
        return self._nvml


def _read_device(index: int) -> NvmlReadings:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def ask(query: Callable[..., Any], *args: Any) -> Any:
        """`query(handle, *args)`, or None where this GPU or driver cannot answer it."""
        try:
            return query(handle, *args)
        except _UNAVAILABLE:
            return None

    memory = ask(pynvml.nvmlDeviceGetMemoryInfo)
    utilization = ask(pynvml.nvmlDeviceGetUtilizationRates)
    encoder = ask(pynvml.nvmlDeviceGetEncoderUtilization)  # [percent, sampling period in us]
    return NvmlReadings(
        index=index,
        name=pynvml.nvmlDeviceGetName(handle),
        uuid=pynvml.nvmlDeviceGetUUID(handle),
        memory_total_bytes=None if memory is None else memory.total,
        memory_used_bytes=None if memory is None else memory.used,
        gpu_util_percent=None if utilization is None else utilization.gpu,
        memory_util_percent=None if utilization is None else utilization.memory,
        temperature_c=ask(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
        power_mw=ask(pynvml.nvmlDeviceGetPowerUsage),
        power_limit_mw=ask(pynvml.nvmlDeviceGetEnforcedPowerLimit),
        graphics_clock_mhz=ask(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_GRAPHICS),
        sm_clock_mhz=ask(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        memory_clock_mhz=ask(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        encoder_util_percent=None if encoder is None else encoder[0],
        encoder_stats=ask(pynvml.nvmlDeviceGetEncoderStats),
        encoder_capacity_h264=ask(
            pynvml.nvmlDeviceGetEncoderCapacity, pynvml.NVML_ENCODER_QUERY_H264
        ),
        encoder_capacity_hevc=ask(
            pynvml.nvmlDeviceGetEncoderCapacity, pynvml.NVML_ENCODER_QUERY_HEVC
        ),
        encoder_capacity_av1=ask(
            pynvml.nvmlDeviceGetEncoderCapacity, pynvml.NVML_ENCODER_QUERY_AV1
        ),
    )
