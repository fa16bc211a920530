"""What a container tells the indexer about its builds, and what the indexer does with it, pure:
each exit and fault becomes its one report, reports wait bounded until the agent is
registered, a limit is named only on its cgroup's evidence, the indexer keeps the latest
reports with a count of each kind, and only a touched disk asks for re-inspection."""

from __future__ import annotations

import signal

import pytest

from contracts import protocol as p
from indexer.build_events import RECENT_BUILD_EVENTS, BuildEventRecord, BuildEvents
from indexer.lifecycle import Admission, Event
from judge.scores import BUILD_FAULT_EVENTS, build_fault_event
from streamer.deploy import BuildFault
from streamer.fault_reports import ReportOutbox, fault_report, game_report
from streamer.game_process import GameExit
from streamer.sandbox import counter, limit_of

SHA = "ab" * 32


def test_a_crash_is_reported_with_its_exit_and_last_stderr_line_cut_to_the_protocol() -> None:
    how = GameExit(1, ("Traceback", "RuntimeError: " + "x" * 300), requested=False)
    report = game_report("i1.s1", "arcade", "1.0", SHA, how)
    assert report is not None
    assert (report.kind, report.build, report.version, report.sha256, report.session) == (
        "crashed", "arcade", "1.0", SHA, "i1.s1",
    )  # fmt: skip
    assert report.detail.startswith("the game crashed: it exited with code 1: RuntimeError: xxx")
    assert len(report.detail) == p.MAX_TEXT and report.detail.endswith("...")
    assert p.parse_message(report.to_json(), "container") == report


def test_a_limit_kill_names_its_limit_and_a_clean_quit_is_no_report() -> None:
    killed = GameExit(-signal.SIGKILL, (), requested=False, limit="memory")
    report = game_report("s2", "arcade", "1.0", SHA, killed)
    assert report is not None and (report.kind, report.limit) == ("limit_killed", "memory")
    assert report.detail == "the game crashed: it was killed by SIGKILL at its memory limit"
    assert game_report("s3", "arcade", "1.0", SHA, GameExit(0, (), requested=False)) is None


def test_an_altered_build_is_a_hash_refusal_and_a_folder_no_blob_proves_is_planted() -> None:
    altered = BuildFault(SHA, "'game.py' was changed", True, "arcade", "1.0")
    assert fault_report(altered, "s1") == p.BuildEvent(
        "hash_refused", "arcade", "1.0", SHA, "s1",
        detail="altered on disk (unpacked again): 'game.py' was changed",
    )  # fmt: skip
    gone = BuildFault(SHA, "x" * 500, False, "arcade", "1.0")
    assert fault_report(gone).detail.startswith("altered on disk (cannot be deployed again): x")
    assert len(fault_report(gone).detail) == p.MAX_TEXT
    planted = BuildFault("cd" * 32, "not announced: no blob proves it", False, planted=True)
    assert fault_report(planted) == p.BuildEvent(
        "planted", sha256="cd" * 32, detail="a folder no blob proves: not announced: no blob "
        "proves it",
    )  # fmt: skip


def test_the_outbox_keeps_the_latest_reports_in_order_and_counts_the_dropped() -> None:
    outbox = ReportOutbox(limit=3)
    reports = [p.BuildEvent("crashed", "arcade", session=f"s{i}") for i in range(5)]
    for report in reports:
        outbox.add(report)
    outbox.add(None)  # a clean quit: nothing
    assert (len(outbox), outbox.dropped) == (3, 2)
    assert [outbox.take() for _ in range(4)] == [*reports[2:], None]
    with pytest.raises(ValueError, match="at least one report"):
        ReportOutbox(limit=0)


@pytest.mark.parametrize(
    ("signal_number", "reached", "limit"),
    [
        (signal.SIGKILL, {"memory"}, "memory"),
        (signal.SIGKILL, set(), ""),  # RLIMIT_CPU (soft = hard) or another killer: not told
        (None, {"pids"}, "processes"),  # fork refused, then the game died of it
        (signal.SIGSEGV, {"pids", "memory"}, "processes"),
        (signal.SIGXCPU, set(), "cpu_time"),
        (None, {"memory"}, ""),  # an exit code, though the memory cgroup killed something
        (signal.SIGSEGV, set(), ""),
    ],
)
def test_a_limit_is_named_only_on_its_evidence(
    signal_number: int | None, reached: set[str], limit: str
) -> None:
    assert limit_of(signal_number, reached) == limit
    assert limit == "" or limit in p.SANDBOX_LIMITS


def test_cgroup_counters_are_read_by_name() -> None:
    oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    assert counter(oom_control, "oom_kill") == 2
    assert counter("max 0\n", "max") == 0
    assert counter("max junk\n", "max") == 0
    assert counter("", "oom_kill") == 0


def record(i: int, kind: str = "crashed") -> BuildEventRecord:
    return BuildEventRecord(float(i), kind, "arcade", "1.0", session=f"s{i}")


def test_the_indexer_keeps_the_latest_reports_and_counts_every_one() -> None:
    events = BuildEvents()
    for i in range(RECENT_BUILD_EVENTS + 3):
        events = events.add(record(i))
    events = events.add(record(99, "planted"))
    assert len(events.recent) == RECENT_BUILD_EVENTS
    assert events.recent[-1].session == "s99"
    shown = events.to_dict()
    assert shown["recent"][0] == record(99, "planted").to_dict()  # newest first
    assert shown["counts"] == {
        "crashed": RECENT_BUILD_EVENTS + 3, "limit_killed": 0, "hash_refused": 0, "planted": 1,
    }  # fmt: skip
    assert BuildEventRecord.from_dict(record(3).to_dict()) == record(3)
    assert events.add(record(100), count=7).counts["crashed"] == 7  # a store's own count
    with pytest.raises(ValueError, match="no build event kind 'exploded'"):
        events.add(record(1, "exploded"))


def test_only_a_touched_disk_sends_a_ready_container_to_reinspection() -> None:
    assert set(BUILD_FAULT_EVENTS) == set(p.BUILD_EVENT_KINDS)
    assert build_fault_event("hash_refused", Admission.READY) is Event.REINSPECTION_DUE
    assert build_fault_event("planted", Admission.READY) is Event.REINSPECTION_DUE
    assert build_fault_event("crashed", Admission.READY) is None
    assert build_fault_event("limit_killed", Admission.READY) is None
    for admission in set(Admission) - {Admission.READY}:  # the table has no such move there
        assert build_fault_event("planted", admission) is None
