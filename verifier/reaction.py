"""Did each input produce the picture the game must show? Judged from decoded frames alone.

The reference game (reference_game/game.py) is deterministic: frame N is a function of the seed and
of which input events were applied before which frame. Every frame's marker says both (its
frame sequence, and the highest input sequence applied), so a verifier can replay the game
and know the exact picture the container should have sent.

The rule, for input N:
1. Its apply frame A is the first received frame whose marker shows input N applied. None:
   the input was never applied (not seen).
2. Its check frame C is the first kept frame at least REACTION_FRAMES after A: late enough
   for a move to have covered some pixels, early enough for a flash to still show.
3. The replay draws C three ways from the same seed and schedule: as expected; without input
   N (the counterfactual); and with no input at all (idle). Pictures are compared as I420
   (BT.601), Y, U and V samples alike, since a mouse button changes the crosshair's colour
   more than its brightness; the marker strip is left out. Input N's effect is the samples
   where expected and counterfactual differ by at least REGION_MIN_DIFF. Fewer than
   MIN_REGION_SAMPLES: N changes nothing visible at C (a key released that moves nothing),
   so it is not checked.
4. Over N's effect the decoded frame must be closer to the expected picture than to the
   counterfactual. And over everything the inputs so far changed (N's effect, plus where
   expected and idle differ) its mean absolute error against the expected picture must be
   at most MAX_MEAN_ERROR (compression blurs edges; a GPU container draws in BT.709): a
   container that advances the marker's input sequence without applying input fails here.

Frames the receiver lost leave the schedule uncertain: input N may have been applied before
any frame from the one after the last received frame without it up to A. A frame early or
late moves a held square by 6 pixels, for the rest of the replay; so where there is a
choice, the replay places N at the frame whose picture at C matches the decoded one best.

Pure: frames, markers and events come in; nothing here reads a clock or a socket.
"""

from __future__ import annotations

import bisect
import copy
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contracts.input_events import InputEvent
from contracts.marker import FrameMarker, strip_height
from contracts.planes import I420Frame, i420_planes
from reference_game.colour import rgb_to_i420
from reference_game.game import ReferenceGame, RGBFrame

REACTION_FRAMES = 3  # 50 ms at 60 fps: a held key has moved the player 24 px, a flash shows
REGION_MIN_DIFF = 12  # sample levels between expected and counterfactual (Y spans 219)
MIN_REGION_SAMPLES = 32
MAX_MEAN_ERROR = 24.0  # sample levels, over everything the inputs changed


@dataclass(frozen=True, slots=True)
class SampledFrame:
    """A decoded frame kept for judging: its marker and its picture, one I420 buffer
    ((H * 3/2) x W: Y, then U, then V, as reference_game.colour lays it out)."""

    marker: FrameMarker
    picture: I420Frame


@dataclass(frozen=True, slots=True)
class Reaction:
    """The outcome for one input. `checked` is False when the input changes nothing visible
    (then `seen` means nothing). Errors are mean absolute sample differences of the decoded
    frame: against the expected and counterfactual pictures over N's effect, and against the
    expected picture over everything the inputs changed."""

    seq: int
    checked: bool
    seen: bool
    error_expected: float = float("nan")
    error_counterfactual: float = float("nan")
    error_so_far: float = float("nan")
    detail: str = ""


class ReactionSampler:
    """Which decoded frames a receiver keeps for judging: for every new input sequence in the
    markers, the first frame at least REACTION_FRAMES later. A receiver asks per frame in
    arrival order and keeps a copy of the picture when the answer is yes."""

    def __init__(self) -> None:
        self._last_input = 0
        self._due: deque[int] = deque()  # frame sequences at which to keep the next frame

    def wants(self, marker: FrameMarker) -> bool:
        if marker.input_sequence > self._last_input:
            self._last_input = marker.input_sequence
            self._due.append(marker.frame_sequence + REACTION_FRAMES)
        wanted = False
        while self._due and marker.frame_sequence >= self._due[0]:
            self._due.popleft()
            wanted = True
        return wanted


@dataclass
class _Check:
    """One input awaiting its check frame, with the game replayed without that input."""

    seq: int
    sample: SampledFrame
    without: ReferenceGame


@dataclass(frozen=True, slots=True)
class _Applied:
    """An input some frame showed applied: the frames it may have been applied before (more
    than one where frames were lost just before it showed) and the frame to check it on."""

    seq: int
    window: range
    sample: SampledFrame | None  # None: no frame was kept late enough


class _Schedule:
    """Which input sequence each frame had applied, from the markers of the frames received."""

    def __init__(self, markers: Sequence[FrameMarker]) -> None:
        seen: dict[int, int] = {}
        for marker in markers:
            seen.setdefault(marker.frame_sequence, marker.input_sequence)
        self._frames = sorted(seen)
        self._applied = [seen[frame] for frame in self._frames]

    def window(self, seq: int) -> range | None:
        """The frames input `seq` may have been applied before: after the last received frame
        without it, up to the first received frame with it; None if no frame showed it."""
        index = next((i for i, applied in enumerate(self._applied) if applied >= seq), None)
        if index is None:
            return None
        start = self._frames[index - 1] + 1 if index else 0
        return range(start, self._frames[index] + 1)


def judge_reactions(
    markers: Sequence[FrameMarker],
    samples: Sequence[SampledFrame],
    events: Mapping[int, InputEvent],
    *,
    width: int,
    height: int,
    seed: int = 0,
) -> tuple[Reaction, ...]:
    """A Reaction for each event sent (by seq), following the rule in the module docstring.

    `markers`: every readable frame's marker in arrival order; `samples`: the frames a
    ReactionSampler kept; `events`: what the player sent, by seq; `width`, `height`, `seed`:
    the stream's shape and the game's seed.
    """
    schedule = _Schedule(markers)
    ordered = sorted(samples, key=lambda s: s.marker.frame_sequence)
    sample_frames = [s.marker.frame_sequence for s in ordered]
    outcomes: dict[int, Reaction] = {}
    applied: list[_Applied] = []
    for seq in sorted(events):
        window = schedule.window(seq)
        if window is None:
            outcomes[seq] = Reaction(seq, True, False, detail=f"no frame showed input {seq}")
            continue
        index = bisect.bisect_left(sample_frames, window[-1] + REACTION_FRAMES)
        sample = ordered[index] if index < len(ordered) else None
        if sample is None:
            outcomes[seq] = Reaction(seq, False, False, detail="no frame kept after the input")
        applied.append(_Applied(seq, window, sample))
    if any(item.sample is not None for item in applied):
        replay = _Replay(applied, events, ReferenceGame(width, height, seed))
        outcomes.update(replay.run())
    return tuple(outcomes[seq] for seq in sorted(outcomes))


class _Replay:
    """The game replayed once beside an idle copy, forking one without input N at N's apply
    frame; each fork is compared and dropped at its check frame.

    Where frames were lost just before input N showed, N is placed at the frame of its
    window whose replay at the check frame matches the decoded frame best (ties: the latest).

    The main game never draws: a ReferenceGame that has drawn holds its drawing buffers (and
    the array module), which `copy.deepcopy` cannot copy faithfully, so only a game that
    never drew is forked, and pictures are drawn by copies.
    """

    def __init__(
        self, applied: list[_Applied], events: Mapping[int, InputEvent], game: ReferenceGame
    ) -> None:
        self._applied = applied
        self._events = events
        self._game = game
        self._frame = {item.seq: item.window[-1] for item in applied}  # seq -> applied before
        self._at: dict[int, set[int]] = {}  # frame -> the seqs applied before it
        for seq, frame in self._frame.items():
            self._at.setdefault(frame, set()).add(seq)

    def run(self) -> dict[int, Reaction]:
        game, idle = self._game, copy.deepcopy(self._game)
        checked = [item for item in self._applied if item.sample is not None]
        last_frame = max(item.sample.marker.frame_sequence for item in checked if item.sample)
        checks: list[_Check] = []
        outcomes: dict[int, Reaction] = {}
        for frame in range(last_frame + 1):
            for item in checked:
                if item.window.start == frame and len(item.window) > 1:
                    self._place(item, game)
            for item in checked:
                if item.sample is not None and frame == self._frame[item.seq]:
                    checks.append(_Check(item.seq, item.sample, copy.deepcopy(game)))
            for seq in sorted(self._at.get(frame, ())):
                game.apply(self._events[seq])
                for check in checks:
                    if check.seq != seq:
                        check.without.apply(self._events[seq])
            for each in (game, idle, *(check.without for check in checks)):
                each.advance()
            due = [check for check in checks if check.sample.marker.frame_sequence == frame]
            if due:
                expected, idle_picture = copy.deepcopy(game).render(), idle.render()
                for check in due:
                    pictures = _Pictures(expected, check.without.render(), idle_picture)
                    outcomes[check.seq] = _compare(check.seq, check.sample, pictures)
                    checks.remove(check)
        return outcomes

    def _move(self, seq: int, frame: int) -> None:
        """Replay input `seq` before `frame` from now on."""
        self._at[self._frame[seq]].discard(seq)
        self._at.setdefault(frame, set()).add(seq)
        self._frame[seq] = frame

    def _place(self, item: _Applied, game: ReferenceGame) -> None:
        """Choose the frame of `item`'s window it was applied at: replay each candidate from
        `game` (at the window's start) to the check frame, keep the closest to the decoded."""
        assert item.sample is not None
        pictures = []
        for candidate in item.window:
            self._move(item.seq, candidate)
            trial = copy.deepcopy(game)
            for frame in range(item.window.start, item.sample.marker.frame_sequence + 1):
                for seq in sorted(self._at.get(frame, ())):
                    trial.apply(self._events[seq])
                trial.advance()
            pictures.append(trial.render())
        self._move(item.seq, item.window[_closest(item.sample, pictures)])


@dataclass(frozen=True, slots=True)
class _Pictures:
    """The replayed RGB pictures of one check frame: expected, without input N, no input."""

    expected: RGBFrame
    without: RGBFrame
    idle: RGBFrame


def _compare(seq: int, sample: SampledFrame, pictures: _Pictures) -> Reaction:
    """Steps 3 and 4 of the rule: the decoded picture against the replayed ones."""
    frame = sample.marker.frame_sequence
    height, width = pictures.expected.shape[:2]
    if sample.picture.shape != (height * 3 // 2, width):
        rows, columns = sample.picture.shape
        return Reaction(seq, True, False, detail=f"frame {frame} is {columns}x{rows * 2 // 3}, "
                        f"the session asked for {width}x{height}")  # fmt: skip
    box = _changed_box(pictures.expected, (pictures.without, pictures.idle), strip_height(width))
    if box is None:
        return Reaction(seq, False, False, detail=f"input {seq} changes nothing visible")
    expected, without, idle = (
        _planes(rgb_to_i420(rgb[box]))
        for rgb in (pictures.expected, pictures.without, pictures.idle)
    )
    decoded = _planes(sample.picture, box)
    effect = [np.abs(e - w) >= REGION_MIN_DIFF for e, w in zip(expected, without, strict=True)]
    if sum(np.count_nonzero(mask) for mask in effect) < MIN_REGION_SAMPLES:
        return Reaction(seq, False, False, detail=f"input {seq} changes nothing visible")
    changed = [
        mask | (np.abs(e - i) >= REGION_MIN_DIFF)
        for mask, e, i in zip(effect, expected, idle, strict=True)
    ]
    error = _mean_error(decoded, expected, effect)
    error_without = _mean_error(decoded, without, effect)
    so_far = _mean_error(decoded, expected, changed)
    seen = error < error_without and so_far <= MAX_MEAN_ERROR
    detail = "" if seen else (
        f"frame {frame} does not show input {seq}: error {error:.1f} against the expected "
        f"picture, {error_without:.1f} against the picture without it, {so_far:.1f} over "
        f"everything the inputs changed (at most {MAX_MEAN_ERROR:g})"
    )  # fmt: skip
    errors = round(error, 2), round(error_without, 2), round(so_far, 2)
    return Reaction(seq, True, seen, *errors, detail)


Box = tuple[slice, slice]
Planes = list[npt.NDArray[np.int16]]


def _closest(sample: SampledFrame, candidates: list[RGBFrame]) -> int:
    """The index of the candidate picture the decoded frame is closest to where they differ;
    the last of the closest."""
    width = candidates[0].shape[1]
    box = _changed_box(candidates[-1], candidates[:-1], strip_height(width))
    if box is None or sample.picture.shape != (candidates[0].shape[0] * 3 // 2, width):
        return len(candidates) - 1
    decoded = _planes(sample.picture, box)
    errors = [
        sum(int(np.abs(d - c).sum()) for d, c in zip(decoded, _planes(rgb_to_i420(p[box])),
                                                      strict=True))
        for p in candidates
    ]  # fmt: skip
    return max(range(len(errors)), key=lambda index: (-errors[index], index))


def _changed_box(picture: RGBFrame, others: Sequence[RGBFrame], strip: int) -> Box | None:
    """The smallest box, on even rows and columns and below the marker strip, holding every
    pixel where `picture` differs from any of `others`; None if none does."""
    changed = np.zeros(picture.shape[:2], dtype=bool)
    for other in others:
        differs = picture != other
        changed |= differs[:, :, 0] | differs[:, :, 1] | differs[:, :, 2]  # any(axis=2), 10x faster
    top = strip + strip % 2
    changed[:top] = False
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not rows.size:
        return None
    y0, x0 = rows[0] - rows[0] % 2, columns[0] - columns[0] % 2
    y1, x1 = rows[-1] + 1 + (rows[-1] + 1) % 2, columns[-1] + 1 + (columns[-1] + 1) % 2
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


def _planes(picture: I420Frame, box: Box | None = None) -> Planes:
    """Y, U, V of an I420 buffer as signed samples, cropped to `box` (full-size coordinates)."""
    planes = i420_planes(picture)
    if box is None:
        return [plane.astype(np.int16) for plane in planes]
    rows, columns = box
    half = (slice(rows.start // 2, rows.stop // 2), slice(columns.start // 2, columns.stop // 2))
    crops = (box, half, half)
    return [plane[crop].astype(np.int16) for plane, crop in zip(planes, crops, strict=True)]


def _mean_error(decoded: Planes, reference: Planes, masks: list[npt.NDArray[np.bool_]]) -> float:
    planes = zip(decoded, reference, masks, strict=True)
    total = sum(int(np.abs(d - r)[mask].sum()) for d, r, mask in planes)
    return total / max(1, sum(int(np.count_nonzero(mask)) for mask in masks))
