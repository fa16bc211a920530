// The stats overlay: once a second from getStats (W3C webrtc-stats) plus the frame marker.
const percentile = (values, fraction) => {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.round(fraction * (sorted.length - 1))];
};
const fixed = (value, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : "-");
const snakeCase = (name) => name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);

// The overlay's summary as the protocol's PlayerStats record (`fields`, from /protocol.js):
// the same figures under their snake_case names. A figure the page lacks is NaN, which
// JSON.stringify sends as null, as the record allows for those figures.
export function statsRecord(stats, fields) {
  const record = Object.fromEntries(Object.entries(stats).map(([name, value]) => [snakeCase(name), value]));
  const missing = fields.filter((name) => !(name in record));
  if (missing.length) throw new Error(`the stats summary lacks ${missing}`);
  return Object.fromEntries(fields.map((name) => [name, record[name]]));
}

export class StatsOverlay {
  constructor(element, state) {
    this.element = element;
    this.state = state; // shared with play.js: marker samples land here
    this.previous = null;
  }

  // A new session's counters start from zero: forget the last session's.
  reset() {
    this.previous = null;
  }

  async refresh(pc) {
    const report = await pc.getStats();
    let video = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") video = s;
      if (s.type === "candidate-pair" && s.state === "succeeded" && s.nominated) pair = s;
    });
    if (!video) return;
    const before = this.previous ?? { timestamp: video.timestamp - 1000, bytesReceived: 0, jitterBufferDelay: 0,
      jitterBufferEmittedCount: 0, totalDecodeTime: 0, framesDecoded: 0 };
    const delta = (name) => (video[name] ?? 0) - (before[name] ?? 0);
    const seconds = (video.timestamp - before.timestamp) / 1000;
    const g2g = this.state.g2gWindow.splice(0);
    const stats = {
      fps: video.framesPerSecond ?? 0,
      width: video.frameWidth ?? 0,
      height: video.frameHeight ?? 0,
      bitrateKbps: (delta("bytesReceived") * 8) / 1000 / seconds,
      rttMs: pair?.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : NaN,
      jitterBufferMs: (delta("jitterBufferDelay") / Math.max(1, delta("jitterBufferEmittedCount"))) * 1000,
      decodeMs: (delta("totalDecodeTime") / Math.max(1, delta("framesDecoded"))) * 1000,
      framesDecoded: video.framesDecoded ?? 0,
      framesDropped: video.framesDropped ?? 0,
      freezes: video.freezeCount ?? 0,
      g2gP50Ms: percentile(g2g, 0.5),
      codec: report.get(video.codecId)?.mimeType ?? "",
    };
    this.previous = video;
    this.state.stats = stats;
    this.element.textContent = [
      `${stats.width}x${stats.height}  ${fixed(stats.fps, 0)} fps  ${stats.codec}`,
      `bitrate        ${fixed(stats.bitrateKbps / 1000, 2)} Mb/s`,
      `rtt            ${fixed(stats.rttMs)} ms`,
      `jitter buffer  ${fixed(stats.jitterBufferMs)} ms/frame`,
      `decode         ${fixed(stats.decodeMs)} ms/frame`,
      `glass-to-glass ${fixed(stats.g2gP50Ms)} ms p50`,
      `dropped ${stats.framesDropped}  freezes ${stats.freezes}`,
      `input seq      ${this.state.marker?.inputSequence ?? 0} / sent ${this.state.lastInputSeq}`,
      `input errors   ${this.state.inputErrors}`,
    ].join("\n");
  }
}
