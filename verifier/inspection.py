"""The registration check: what a container claims against what its host measures, plus the
challenge (contracts/challenge.py) that no claim can fake.

The measurement is the agent's own (NVML, psutil and the encoder probe, run again when the
inspection asks), so by itself it catches stale or edited claims, not a lying agent: that is
the challenge's job, sized from the claims by `device_class`. Every field gets a finding,
passed or not, so the dashboard shows claimed against measured line by line.

Tolerances, where a value may honestly move between registration and inspection:
* RAM within RAM_TOLERANCE (3 %): a kernel update or a VM's firmware reserves a little more.
* GPU memory within VRAM_TOLERANCE (7 %): turning ECC on for GDDR memory (L4, A10, T4, RTX)
  reserves 1/16 (6.25 %) of it, and takes only a reboot.
* GPU names compared after `normalise_gpu_name` (NVML's spelling varies with the driver);
  CPU models after collapsing whitespace; cores, GPU count and UUIDs exactly.

Pure: the verdict's time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from contracts import protocol as p
from contracts.challenge import normalise_gpu_name
from contracts.verdict import Check, Finding, Verdict
from verifier.errors import VerifierError

RAM_TOLERANCE = 0.03
VRAM_TOLERANCE = 0.07


class InspectionError(VerifierError, ValueError):
    """An inspection fed the wrong inputs (not a container's fault); nothing was judged."""


@dataclass(frozen=True, slots=True)
class HostMeasurement:
    """What the host measures when inspected: TelemetryReader.host_specs (NVML GPUs with
    names and memory, CPU, cores, RAM) and the NVENC probe of streamer/backends.py."""

    specs: p.HostSpecs
    nvenc: bool  # h264_nvenc opened and encoded a frame
    nvenc_reason: str  # the probe's words either way


def inspect_registration(
    claim: p.Register, measured: HostMeasurement, challenge: Finding, verifier_id: str, at: float
) -> Verdict:
    """The registration verdict: one finding per claimed field, then the challenge's own."""
    if challenge.name != "challenge":
        raise InspectionError(f"the challenge finding is named 'challenge', not {challenge.name!r}")
    if claim.host is None:
        findings = [
            Finding("host", False, detail="the registration has no host specs: update the agent")
        ]
    else:
        findings = _host_findings(claim.host, measured.specs)
    findings += [_encoder_finding(claim, measured), _frames_on_finding(claim, measured), challenge]
    elapsed = challenge.measured
    metrics = {"challenge_s": elapsed} if isinstance(elapsed, float) else {}
    return Verdict(
        claim.container,
        verifier_id,
        Check.REGISTRATION,
        at,
        tuple(findings),
        MappingProxyType(metrics),
    )


def _host_findings(claimed: p.HostSpecs, measured: p.HostSpecs) -> list[Finding]:
    findings = [
        _equal(
            "cpu_model", " ".join(claimed.cpu_model.split()), " ".join(measured.cpu_model.split())
        ),
        _equal("cpu_cores", claimed.cpu_cores, measured.cpu_cores),
        _near("ram_mib", claimed.ram_mib, measured.ram_mib, RAM_TOLERANCE),
        _equal("gpu_count", len(claimed.gpus), len(measured.gpus)),
    ]
    by_index = {gpu.index: gpu for gpu in measured.gpus}
    for gpu in claimed.gpus:
        found = by_index.get(gpu.index)
        if found is None:
            continue  # gpu_count says it
        prefix = f"gpu{gpu.index}_"
        findings += [
            _equal(prefix + "model", normalise_gpu_name(gpu.name), normalise_gpu_name(found.name)),
            _near(
                prefix + "memory_mib", gpu.memory_total_mib, found.memory_total_mib, VRAM_TOLERANCE
            ),
            _equal(prefix + "uuid", gpu.uuid, found.uuid),
        ]
    return findings


def _encoder_finding(claim: p.Register, measured: HostMeasurement) -> Finding:
    passed = measured.nvenc or "nvenc" not in claim.encoders
    detail = f"the registration offers NVENC but the host's probe says: {measured.nvenc_reason}"
    shown = "nvenc" if measured.nvenc else "no nvenc"
    return Finding("encoder", passed, ",".join(claim.encoders), shown, "" if passed else detail)


def _frames_on_finding(claim: p.Register, measured: HostMeasurement) -> Finding:
    shown = "gpu" if measured.specs.gpus else "cpu"
    passed = claim.frames_on == "cpu" or shown == "gpu"
    detail = "frames are drawn on a GPU, but the host measures none"
    return Finding("frames_on", passed, claim.frames_on, shown, "" if passed else detail)


def _equal(name: str, claimed: str | int, measured: str | int) -> Finding:
    passed = claimed == measured
    detail = f"{name}: the registration claims {claimed!r}, the host measures {measured!r}"
    return Finding(name, passed, claimed, measured, "" if passed else detail)


def _near(name: str, claimed: int | None, measured: int | None, tolerance: float) -> Finding:
    """Within `tolerance` of the claim; a value neither side could read passes as unknown."""
    if claimed is None or measured is None:
        passed = claimed is None and measured is None
        readings = ["nothing" if value is None else value for value in (claimed, measured)]
        detail = f"{name}: the registration claims {readings[0]}, the host measures {readings[1]}"
    else:
        passed = abs(measured - claimed) <= tolerance * claimed
        detail = (
            f"{name}: the registration claims {claimed}, the host measures {measured} "
            f"(more than {tolerance:.0%} apart)"
        )
    return Finding(name, passed, claimed, measured, "" if passed else detail)
