"""Telemetry: NVML answers converted to the contract's units, the no-driver path, and the API."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, replace
from typing import Any

import aiohttp
import psutil
import pytest

from contracts import protocol as p
from streamer.telemetry import NvmlReadings, TelemetryReader, cpu_model, gpu_spec, gpu_telemetry
from tests.samples import L4_TELEMETRY

GIB = 1 << 30

# What an L4 (NVENC) answers under light load, in NVML's units.
L4 = NvmlReadings(
    index=0,
    name="NVIDIA L4",
    uuid="GPU-3f1c6a2e-0000-4000-8000-000000000000",
    memory_total_bytes=23_034 * (1 << 20),
    memory_used_bytes=1_288 * (1 << 20) + 512,  # partial MiB: floored
    gpu_util_percent=31,
    memory_util_percent=12,
    temperature_c=48,
    power_mw=35_417,
    power_limit_mw=72_000,
    graphics_clock_mhz=2040,
    sm_clock_mhz=2040,
    memory_clock_mhz=6250,
    encoder_util_percent=18,
    encoder_stats=(2, 119, 1830),
    encoder_capacity_h264=80,
    encoder_capacity_hevc=75,
    encoder_capacity_av1=70,
)

# An H100: no NVENC, so every encoder query answered NotSupported.
H100 = NvmlReadings(
    index=1,
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-9d0b4c11-0000-4000-8000-000000000000",
    memory_total_bytes=80 * GIB,
    memory_used_bytes=0,
    gpu_util_percent=0,
    memory_util_percent=0,
    temperature_c=33,
    power_mw=71_234,
    power_limit_mw=700_000,
    graphics_clock_mhz=345,
    sm_clock_mhz=345,
    memory_clock_mhz=2619,
)


def test_nvml_units_become_mib_and_watts() -> None:
    assert gpu_telemetry(L4) == L4_TELEMETRY


def test_unsupported_readings_are_none() -> None:
    reading = gpu_telemetry(H100)
    assert (reading.memory_total_mib, reading.power_w, reading.power_limit_w) == (
        81_920,
        71.234,
        700.0,
    )
    encoder = {k: v for k, v in asdict(reading).items() if k.startswith("encoder_")}
    assert len(encoder) == 7
    assert set(encoder.values()) == {None}
    bare = gpu_telemetry(NvmlReadings(2, "MIG 1g.10gb", "MIG-x"))  # everything NotSupported
    assert [k for k, v in asdict(bare).items() if v is not None] == ["index", "name", "uuid"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature_c": 4_294_967_295}, "temperature_c"),  # an unwired sensor's all-ones
        ({"gpu_util_percent": 101}, "gpu_util_percent"),
        ({"power_mw": 20_000_000}, "power_w"),
        ({"encoder_stats": (2, 119, -1)}, "encoder_latency_us"),
        ({"memory_used_bytes": (p.MAX_MIB + 1) * (1 << 20)}, "memory_used_mib"),
    ],
)
def test_an_implausible_reading_is_reported_as_unknown(change: dict[str, Any], field: str) -> None:
    """The server would refuse the whole heartbeat; the agent sends None for that one reading."""
    reading = gpu_telemetry(replace(L4, **change))
    assert getattr(reading, field) is None
    assert reading == replace(gpu_telemetry(L4), **{field: None})
    parsed = p.parse_message(p.Heartbeat(p.Telemetry(1.0, 1, [reading])).to_json(), "container")
    assert isinstance(parsed, p.Heartbeat)


def test_long_names_are_cut_to_the_contract() -> None:
    reading = gpu_telemetry(replace(L4, name="N" * 200, uuid="U" * 200))
    assert (len(reading.name), len(reading.uuid)) == (p.MAX_GPU_NAME, p.MAX_GPU_NAME)


def test_gpu_spec_is_the_descriptive_part() -> None:
    assert gpu_spec(gpu_telemetry(H100)) == p.GpuSpec(
        1, "NVIDIA H100 80GB HBM3", "GPU-9d0b4c11-0000-4000-8000-000000000000", 81_920
    )


@pytest.mark.parametrize(
    ("text", "model"),
    [
        (
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core\n",
            "AMD EPYC 9654 96-Core",
        ),
        (
            "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nprocessor\t: 1\nmodel name\t: other\n",
            "Intel(R) Xeon(R)",
        ),
        ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n", ""),  # ARM names none
        ("model name\t: " + "x" * 300 + "\n", "x" * p.MAX_TEXT),
    ],
)
def test_cpu_model_from_cpuinfo(text: str, model: str) -> None:
    assert cpu_model(text) == model


def test_without_a_driver_the_reader_says_so_once_and_reports_cpu_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real pynvml on this machine, not a fake: NVML cannot start without the driver."""
    caplog.set_level(logging.INFO, logger="streamer.telemetry")
    with TelemetryReader() as reader:
        reads = [reader.gpus(), reader.telemetry().gpus, reader.gpus()]
        specs = reader.host_specs()
    said = [r.getMessage() for r in caplog.records if "no NVIDIA driver" in r.getMessage()]
    if not said and any(reads):
        pytest.skip("an NVIDIA driver is present here: the no-driver path cannot be seen")
    assert reads == [[], [], []]
    assert specs.gpus == []
    assert len(said) == 1
    assert said[0].startswith("no NVIDIA driver (")
    assert said[0].endswith("): reporting CPU-only specs")
    assert specs.cpu_cores == psutil.cpu_count()
    assert specs.ram_mib == psutil.virtual_memory().total >> 20
    assert specs.cpu_model


@pytest.mark.gpu
def test_nvml_returns_sane_readings() -> None:
    with TelemetryReader() as reader:
        gpus = reader.gpus()
        specs = reader.host_specs()
    assert gpus, "NVML reported no GPU on a GPU host"
    assert [g.name for g in specs.gpus] == [g.name for g in gpus]
    for gpu in gpus:
        assert gpu.name
        assert gpu.uuid
        assert gpu.memory_total_mib is not None and gpu.memory_total_mib > 0
        assert gpu.memory_used_mib is not None and 0 <= gpu.memory_used_mib <= gpu.memory_total_mib
        assert gpu.gpu_util_percent is not None and 0 <= gpu.gpu_util_percent <= 100
        assert gpu.memory_util_percent is not None and 0 <= gpu.memory_util_percent <= 100
        assert gpu.temperature_c is not None and 0 <= gpu.temperature_c <= 120
        assert gpu.power_w is not None and gpu.power_w > 0
        assert gpu.power_limit_w is not None and gpu.power_limit_w >= 10
        assert gpu.sm_clock_mhz is not None and gpu.sm_clock_mhz > 0
        for percent in (gpu.encoder_util_percent, gpu.encoder_capacity_h264):
            assert percent is None or 0 <= percent <= 100
        assert gpu.encoder_sessions is None or gpu.encoder_sessions >= 0
        assert gpu.encoder_fps is None or gpu.encoder_fps >= 0
    heartbeat = p.Heartbeat(p.Telemetry(1.0, 1, gpus)).to_json()
    assert p.parse_message(heartbeat, "container") == p.Heartbeat(p.Telemetry(1.0, 1, gpus))


async def _container(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/api/containers") as response:
        (row,) = (await response.json())["containers"]
    return row


async def test_api_shows_host_specs_and_heartbeats_refresh_the_telemetry(network, http) -> None:
    server, _ = network
    with TelemetryReader() as reader:
        here = await asyncio.to_thread(reader.host_specs)
    row = await _container(http, server.url)
    assert row["host"] == {
        "cpu_model": here.cpu_model,
        "cpu_cores": here.cpu_cores,
        "ram_mib": here.ram_mib,
    }
    if here.gpus:
        assert all(g.name in row["gpu"] for g in here.gpus)
    else:
        assert (row["gpu"], row["gpus"]) == ("cpu-only", [])

    # The agent beats at once on registering, then every heartbeat period (2 s here): the load
    # appears, and a later beat makes it younger again.
    ages: list[float] = []
    async with asyncio.timeout(10):
        while len(ages) < 2 or ages[-1] >= ages[-2]:
            row = await _container(http, server.url)
            if row["host_load"] is not None:
                ages.append(row["host_load"]["age_s"])
            await asyncio.sleep(0.2)
    load = row["host_load"]
    assert 0 <= load["cpu_percent"] <= 100
    assert 0 < load["ram_used_mib"] <= here.ram_mib
    assert row["heartbeat_age_s"] == load["age_s"]  # every beat carries telemetry
    if not here.gpus:
        assert row["gpus"] == []
