"""Session transitions: every pair of states is either in TRANSITIONS or raises."""

from __future__ import annotations

import itertools

import pytest

from indexer.selection import Request
from signaling.session import TRANSITIONS, IllegalTransitionError, Session, SessionStatus

S = SessionStatus
PAIRS = list(itertools.product(SessionStatus, repeat=2))
LEGAL = {
    (S.REQUESTED, S.MATCHED),
    (S.REQUESTED, S.ENDED),
    (S.MATCHED, S.CONNECTING),
    (S.MATCHED, S.ENDED),
    (S.CONNECTING, S.PLAYING),
    (S.CONNECTING, S.ENDED),
    (S.PLAYING, S.ENDED),
}


def session_in(status: SessionStatus) -> Session:
    return Session("s1", "p1", Request("tetris", 1280, 720, 60), status=status)


def test_table_is_the_documented_lifecycle() -> None:
    assert set(TRANSITIONS) == set(SessionStatus)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL, key=str), ids=str)
def test_legal_move(source: SessionStatus, target: SessionStatus) -> None:
    session = session_in(source)
    session.move(target)
    assert session.status is target


@pytest.mark.parametrize(
    ("source", "target"), [pair for pair in PAIRS if pair not in LEGAL], ids=str
)
def test_illegal_move_raises_and_keeps_state(source: SessionStatus, target: SessionStatus) -> None:
    session = session_in(source)
    message = f"session s1 cannot go from {source.value} to {target.value}"
    with pytest.raises(IllegalTransitionError, match=message):
        session.move(target)
    assert session.status is source


def test_new_session_starts_requested() -> None:
    session = Session("s1", "p1", Request("tetris", 1280, 720, 60))
    assert (session.status, session.container_id) == (S.REQUESTED, None)
