// The play page: ask the indexer for a container, negotiate WebRTC through signaling, show
// the stream with the lowest delay the browser allows, send input, measure from the marker.
// window.gamecast exposes the live state for tests and benchmarks.
import { MESSAGE_TYPES, PLAYER_STATS_FIELDS, VERSION } from "/protocol.js";
import { InputCapture } from "/static/input.js";
import { MarkerReader, captureAgeMs } from "/static/marker.js";
import { measureTargets } from "/static/probe.js";
import { StatsOverlay, statsRecord } from "/static/stats.js";

const $ = (id) => document.getElementById(id);
const video = $("video");
const wallClock = (highResTime) => performance.timeOrigin + highResTime;
const ICE_GATHER_LIMIT_MS = 1000;
const SAMPLE_LIMIT = 20000; // per series; older samples are dropped so a long session stays small
const STATS_REPORT_MS = 2000; // how often the indexer hears the overlay's summary (live samples)

function record(series, value) {
  series.push(value);
  if (series.length > SAMPLE_LIMIT) series.splice(0, series.length - SAMPLE_LIMIT);
}

const state = {
  status: "ready",
  session: null,
  container: null, // the one the indexer matched this session with
  stats: null,
  marker: null,
  markersRead: 0,
  markersUnreadable: 0,
  probes: [], // the medians this page measured to containers before its claim
  g2gWindow: [], // glass-to-glass samples since the last overlay refresh
  g2gSamples: [],
  displaySamples: [], // capture -> expected display (vsync) time
  i2pSamples: [],
  presentedTimes: [], // wall-clock ms of every frame presented, for pacing statistics
  inputSent: new Map(), // seq -> wall-clock ms when sent
  lastInputSeq: 0,
  inputErrors: 0,
  statsReported: 0, // summaries sent to the indexer this session
  lastError: null,
  playPressedAt: null,
  timeToFirstFrameMs: null,
};
window.gamecast = state;

let ws = null;
let pc = null;
let channel = null;
let input = null;
let statsTimer = null;
let reportTimer = null;
let frameCallback = null; // the pending requestVideoFrameCallback, cancelled on teardown

function setStatus(text) {
  state.status = text;
  $("status").textContent = text;
}

// Every message the page sends is checked against the contract the server publishes, so a
// drift between the two fails here, loudly, rather than as an error reply later.
function send(message) {
  const fields = MESSAGE_TYPES[message.type];
  const unknown = Object.keys(message).filter((k) => k !== "type" && !fields?.includes(k));
  if (!fields || unknown.length) throw new Error(`not in the protocol: ${message.type} ${unknown}`);
  ws.send(JSON.stringify({ v: VERSION, ...message }));
}

function sendInput(event) {
  if (channel?.readyState !== "open") return 0;
  const seq = ++state.lastInputSeq;
  state.inputSent.set(seq, wallClock(performance.now()));
  channel.send(JSON.stringify({ ...event, seq }));
  return seq;
}
state.sendInput = sendInput;

function parseQuality(value) {
  const [size, fps] = value.split("@");
  const [width, height] = size.split("x").map(Number);
  return { width, height, fps: Number(fps) };
}

// URL parameters width, height and fps win over the menu (the latency benchmark sets them).
function qualityChoice() {
  const { width, height, fps } = parseQuality($("quality").value);
  const params = new URLSearchParams(location.search);
  return {
    width: Number(params.get("width") ?? width),
    height: Number(params.get("height") ?? height),
    fps: Number(params.get("fps") ?? fps),
    policy: params.get("policy") ?? $("policy").value,
  };
}

// Offer only what some registered container advertises (/api/containers); a choice that is no
// longer offered falls back to the default (720p60), else to the first option still offered.
async function refreshQualities() {
  let containers;
  try {
    ({ containers } = await (await fetch("/api/containers")).json());
  } catch {
    return; // leave the menu as it is: Play will report what the indexer refuses
  }
  const select = $("quality");
  for (const option of select.options) {
    // The server says which choices each container takes, by the indexer's own rule.
    const offered = containers.some((c) => c.offers.includes(option.value));
    option.disabled = !offered;
    option.title = offered ? "" : `no container offers ${option.value}`;
  }
  if (!select.selectedOptions[0]?.disabled) return;
  const enabled = [...select.options].filter((o) => !o.disabled);
  const fallback = enabled.find((o) => o.defaultSelected) ?? enabled[0];
  if (fallback) select.value = fallback.value;
}

function gatheringDone(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHER_LIMIT_MS);
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

// Glass-to-glass per MARKER.md is taken when the frame is presented (handed to the compositor);
// expectedDisplayTime, when the next vsync should show it, is kept beside it as display latency.
async function onVideoFrame(now, metadata) {
  frameCallback = pc ? video.requestVideoFrameCallback(onVideoFrame) : null;
  const presentedAt = wallClock(metadata.presentationTime ?? now);
  const displayedAt = wallClock(metadata.expectedDisplayTime ?? now);
  if (state.timeToFirstFrameMs === null && state.playPressedAt !== null) {
    state.timeToFirstFrameMs = presentedAt - state.playPressedAt;
  }
  record(state.presentedTimes, presentedAt);
  const marker = await state.reader.read();
  if (!marker) {
    state.markersUnreadable++;
    return;
  }
  state.markersRead++;
  state.marker = marker;
  const g2g = captureAgeMs(marker.captureTimeMs, presentedAt);
  record(state.g2gWindow, g2g);
  record(state.g2gSamples, g2g);
  record(state.displaySamples, captureAgeMs(marker.captureTimeMs, displayedAt));
  for (const [seq, sentAt] of state.inputSent) {
    if (seq > marker.inputSequence) break;
    record(state.i2pSamples, presentedAt - sentAt);
    state.inputSent.delete(seq);
  }
}

async function startPeer() {
  pc = new RTCPeerConnection();
  state.peer = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  channel = pc.createDataChannel("input", { ordered: false, maxRetransmits: 0 });
  channel.onmessage = (e) => {
    state.inputErrors++;
    state.lastError = JSON.parse(e.data);
  };
  pc.ontrack = (event) => {
    // Render as soon as a frame decodes: no jitter-buffer target beyond what the network needs.
    if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
    if ("playoutDelayHint" in event.receiver) event.receiver.playoutDelayHint = 0;
    video.srcObject = new MediaStream([event.track]);
    frameCallback = video.requestVideoFrameCallback(onVideoFrame);
  };
  pc.onconnectionstatechange = () => {
    if (pc?.connectionState === "failed") end("the connection to the container failed");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringDone(pc);
  send({ type: "offer", sdp: pc.localDescription.sdp });
}

// The overlay's latest summary, for the indexer's live samples of this session (a verifier
// weighs what the page saw against what the container says it sent).
function reportStats() {
  if (!state.stats || ws?.readyState !== WebSocket.OPEN) return;
  send({ type: "player_stats", stats: statsRecord(state.stats, PLAYER_STATS_FIELDS) });
  state.statsReported++;
}

function onSignal(event) {
  const message = JSON.parse(event.data);
  switch (message.type) {
    case "matched":
      state.session = message.session;
      state.container = message.container;
      setStatus(`matched with ${message.container}, connecting`);
      startPeer();
      break;
    case "session_answer":
      pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      break;
    case "session_state":
      if (message.state === "playing") {
        setStatus("playing");
        input = new InputCapture(video, sendInput);
        input.start();
        statsTimer = setInterval(() => pc && state.overlay.refresh(pc), 1000);
        reportTimer = setInterval(reportStats, STATS_REPORT_MS);
      }
      break;
    case "probe":
      setStatus(`measuring the way to ${message.targets.length} containers`);
      measureTargets(message.targets, message.count).then((samples) => {
        state.probes.push(...samples);
        if (ws?.readyState === WebSocket.OPEN) send({ type: "probed", samples });
      });
      break;
    case "queued":
      setStatus(`waiting, number ${message.position} in the queue: ${message.reason}`);
      break;
    case "ended":
      teardown(`ended: ${message.reason}`);
      break;
    case "error":
      state.lastError = message;
      setStatus(`error: ${message.reason}`);
      if (message.ref === "play") teardown(`could not play: ${message.reason}`);
      break;
  }
}

// A verifier's Chromium bot opens the page with its check's ticket (verifier/bot_session.py).
const ticket = new URLSearchParams(location.search).get("ticket") ?? "";

// Studios' builds the network knows (/api/builds, absent where uploads are off) join the
// reference game in the choice; ?game=NAME picks one when the page opens.
async function listGames() {
  const select = $("game");
  try {
    const response = await fetch("/api/builds", { cache: "no-store" });
    if (response.ok) {
      const names = new Set((await response.json()).builds.map((build) => build.name));
      for (const name of [...names].sort()) select.append(new Option(name, name));
    }
  } catch {
    // no builds listed: the reference game alone
  }
  const wanted = new URLSearchParams(location.search).get("game");
  if (wanted && [...select.options].some((option) => option.value === wanted)) select.value = wanted;
  state.gamesListed = true;
}
listGames();

function play() {
  $("play").disabled = true;
  $("end").disabled = false;
  Object.assign(state, { playPressedAt: wallClock(performance.now()), timeToFirstFrameMs: null, lastInputSeq: 0, probes: [], stats: null, statsReported: 0 });
  state.inputSent.clear();
  setStatus("finding a container");
  const checked = refreshQualities(); // alongside the connect, so Play waits no longer for it
  connectToIndexer().then(async (socket) => {
    ws = socket;
    await checked;
    socket.onmessage = onSignal;
    socket.onclose = () => pc && teardown("signaling connection closed");
    if (ws === socket) send({ type: "play", game: $("game").value, probe: true, ticket, ...qualityChoice() });
  }, (error) => teardown(error.message));
}

// The network publishes its indexers (/api/indexers); take one at random and the next when it
// does not answer, so one indexer down costs a player a retry, not the game.
async function connectToIndexer() {
  let urls = [];
  try {
    urls = (await (await fetch("/api/indexers")).json()).indexers;
  } catch {
    // this indexer cannot list the others: it is the only one we know
  }
  const here = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/player`;
  const order = urls.length ? urls.sort(() => Math.random() - 0.5) : [here];
  for (const url of order) {
    try {
      return await openSocket(url);
    } catch {
      setStatus(`indexer ${url} did not answer, trying another`);
    }
  }
  throw new Error("no indexer answered");
}

function openSocket(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error(`${url} did not answer`));
  });
}

function end(reason = "ended by player") {
  if (ws?.readyState === WebSocket.OPEN) send({ type: "end", reason });
  teardown(reason);
}

function teardown(reason) {
  input?.stop();
  clearInterval(statsTimer);
  clearInterval(reportTimer);
  if (frameCallback !== null) video.cancelVideoFrameCallback(frameCallback);
  frameCallback = null;
  state.overlay.reset();
  pc?.close();
  pc = null;
  channel = null;
  input = null;
  ws?.close();
  ws = null;
  $("play").disabled = false;
  $("end").disabled = true;
  setStatus(reason);
}

state.reader = new MarkerReader(video);
state.overlay = new StatsOverlay($("overlay"), state);
$("play").addEventListener("click", play);
$("end").addEventListener("click", () => end());
state.qualitiesChecked = refreshQualities(); // resolves once the menu shows what is offered
