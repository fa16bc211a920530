// Captures keyboard, mouse (pointer lock) and gamepad input and sends numbered events on the
// unordered, no-retransmit "input" channel. Pointer moves are coalesced to one per animation
// frame so a 1000 Hz mouse never trips the container's rate limit.
import { INPUT_LIMITS } from "/protocol.js";

const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

export class InputCapture {
  constructor(video, send) {
    this.video = video;
    this.send = send; // (event without seq) => seq
    this.moved = null;
    this.padSignature = "";
    this.running = false;
    this.listeners = [];
  }

  start() {
    this.running = true;
    const on = (target, type, handler) => {
      target.addEventListener(type, handler);
      this.listeners.push([target, type, handler]);
    };
    on(window, "keydown", (e) => this.key(e, true));
    on(window, "keyup", (e) => this.key(e, false));
    on(this.video, "click", () => this.video.requestPointerLock?.());
    on(this.video, "pointermove", (e) => this.pointerMove(e));
    on(this.video, "pointerdown", (e) => this.pointerButton(e, true));
    on(this.video, "pointerup", (e) => this.pointerButton(e, false));
    on(this.video, "contextmenu", (e) => e.preventDefault());
    requestAnimationFrame(() => this.tick());
  }

  stop() {
    this.running = false;
    for (const [target, type, handler] of this.listeners) target.removeEventListener(type, handler);
    this.listeners = [];
    if (document.pointerLockElement === this.video) document.exitPointerLock();
  }

  key(event, down) {
    if (event.repeat || !/^[A-Za-z0-9]{1,32}$/.test(event.code)) return;
    event.preventDefault();
    this.send({ type: "key", code: event.code, down });
  }

  pointerMove(event) {
    if (document.pointerLockElement === this.video) {
      const previous = this.moved?.dx !== undefined ? this.moved : { dx: 0, dy: 0 };
      this.moved = { dx: previous.dx + event.movementX, dy: previous.dy + event.movementY };
    } else {
      const box = this.video.getBoundingClientRect();
      this.moved = {
        x: clamp((event.clientX - box.left) / box.width, 0, 1),
        y: clamp((event.clientY - box.top) / box.height, 0, 1),
      };
    }
  }

  pointerButton(event, down) {
    if (event.button < 0 || event.button > 4) return;
    this.send({ type: "pointerbutton", button: event.button, down });
  }

  tick() {
    if (!this.running) return;
    if (this.moved) {
      const limit = INPUT_LIMITS.maxRelativeMove;
      const move = this.moved.dx === undefined ? this.moved
        : { dx: clamp(Math.round(this.moved.dx), -limit, limit), dy: clamp(Math.round(this.moved.dy), -limit, limit) };
      this.moved = null;
      this.send({ type: "pointermove", ...move });
    }
    this.pollGamepad();
    requestAnimationFrame(() => this.tick());
  }

  pollGamepad() {
    const pad = navigator.getGamepads?.().find((p) => p);
    if (!pad) return;
    const axes = pad.axes.slice(0, INPUT_LIMITS.maxGamepadAxes).map((a) => Math.round(clamp(a, -1, 1) * 1000) / 1000);
    const buttons = pad.buttons.slice(0, INPUT_LIMITS.maxGamepadButtons).map((b) => Math.round(clamp(b.value, 0, 1) * 1000) / 1000);
    const signature = `${axes}|${buttons}`;
    if (signature === this.padSignature) return;
    this.padSignature = signature;
    this.send({ type: "gamepad", axes, buttons });
  }
}
