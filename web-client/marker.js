// Reads the frame marker (shared/MARKER.md) from the picture the browser decoded.
// Preferred path: WebCodecs copies only the strip's luma rows out of the current frame (no
// colour conversion, no full-frame readback on the main thread). Fallback: draw the strip into
// a small canvas. Both take the mean of each cell's central half, as the spec prescribes.
const CELLS = 64;
const YUV_FORMATS = new Set(["I420", "I420A", "I422", "I444", "NV12"]);
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// `lumaAt(x, y)` gives 0-255 luma of the strip; returns the marker or null when the CRC fails.
function decode(width, lumaAt) {
  const cell = width / CELLS;
  const words = new Uint32Array(4);
  for (let row = 0; row < 2; row++) {
    const y0 = Math.ceil((row + 0.25) * cell);
    const y1 = Math.max(Math.ceil((row + 0.75) * cell), y0 + 1);
    for (let index = 0; index < CELLS; index++) {
      const x0 = Math.ceil((index + 0.25) * cell);
      const x1 = Math.max(Math.ceil((index + 0.75) * cell), x0 + 1);
      let sum = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) sum += lumaAt(x, y);
      const bit = sum / ((y1 - y0) * (x1 - x0)) > 128 ? 1 : 0;
      const word = row * 2 + (index >> 5);
      words[word] = ((words[word] << 1) | bit) >>> 0;
    }
  }
  const payload = new DataView(new ArrayBuffer(12));
  for (let i = 0; i < 3; i++) payload.setUint32(i * 4, words[i]);
  if (crc32(new Uint8Array(payload.buffer)) !== words[3]) return null;
  return { frameSequence: words[0], captureTimeMs: words[1], inputSequence: words[2] };
}

export class MarkerReader {
  constructor(video) {
    this.video = video;
    this.webCodecs = typeof VideoFrame === "function";
    this.buffer = null;
    this.canvas = null;
  }

  // Resolves to {frameSequence, captureTimeMs, inputSequence}, or null when unreadable.
  async read() {
    const width = this.video.videoWidth;
    if (!width) return null;
    const rows = 2 * Math.ceil(Math.ceil((2 * width) / CELLS) / 2); // the strip, rounded up to even
    if (this.webCodecs) {
      try {
        return await this.readFrame(width, rows);
      } catch {
        this.webCodecs = false; // this browser cannot copy video frames: use the canvas from now on
      }
    }
    return this.readCanvas(width, rows);
  }

  async readFrame(width, rows) {
    const frame = new VideoFrame(this.video);
    try {
      if (!YUV_FORMATS.has(frame.format)) throw new Error(`unexpected frame format ${frame.format}`);
      const rect = { x: 0, y: 0, width: frame.visibleRect.width, height: rows };
      const size = frame.allocationSize({ rect });
      if (!this.buffer || this.buffer.length < size) this.buffer = new Uint8Array(size);
      const [luma] = await frame.copyTo(this.buffer, { rect });
      const { offset, stride } = luma;
      return decode(width, (x, y) => this.buffer[offset + y * stride + x]);
    } finally {
      frame.close();
    }
  }

  readCanvas(width, rows) {
    if (!this.canvas) {
      this.canvas = document.createElement("canvas");
      this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    }
    this.canvas.width = width;
    this.canvas.height = rows;
    this.context.drawImage(this.video, 0, 0, width, rows, 0, 0, width, rows);
    const pixels = this.context.getImageData(0, 0, width, rows).data;
    return decode(width, (x, y) => {
      const at = (y * width + x) * 4;
      return 0.299 * pixels[at] + 0.587 * pixels[at + 1] + 0.114 * pixels[at + 2];
    });
  }
}

// Milliseconds from a marker's capture time to `nowMs`, undoing the modulo-2^32 wrap; signed,
// so clocks aligned to within a few ms never turn a fresh frame into a 49-day-old one.
export function captureAgeMs(captureTimeMs, nowMs) {
  const wrapped = (((Math.round(nowMs) - captureTimeMs + 2 ** 31) % 2 ** 32) + 2 ** 32) % 2 ** 32;
  return wrapped - 2 ** 31;
}
