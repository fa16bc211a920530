"""The reaction rule (verifier/reaction.py) against simulated containers, honest and not.

A simulated container is the reference game driven as streamer/track.py drives it: before
each frame it applies the inputs that arrived, advances, draws in I420 and marks the frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from contracts.input_events import InputEvent
from contracts.marker import FrameMarker
from reference_game.game import ReferenceGame
from verifier.reaction import (
    REACTION_FRAMES,
    Reaction,
    ReactionSampler,
    SampledFrame,
    judge_reactions,
)
from verifier.trace import DEFAULT_TRACE

WIDTH, HEIGHT, FPS = 640, 360, 60
EVENTS: dict[int, InputEvent] = {
    seq: event.numbered(seq) for seq, event in enumerate(DEFAULT_TRACE.events, start=1)
}
ARRIVES = {seq: event.at_ms for seq, event in enumerate(DEFAULT_TRACE.events, start=1)}
SPACE_UP, SPACE_DOWN = 6, 5  # Space released changes nothing: the flash runs its 12 frames


def stream(
    applies: Callable[[int], bool] = lambda seq: True,
    lost: Callable[[int], bool] = lambda frame: False,
    damage: Callable[[np.ndarray], np.ndarray] = lambda picture: picture,
) -> tuple[list[FrameMarker], list[SampledFrame]]:
    """What a receiver gets from a simulated container: every marker, the frames it keeps.

    `applies(seq)`: whether the game really applies input seq (the marker says so anyway);
    `lost(frame)`: frames the receiver never gets; `damage`: what coding does to a picture.
    """
    game = ReferenceGame(WIDTH, HEIGHT, seed=0)
    sampler = ReactionSampler()
    markers: list[FrameMarker] = []
    samples: list[SampledFrame] = []
    shown = 0
    for frame in range(int(DEFAULT_TRACE.duration_ms * FPS / 1000)):
        for seq in sorted(s for s, at in ARRIVES.items() if s > shown and at <= frame * 1000 / FPS):
            if applies(seq):
                game.apply(EVENTS[seq])
            shown = seq
        game.advance()
        picture = game.render_i420()
        marker = FrameMarker(frame, 0, shown)
        if lost(frame):
            continue
        markers.append(marker)
        if sampler.wants(marker):
            samples.append(SampledFrame(marker, damage(picture.copy())))
    return markers, samples


def judged(markers: list[FrameMarker], samples: list[SampledFrame]) -> tuple[Reaction, ...]:
    return judge_reactions(markers, samples, EVENTS, width=WIDTH, height=HEIGHT)


def outcomes(reactions: tuple[Reaction, ...]) -> dict[int, tuple[bool, bool]]:
    return {r.seq: (r.checked, r.seen) for r in reactions}


ALL_SEEN = {seq: (seq != SPACE_UP, seq != SPACE_UP) for seq in EVENTS}


def test_the_sampler_keeps_the_first_frame_reaction_frames_after_each_new_input() -> None:
    sampler = ReactionSampler()
    inputs = [0, 0, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 4, 4]
    frames = [0, 1, 2, 3, 4, 6, 7, 8, 9, 12, 13, 14, 15, 18]  # some lost on the way
    kept = [f for f, i in zip(frames, inputs, strict=True) if sampler.wants(FrameMarker(f, 0, i))]
    # input 1 first shows at 2: keep 5 (lost) -> 6; input 3 at 8 -> 11 (lost) -> 12; 4 at 15 -> 18
    assert REACTION_FRAMES == 3 and kept == [6, 12, 18]


def test_an_honest_container_shows_every_reaction() -> None:
    reactions = judged(*stream())
    assert outcomes(reactions) == ALL_SEEN
    space_up = reactions[SPACE_UP - 1]
    assert space_up.detail == "input 6 changes nothing visible"
    # The replay draws in RGB and converts: a rounding step from the game's own I420.
    assert all(r.error_so_far < 1 and r.error_counterfactual > 10 for r in reactions if r.checked)


def test_lost_frames_and_coding_noise_still_show_every_reaction() -> None:
    rng = np.random.default_rng(7)

    def noisy(picture: np.ndarray) -> np.ndarray:
        noise = rng.integers(-6, 7, size=picture.shape)
        return np.clip(picture.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    reactions = judged(*stream(lost=lambda frame: frame % 5 == 2, damage=noisy))
    assert outcomes(reactions) == ALL_SEEN


def test_a_container_that_only_advances_the_input_sequence_shows_no_reaction() -> None:
    reactions = judged(*stream(applies=lambda seq: False))
    assert outcomes(reactions) == {seq: (checked, False) for seq, (checked, _) in ALL_SEEN.items()}
    first = reactions[0]
    assert (first.error_expected, first.error_counterfactual) == (first.error_so_far, 0.0)
    assert first.detail == (
        f"frame 33 does not show input 1: error {first.error_expected:.1f} against the expected "
        f"picture, 0.0 against the picture without it, {first.error_so_far:.1f} over "
        "everything the inputs changed (at most 24)"
    )


def test_one_dropped_input_is_the_one_reaction_missing() -> None:
    reactions = judged(*stream(applies=lambda seq: seq != SPACE_DOWN))
    assert outcomes(reactions) == {**ALL_SEEN, SPACE_DOWN: (True, False)}


def test_an_input_no_frame_shows_applied_is_not_seen() -> None:
    markers, samples = stream()
    reactions = judge_reactions(
        markers, samples, {**EVENTS, 21: EVENTS[1]}, width=WIDTH, height=HEIGHT
    )
    assert reactions[-1] == Reaction(21, True, False, detail="no frame showed input 21")


def test_a_picture_of_another_size_is_not_a_reaction() -> None:
    markers, samples = stream()
    small = [SampledFrame(s.marker, np.zeros((270, 320), dtype=np.uint8)) for s in samples]
    first = judged(markers, small)[0]
    assert (first.seq, first.checked, first.seen) == (1, True, False)
    assert first.detail == "frame 33 is 320x180, the session asked for 640x360"
