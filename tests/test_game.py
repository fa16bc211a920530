"""ReferenceGame: deterministic pictures, and every control visibly reaching the render."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from contracts.input_events import GamepadState, InputEvent, KeyEvent, PointerButton, PointerMove
from reference_game.game import ReferenceGame, RGBFrame

WIDTH, HEIGHT = 640, 360
Colour = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
YELLOW: Colour = (250, 200, 30)  # the player's border
WHITE: Colour = (255, 255, 255)  # the flashing player, and the crosshair
START: Box = (288, 148, 352, 212)  # the player, centred in 640x360
LAMP_ON: Colour = (40, 230, 90)
LAMP_OFF: Colour = (50, 50, 60)
HALF_CURSOR = 12


def box(frame: RGBFrame, colour: Colour) -> Box | None:
    """Bounding box of the pixels of exactly `colour`, or None when there are none."""
    ys, xs = np.nonzero((frame == colour).all(axis=2))
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def played(
    events: Iterable[tuple[int, InputEvent]] = (),
    frames: int = 0,
    *,
    seed: int = 0,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> ReferenceGame:
    """A game after `frames` frames, each (frame, event) applied before that frame advances."""
    game = ReferenceGame(*size, seed=seed)
    schedule = list(events)
    for frame in range(frames + 1):
        for event in (event for at, event in schedule if at == frame):
            game.apply(event)
        if frame < frames:
            game.advance()
    return game


def shifted(dx: int, dy: int) -> Box:
    return START[0] + dx, START[1] + dy, START[2] + dx, START[3] + dy


def held(*codes: str) -> list[tuple[int, InputEvent]]:
    return [(0, KeyEvent(n + 1, code, True)) for n, code in enumerate(codes)]


def crosshair_at(frame: RGBFrame, cx: int, cy: int) -> bool:
    height, width = frame.shape[:2]
    row = frame[cy, max(0, cx - HALF_CURSOR) : min(width, cx + HALF_CURSOR)]
    column = frame[max(0, cy - HALF_CURSOR) : min(height, cy + HALF_CURSOR), cx]
    return bool((row == 255).all() and (column == 255).all())


def cursor_pixel(game: ReferenceGame) -> tuple[int, int]:
    """Where a cursor fraction lands: 0 is the first pixel, 1 the last."""
    x, y = game.controls.cursor
    return int(x * (game.width - 1)), int(y * (game.height - 1))


def near_cursor(cursors: Sequence[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for cx, cy in cursors:
        rows = slice(max(0, cy - HALF_CURSOR), cy + HALF_CURSOR)
        mask[rows, max(0, cx - HALF_CURSOR) : cx + HALF_CURSOR] = True
    return mask


def test_same_seed_and_inputs_give_the_same_pictures() -> None:
    schedule: list[tuple[int, InputEvent]] = [
        (3, KeyEvent(1, "KeyD", True)),
        (10, PointerMove(2, x=0.1, y=0.9)),
        (11, PointerButton(3, 0, True)),
        (20, KeyEvent(4, "Space", True)),
        (40, GamepadState(5, (-0.7, 0.4), (0.0, 1.0))),
        (41, KeyEvent(6, "KeyD", False)),
        (60, PointerMove(7, dx=-50, dy=20)),
        (80, PointerButton(8, 0, False)),
    ]
    first, second = ReferenceGame(seed=7), ReferenceGame(seed=7)
    for frame in range(100):
        for at, event in schedule:
            if at == frame:
                first.apply(event)
                second.apply(event)
        first.advance()
        second.advance()
        assert np.array_equal(first.render(), second.render()), frame
    without_input = played(frames=100, seed=7, size=(first.width, first.height))
    assert not np.array_equal(first.render(), without_input.render())


def test_different_seed_gives_a_different_picture() -> None:
    assert not np.array_equal(played(seed=0).render(), played(seed=1).render())


def test_world_moves_without_input() -> None:
    assert not np.array_equal(played(frames=0).render(), played(frames=1).render())


@pytest.mark.parametrize(
    ("codes", "shift"),
    [
        (("KeyD",), (60, 0)),
        (("ArrowRight",), (60, 0)),
        (("KeyA",), (-60, 0)),
        (("ArrowLeft",), (-60, 0)),
        (("KeyW",), (0, -60)),
        (("ArrowUp",), (0, -60)),
        (("KeyS",), (0, 60)),
        (("ArrowDown",), (0, 60)),
        (("KeyD", "KeyS"), (60, 60)),
        (("KeyD", "KeyA"), (0, 0)),
        (("KeyX",), (0, 0)),
    ],
)
def test_held_keys_move_the_player(codes: tuple[str, ...], shift: tuple[int, int]) -> None:
    moved = played(held(*codes), frames=10).render()
    still = played(frames=10).render()
    assert box(moved, YELLOW) == shifted(*shift)
    assert np.array_equal(moved, still) == (shift == (0, 0))


def test_released_key_stops_the_player() -> None:
    game = played([*held("KeyD"), (5, KeyEvent(2, "KeyD", False))], frames=10)
    assert box(game.render(), YELLOW) == shifted(30, 0)


@pytest.mark.parametrize("size", [(256, 144), (WIDTH, HEIGHT)], ids=str)
@pytest.mark.parametrize(
    ("codes", "corner"),
    [
        (("KeyA", "KeyW"), (0, 0)),
        (("KeyD", "KeyW"), (1, 0)),
        (("KeyA", "KeyS"), (0, 1)),
        (("KeyD", "KeyS"), (1, 1)),
    ],
)
def test_player_is_clamped_to_the_frame(
    size: tuple[int, int], codes: tuple[str, ...], corner: tuple[int, int]
) -> None:
    width, height = size
    frame = played(held(*codes), frames=200, size=size).render()
    x0, y0 = corner[0] * (width - 64), corner[1] * (height - 64)
    assert frame.shape == (height, width, 3)
    assert box(frame, YELLOW) == (x0, y0, x0 + 64, y0 + 64)


@pytest.mark.parametrize(
    ("axes", "shift"),
    [((1.0, 0.0), (60, 0)), ((-0.5, 0.5), (-30, 30)), ((0.1, -0.1), (0, 0)), ((1.0,), (0, 0))],
)
def test_gamepad_stick_moves_the_player(axes: tuple[float, ...], shift: tuple[int, int]) -> None:
    frame = played([(0, GamepadState(1, axes, ()))], frames=10).render()
    assert box(frame, YELLOW) == shifted(*shift)


@pytest.mark.parametrize(
    "trigger", [KeyEvent(1, "Space", True), GamepadState(1, (), (1.0,))], ids=["space", "pad-a"]
)
def test_flash(trigger: InputEvent) -> None:
    game = played([(0, trigger)])
    assert box(game.render(), WHITE) == START
    assert box(game.render(), YELLOW) is None
    for _ in range(30):
        game.advance()
    assert box(game.render(), YELLOW) == START


def test_gamepad_a_flashes_on_press_not_while_held() -> None:
    game = played([(0, GamepadState(1, (), (1.0,)))], frames=30)
    game.apply(GamepadState(2, (), (1.0,)))
    assert box(game.render(), YELLOW) == START
    game.apply(GamepadState(3, (), (0.0,)))
    game.apply(GamepadState(4, (), (1.0,)))
    assert box(game.render(), YELLOW) is None


@pytest.mark.parametrize(
    ("x", "y"), [(0.25, 0.75), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5)]
)
def test_absolute_pointer_moves_only_the_crosshair(x: float, y: float) -> None:
    game = played([(0, PointerMove(1, x=x, y=y))])
    frame = game.render()
    centre = cursor_pixel(played())
    target = (int(x * (WIDTH - 1)), int(y * (HEIGHT - 1)))
    assert crosshair_at(frame, *target)
    changed = (frame != played().render()).any(axis=2)
    assert not (changed & ~near_cursor([centre, target])).any()


@pytest.mark.parametrize(
    ("moves", "cursor"),
    [
        ([(64, -36)], (0.6, 0.4)),
        ([(64, -36), (64, -36)], (0.7, 0.3)),
        ([(4096, 4096)], (1.0, 1.0)),
        ([(-4096, 0), (32, 0)], (0.05, 0.5)),
    ],
)
def test_relative_pointer_moves_the_crosshair(
    moves: list[tuple[int, int]], cursor: tuple[float, float]
) -> None:
    game = played([(0, PointerMove(n + 1, dx=dx, dy=dy)) for n, (dx, dy) in enumerate(moves)])
    assert game.controls.cursor == pytest.approx(cursor)
    assert crosshair_at(game.render(), *cursor_pixel(game))


@pytest.mark.parametrize(
    ("buttons", "fill"),
    [
        ((0,), (230, 40, 40)),
        ((1,), (40, 90, 230)),
        ((2,), (40, 200, 60)),
        ((2, 0), (230, 40, 40)),
        ((2, 1), (40, 90, 230)),
        ((3,), None),
        ((), None),
    ],
)
def test_pointer_buttons_fill_the_crosshair(buttons: tuple[int, ...], fill: Colour | None) -> None:
    place = PointerMove(1, x=0.2, y=0.25)
    downs = [(0, PointerButton(n + 2, b, True)) for n, b in enumerate(buttons)]
    game = played([(0, place), *downs])
    cx, cy = cursor_pixel(game)
    inside = game.render()[cy - 8, cx - 8]
    expected = played([(0, place)]).render()[cy - 8, cx - 8] if fill is None else fill
    assert tuple(inside) == tuple(expected)


def test_released_button_clears_the_fill() -> None:
    place = PointerMove(1, x=0.2, y=0.25)
    game = played([(0, place), (0, PointerButton(2, 0, True)), (0, PointerButton(3, 0, False))])
    assert np.array_equal(game.render(), played([(0, place)]).render())


def lamp_colours(frame: RGBFrame) -> list[Colour]:
    """The uniform colour of each of the 16 lamps along the bottom edge."""
    lamp = WIDTH // 32
    top = HEIGHT - lamp - 8
    colours = []
    for index in range(16):
        x = lamp // 2 + index * 2 * lamp
        region = frame[top : top + lamp, x : x + lamp].reshape(-1, 3)
        assert (region == region[0]).all(), index
        red, green, blue = (int(c) for c in region[0])
        colours.append((red, green, blue))
    return colours


@pytest.mark.parametrize(
    ("buttons", "lit"),
    [
        ((), set()),
        ((0.0, 1.0, 0.0, 0.6), {1, 3}),
        ((0.5,) * 16, set()),
        ((1.0,) * 32, set(range(16))),
    ],
)
def test_gamepad_buttons_light_lamps(buttons: tuple[float, ...], lit: set[int]) -> None:
    frame = played([(0, GamepadState(1, (), buttons))]).render()
    assert lamp_colours(frame) == [LAMP_ON if i in lit else LAMP_OFF for i in range(16)]


def test_input_sequence_is_the_highest_applied() -> None:
    game = ReferenceGame(WIDTH, HEIGHT)
    events: list[InputEvent] = [
        KeyEvent(3, "KeyW", True),
        PointerMove(1, x=0.5, y=0.5),
        GamepadState(7, (), ()),
        PointerButton(5, 0, True),
    ]
    assert game.input_sequence == 0
    seen = []
    for event in events:
        game.apply(event)
        seen.append(game.input_sequence)
    assert seen == [3, 3, 7, 7]


@pytest.mark.parametrize("size", [(255, 144), (256, 143), (100, 100)])
def test_too_small_raises(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="at least 256x144"):
        ReferenceGame(*size)
