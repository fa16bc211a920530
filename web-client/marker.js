// Reads the frame marker (shared/MARKER.md) from the picture the browser decoded.
// The top strip is scaled to 4 px per cell and each cell is read at its centre, which lies
// inside the central half of the source cell that the spec says to sample.
const CELLS = 64;
const SCALE = 4;
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

export class MarkerReader {
  constructor(video) {
    this.video = video;
    this.canvas = document.createElement("canvas");
    this.canvas.width = CELLS * SCALE;
    this.canvas.height = 2 * SCALE;
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
  }

  // Returns {frameSequence, captureTimeMs, inputSequence}, or null when the CRC fails.
  read() {
    const width = this.video.videoWidth;
    if (!width) return null;
    const cell = width / CELLS;
    this.context.drawImage(this.video, 0, 0, width, 2 * cell, 0, 0, this.canvas.width, this.canvas.height);
    const pixels = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height).data;
    const words = new Uint32Array(4);
    for (let row = 0; row < 2; row++) {
      for (let index = 0; index < CELLS; index++) {
        const at = ((row * SCALE + SCALE / 2) * this.canvas.width + index * SCALE + SCALE / 2) * 4;
        const luma = 0.299 * pixels[at] + 0.587 * pixels[at + 1] + 0.114 * pixels[at + 2];
        const word = row * 2 + (index >> 5);
        words[word] = ((words[word] << 1) | (luma > 128 ? 1 : 0)) >>> 0;
      }
    }
    const payload = new DataView(new ArrayBuffer(12));
    for (let i = 0; i < 3; i++) payload.setUint32(i * 4, words[i]);
    if (crc32(new Uint8Array(payload.buffer)) !== words[3]) return null;
    return { frameSequence: words[0], captureTimeMs: words[1], inputSequence: words[2] };
  }
}

// Milliseconds from a marker's capture time to `nowMs`, undoing the modulo-2^32 wrap.
export function captureAgeMs(captureTimeMs, nowMs) {
  return (((Math.round(nowMs) - captureTimeMs) % 2 ** 32) + 2 ** 32) % 2 ** 32;
}
