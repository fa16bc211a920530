"""The registration check: claimed specs against measured ones, the challenge, the lifecycle."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from contracts import protocol as p
from contracts.challenge import (
    Answer,
    check,
    device_class,
    make_challenge,
    normalise_gpu_name,
    pick_rows,
    solve,
)
from contracts.verdict import Check, Finding, Verdict
from indexer.lifecycle import Admission, ContainerLifecycle, Event, LivenessConfig
from judge.scores import penalty_event
from verifier.inspection import (
    HostMeasurement,
    InspectionError,
    inspect_registration,
)

SEED = hashlib.sha256(b"inspection seed").digest()
ENTROPY = b"picked after the commitment came"
L4 = p.GpuSpec(0, "NVIDIA L4", "GPU-3f1c6a2e-0000-4000-8000-000000000000", 23_034)
H100 = p.GpuSpec(0, "NVIDIA H100 PCIe", "GPU-5e1d0000-0000-4000-8000-000000000000", 81_559)
CPU_HOST = p.HostSpecs("AMD EPYC 7B13", 2, 7_951, [])
L4_HOST = p.HostSpecs("Intel(R) Xeon(R) CPU @ 2.20GHz", 8, 31_360, [L4])
NO_NVENC = "Cannot load libcuda.so.1"
PASSED_CHALLENGE = Finding("challenge", True, 4.456, 0.8, "answered in 0.80 s")
CONFIG = LivenessConfig(heartbeat_period=1.0, missed_heartbeats=3)


def registration_event(verdict: Verdict, admission: Admission) -> tuple[Event | None, str]:
    """What a committee's registration verdict does to a container: the judge's penalty rule."""
    return penalty_event(
        admission, Check.REGISTRATION, shortfall=not verdict.passed
    ), verdict.reason


def register(host: p.HostSpecs | None, encoder: str = "x264", frames_on: str = "cpu") -> p.Register:
    return p.Register(
        "c1", ["reference"], [encoder], 1920, 1080, 60, host=host, frames_on=frames_on
    )


def names(verdict: Verdict) -> list[str]:
    return [finding.name for finding in verdict.findings]


def honest_cpu_challenge() -> Finding:
    """A 2-core CPU container solving its challenge with numpy, answering in 0.6 s."""
    challenge = make_challenge(SEED, device_class(CPU_HOST))
    answer = solve(challenge, np)
    asked = pick_rows(challenge, ENTROPY)
    return check(challenge, answer.root, 0.6, asked, answer.reveal(asked))


def test_a_healthy_cpu_container_passes_and_is_admitted() -> None:
    measured = HostMeasurement(CPU_HOST, nvenc=False, nvenc_reason=NO_NVENC)
    verdict = inspect_registration(
        register(CPU_HOST), measured, honest_cpu_challenge(), "v1", 100.0
    )
    assert verdict.passed, verdict.reason
    assert (verdict.container_id, verdict.verifier_id, verdict.check) == (
        "c1",
        "v1",
        Check.REGISTRATION,
    )
    assert names(verdict) == [
        "cpu_model",
        "cpu_cores",
        "ram_mib",
        "gpu_count",
        "encoder",
        "frames_on",
        "challenge",
    ]
    assert dict(verdict.metrics) == {"challenge_s": 0.6}
    container = ContainerLifecycle("c1", CONFIG, now=0.0)
    container.apply(Event.SPECS_RECEIVED, 1.0)
    event, reason = registration_event(verdict, container.admission)
    assert (event, reason) == (Event.INSPECTION_PASSED, "")
    container.apply(event, 2.0)
    assert container.admission is Admission.READY


def test_a_healthy_gpu_container_gets_a_finding_per_gpu_field() -> None:
    measured = HostMeasurement(
        dataclasses.replace(L4_HOST, ram_mib=31_000, gpus=[dataclasses.replace(L4, name="L4")]),
        nvenc=True,
        nvenc_reason="h264_nvenc opened and encoded a test frame",
    )
    claim = register(L4_HOST, encoder="nvenc", frames_on="gpu")
    verdict = inspect_registration(claim, measured, PASSED_CHALLENGE, "v1", 100.0)
    assert verdict.passed, verdict.reason
    by_name = {finding.name: finding for finding in verdict.findings}
    assert by_name["gpu0_model"] == Finding("gpu0_model", True, "L4", "L4")
    assert by_name["gpu0_memory_mib"] == Finding("gpu0_memory_mib", True, 23_034, 23_034)
    assert by_name["ram_mib"] == Finding("ram_mib", True, 31_360, 31_000)  # 1.1 %: within 3 %
    assert by_name["encoder"] == Finding("encoder", True, "nvenc", "nvenc")
    assert names(verdict)[4:7] == ["gpu0_model", "gpu0_memory_mib", "gpu0_uuid"]


def test_a_claimed_gpu_the_host_does_not_have_fails_every_field_that_needs_it() -> None:
    measured = HostMeasurement(dataclasses.replace(L4_HOST, gpus=[]), False, NO_NVENC)
    claim = register(L4_HOST, encoder="nvenc", frames_on="gpu")
    verdict = inspect_registration(claim, measured, PASSED_CHALLENGE, "v1", 100.0)
    assert [finding.name for finding in verdict.failures] == ["gpu_count", "encoder", "frames_on"]
    assert verdict.reason == (
        "gpu_count: the registration claims 1, the host measures 0; "
        "the registration offers NVENC but the host's probe says: Cannot load libcuda.so.1; "
        "frames are drawn on a GPU, but the host measures none"
    )


def test_tolerances_and_exact_fields() -> None:
    swapped = dataclasses.replace(L4, name="NVIDIA A10G", uuid="GPU-other", memory_total_mib=21_000)
    measured = HostMeasurement(
        p.HostSpecs("Intel(R)  Xeon(R) CPU @ 2.20GHz", 4, 30_000, [swapped]), True, "ok"
    )
    verdict = inspect_registration(register(L4_HOST), measured, PASSED_CHALLENGE, "v1", 100.0)
    assert [(finding.name, finding.detail) for finding in verdict.failures] == [
        ("cpu_cores", "cpu_cores: the registration claims 8, the host measures 4"),
        (
            "ram_mib",
            "ram_mib: the registration claims 31360, the host measures 30000 (more than 3% apart)",
        ),
        ("gpu0_model", "gpu0_model: the registration claims 'L4', the host measures 'A10G'"),
        (
            "gpu0_memory_mib",
            "gpu0_memory_mib: the registration claims 23034, the host measures 21000 "
            "(more than 7% apart)",
        ),
        (
            "gpu0_uuid",
            "gpu0_uuid: the registration claims 'GPU-3f1c6a2e-0000-4000-8000-000000000000', "
            "the host measures 'GPU-other'",
        ),
    ]  # the CPU model differs only in spacing: it passes


def test_gpu_memory_nobody_can_read_passes_but_one_side_missing_fails() -> None:
    unread = dataclasses.replace(L4, memory_total_mib=None)
    both = HostMeasurement(dataclasses.replace(L4_HOST, gpus=[unread]), True, "ok")
    claim = register(dataclasses.replace(L4_HOST, gpus=[unread]))
    assert inspect_registration(claim, both, PASSED_CHALLENGE, "v1", 1.0).passed
    measured = HostMeasurement(dataclasses.replace(L4_HOST, gpus=[unread]), True, "ok")
    verdict = inspect_registration(register(L4_HOST), measured, PASSED_CHALLENGE, "v1", 1.0)
    assert (
        verdict.reason
        == "gpu0_memory_mib: the registration claims 23034, the host measures nothing"
    )


def test_a_registration_without_host_specs_fails() -> None:
    measured = HostMeasurement(CPU_HOST, False, NO_NVENC)
    verdict = inspect_registration(register(None), measured, PASSED_CHALLENGE, "v1", 1.0)
    assert verdict.reason == "the registration has no host specs: update the agent"


def test_a_container_that_lies_about_its_gpu_is_demoted_within_one_inspection_cycle() -> None:
    """It claims an H100 at registration and at inspection alike, but it is a 2-core CPU: to
    answer within the bound it commits to a result it never computed, and a row gives it away."""
    lie = dataclasses.replace(CPU_HOST, gpus=[H100])
    challenge = make_challenge(SEED, device_class(lie))
    assert (challenge.device, challenge.time_bound_s) == ("H100 GPU", 5.739)
    unworked = Answer.of(np.zeros((challenge.size, challenge.size // 2), dtype=np.uint8))
    asked = pick_rows(challenge, ENTROPY)
    finding = check(challenge, unworked.root, 3.0, asked, unworked.reveal(asked))
    verdict = inspect_registration(
        register(lie), HostMeasurement(lie, False, NO_NVENC), finding, "v1", 100.0
    )
    assert [finding.name for finding in verdict.failures] == ["challenge"]
    assert verdict.reason == (
        "row 531 differs from the product in 7656 of 8192 values: the container did "
        "not compute what was asked"
    )
    container = ContainerLifecycle("c1", CONFIG, now=0.0)
    for event in (Event.SPECS_RECEIVED, Event.INSPECTION_PASSED, Event.REINSPECTION_DUE):
        container.apply(event, 1.0)  # admitted once; its periodic re-inspection is due
    event, reason = registration_event(verdict, container.admission)
    assert (event, reason) == (Event.INSPECTION_FAILED, verdict.reason)
    container.apply(event, 2.0)
    assert container.admission is Admission.CONFIGURING
    assert not container.is_candidate(2.0, share=1.0)


def test_a_ready_container_failing_registration_is_inspected_again() -> None:
    failing = inspect_registration(
        register(CPU_HOST),
        HostMeasurement(CPU_HOST, False, NO_NVENC),
        dataclasses.replace(PASSED_CHALLENGE, passed=False, detail="late"),
        "v1",
        1.0,
    )
    assert registration_event(failing, Admission.READY) == (Event.REINSPECTION_DUE, "late")
    assert registration_event(failing, Admission.SUSPENDED) == (None, "late")


def test_inspection_refuses_other_checks_and_other_findings() -> None:
    with pytest.raises(
        InspectionError, match=r"^the challenge finding is named 'challenge', not 'fps'$"
    ):
        inspect_registration(
            register(CPU_HOST),
            HostMeasurement(CPU_HOST, False, NO_NVENC),
            Finding("fps", True),
            "v1",
            1.0,
        )


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("NVIDIA H100 PCIe", "H100 PCIE"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("Quadro RTX 6000", "RTX 6000"),
        ("  nvidia   l4 ", "L4"),
    ],
)
def test_gpu_names_are_normalised(name: str, normalised: str) -> None:
    assert normalise_gpu_name(name) == normalised


@pytest.mark.parametrize(
    ("gpus", "cores", "device", "flops"),
    [
        (["NVIDIA H100 80GB HBM3"], 2, "H100 GPU", 25.6e12),
        (["NVIDIA A100-SXM4-40GB"], 2, "A100 GPU", 9.75e12),
        (["NVIDIA L40S"], 2, "L40S GPU", 45.8e12),
        (["NVIDIA L40"], 2, "L40 GPU", 45.25e12),
        (["NVIDIA L4"], 2, "L4 GPU", 15.15e12),
        (["NVIDIA A10G"], 2, "A10G GPU", 15.6e12),
        (["NVIDIA RTX 6000 Ada Generation"], 2, "RTX 6000 ADA GPU", 45.55e12),
        (["Tesla T4", "NVIDIA L4"], 2, "L4 GPU", 15.15e12),  # the fastest one
        (["NVIDIA B9000"], 2, "unlisted GPU 'B9000'", 2e12),
        ([], 8, "8-core CPU", 64e9),
        (["NVIDIA B9000"], 512, "512-core CPU", 4.096e12),  # more than the GPU's low bar
    ],
)
def test_device_classes(gpus: list[str], cores: int, device: str, flops: float) -> None:
    host = p.HostSpecs(
        "cpu", cores, 1024, [p.GpuSpec(i, n, f"GPU-{i}", 1) for i, n in enumerate(gpus)]
    )
    rated = device_class(host)
    assert rated.name == device
    assert rated.flops == pytest.approx(flops)


def test_an_agent_without_specs_is_rated_as_one_core() -> None:
    assert device_class(None).name == "1-core CPU"
