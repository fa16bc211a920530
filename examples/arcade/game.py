"""Arcade: gamecast's example build, a small pygame game that shows every input it receives.

gamecast starts it on its own Xvfb display (SDL_VIDEODRIVER=x11) and streams that display;
run it by hand on any X display the same way:

    python3 game.py [--size 1280x720] [--fps 60] [--crash-on KEY]

The picture is a function of the input received and of the frame count, nothing else, so a
test can tell what it should show: arrows or WASD move the yellow square 6 px per frame,
Space turns it white while held, the mouse draws a crosshair whose box mouse buttons fill
(left red, middle blue, right green), and the keys gamecast maps gamepad buttons to light a
row of lamps along the bottom edge. A bar sweeps along the bottom-right corner every frame so
that a frozen stream is visible. `--crash-on k` raises an exception when the key named k (a
pygame key name) is pressed: the exit a crash test expects.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # keep stdout for the game's own lines

import pygame  # after the variable above, which pygame reads on import

BACKGROUND = (16, 24, 48)
GRID = (40, 52, 90)
GRID_STEP = 80
PLAYER = (250, 200, 30)
PLAYER_HELD_SPACE = (255, 255, 255)
PLAYER_SIZE = 64
PLAYER_SPEED = 6  # pixels per frame while a direction is held
CROSSHAIR = (255, 255, 255)
CROSSHAIR_BOX = 24
BUTTON_FILLS = {1: (230, 40, 40), 2: (40, 90, 230), 3: (40, 200, 60)}  # left, middle, right
LAMP_OFF, LAMP_ON = (50, 50, 60), (40, 230, 90)
LAMP_SIZE = 32
SWEEP_WIDTH, SWEEP_SPAN = 16, 160  # the liveness bar, bottom-right
DIRECTIONS = {
    pygame.K_LEFT: (-1, 0), pygame.K_a: (-1, 0), pygame.K_RIGHT: (1, 0), pygame.K_d: (1, 0),
    pygame.K_UP: (0, -1), pygame.K_w: (0, -1), pygame.K_DOWN: (0, 1), pygame.K_s: (0, 1),
}  # fmt: skip
# The keys of gamecast's default gamepad mapping (streamer/x_input.py), one lamp each.
LAMP_KEYS = (
    pygame.K_SPACE, pygame.K_x, pygame.K_z, pygame.K_c, pygame.K_q, pygame.K_e,
    pygame.K_TAB, pygame.K_RETURN,
)  # fmt: skip


class Arcade:
    """The game's state; `handle` takes pygame events, `advance` one frame, `draw` paints."""

    def __init__(self, width: int, height: int, crash_key: int | None) -> None:
        self.width, self.height = width, height
        self.crash_key = crash_key
        self.frame = 0
        self.held: set[int] = set()
        self.buttons: set[int] = set()
        self.pointer: tuple[int, int] | None = None  # none drawn until the mouse moves
        self.player = [(width - PLAYER_SIZE) // 2, (height - PLAYER_SIZE) // 2]
        self.running = True

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            if event.key == self.crash_key:
                raise RuntimeError(
                    f"crash requested: the {pygame.key.name(event.key)!r} key was pressed "
                    "(--crash-on)"
                )
            self.held.add(event.key)
        elif event.type == pygame.KEYUP:
            self.held.discard(event.key)
        elif event.type == pygame.MOUSEMOTION:
            self.pointer = event.pos
        elif event.type == pygame.MOUSEBUTTONDOWN:
            self.buttons.add(event.button)
        elif event.type == pygame.MOUSEBUTTONUP:
            self.buttons.discard(event.button)

    def advance(self) -> None:
        self.frame += 1
        dx = sum(DIRECTIONS[key][0] for key in self.held if key in DIRECTIONS)
        dy = sum(DIRECTIONS[key][1] for key in self.held if key in DIRECTIONS)
        self.player[0] = min(max(self.player[0] + PLAYER_SPEED * dx, 0), self.width - PLAYER_SIZE)
        self.player[1] = min(max(self.player[1] + PLAYER_SPEED * dy, 0), self.height - PLAYER_SIZE)

    def draw(self, screen: pygame.Surface) -> None:
        screen.fill(BACKGROUND)
        for x in range(0, self.width, GRID_STEP):
            screen.fill(GRID, (x, 0, 2, self.height))
        for y in range(0, self.height, GRID_STEP):
            screen.fill(GRID, (0, y, self.width, 2))
        colour = PLAYER_HELD_SPACE if pygame.K_SPACE in self.held else PLAYER
        screen.fill(colour, (*self.player, PLAYER_SIZE, PLAYER_SIZE))
        self._draw_pointer(screen)
        for index, key in enumerate(LAMP_KEYS):
            x = LAMP_SIZE // 2 + index * 2 * LAMP_SIZE
            lamp = (x, self.height - LAMP_SIZE - 8, LAMP_SIZE, LAMP_SIZE)
            screen.fill(LAMP_ON if key in self.held else LAMP_OFF, lamp)
        sweep = (self.frame * 4) % (SWEEP_SPAN - SWEEP_WIDTH)
        left = self.width - SWEEP_SPAN - 8
        screen.fill(LAMP_OFF, (left, self.height - 24, SWEEP_SPAN, 16))
        screen.fill(CROSSHAIR, (left + sweep, self.height - 24, SWEEP_WIDTH, 16))

    def _draw_pointer(self, screen: pygame.Surface) -> None:
        if self.pointer is None:
            return
        x, y = self.pointer
        half = CROSSHAIR_BOX // 2
        box = pygame.Rect(x - half, y - half, CROSSHAIR_BOX, CROSSHAIR_BOX)
        held = sorted(b for b in self.buttons if b in BUTTON_FILLS)
        if held:
            screen.fill(BUTTON_FILLS[held[0]], box)
        screen.fill(CROSSHAIR, (box.left, y - 1, CROSSHAIR_BOX, 3))
        screen.fill(CROSSHAIR, (x - 1, box.top, 3, CROSSHAIR_BOX))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="1280x720", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=60)
    parser.add_argument("--crash-on", metavar="KEY", help="raise when this key is pressed")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    pygame.display.init()  # video only: a container has no sound device to open
    screen = pygame.display.set_mode((width, height))
    pygame.display.set_caption("arcade")
    pygame.mouse.set_visible(False)  # the game draws its own crosshair
    crash_key = None if args.crash_on is None else pygame.key.key_code(args.crash_on)
    game = Arcade(width, height, crash_key)
    clock = pygame.time.Clock()
    print(f"arcade: {width}x{height} at {args.fps} fps", flush=True)
    while game.running:
        for event in pygame.event.get():
            game.handle(event)
        game.advance()
        game.draw(screen)
        pygame.display.flip()
        clock.tick(args.fps)
    pygame.quit()


if __name__ == "__main__":
    main()
