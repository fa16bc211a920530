// The network dashboard: every container the indexer knows, from /api/containers and
// /api/sessions every two seconds: availability, what it hosts and streams, liveness, its
// session, the host it runs on and each GPU's telemetry. Server strings only ever become text
// nodes or attribute values, never HTML. window.dashboard exposes the latest poll for tests.
const POLL_MS = 2000;

const state = { containers: [], sessions: [], errors: 0, updatedAt: null, error: null, polls: 0 };
window.dashboard = state;

const known = (value) => value !== null && value !== undefined;
const number = (value, unit = "", digits = 0) => (known(value) ? `${value.toFixed(digits)}${unit}` : "-");
const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
const mib = (value) => (!known(value) ? "-" : value >= 1024 ? `${(value / 1024).toFixed(1)} GiB` : `${value} MiB`);

// append() turns strings into text nodes: nothing a server sends is parsed as markup.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function terms(rows) {
  return el("dl", {}, ...rows.flatMap(([label, value]) => [el("dt", {}, label), el("dd", {}, value)]));
}

function encoderRows(gpu) {
  const stats = [gpu.encoder_util_percent, gpu.encoder_sessions, gpu.encoder_fps, gpu.encoder_latency_us];
  const capacity = [gpu.encoder_capacity_h264, gpu.encoder_capacity_hevc, gpu.encoder_capacity_av1];
  return [
    ["encoder", stats.some(known)
      ? `${number(gpu.encoder_util_percent, " %")}, ${number(gpu.encoder_sessions)} sessions, ` +
        `${number(gpu.encoder_fps, " fps")}, ${number(gpu.encoder_latency_us, " us")}`
      : "no NVENC reported"],
    ["NVENC free", capacity.some(known)
      ? ["H.264", "HEVC", "AV1"].map((codec, i) => `${codec} ${number(capacity[i], " %")}`).join(", ")
      : "-"],
  ];
}

function gpuSection(gpu) {
  const readings = "memory_used_mib" in gpu; // before the first heartbeat: only name and memory
  const rows = [["memory", readings ? `${mib(gpu.memory_used_mib)} / ${mib(gpu.memory_total_mib)}` : mib(gpu.memory_total_mib)]];
  if (readings) {
    rows.push(
      ["utilization", `${number(gpu.gpu_util_percent, " %")} (memory ${number(gpu.memory_util_percent, " %")})`],
      ["temperature", number(gpu.temperature_c, " °C")],
      ["power", `${number(gpu.power_w, " W", 1)} / ${number(gpu.power_limit_w, " W")}`],
      ["clocks", `${number(gpu.graphics_clock_mhz)} / ${number(gpu.sm_clock_mhz)} / ` +
        `${number(gpu.memory_clock_mhz)} MHz (graphics / SM / memory)`],
      ...encoderRows(gpu),
    );
  }
  return [el("h3", { title: gpu.uuid }, `GPU ${gpu.index}: ${gpu.name}`), terms(rows)];
}

function gpuSections(container) {
  if (container.gpu === "cpu-only") return [el("p", { class: "cpu-only" }, "CPU only: no NVIDIA driver")];
  if (container.gpu === null) return [el("p", { class: "empty" }, "GPUs not reported by this agent")];
  return container.gpus.flatMap(gpuSection);
}

function hostRows(container) {
  const { host, host_load: load } = container;
  const rows = host
    ? [["CPU", `${host.cpu_model}, ${host.cpu_cores} cores`], ["RAM", mib(host.ram_mib)]]
    : [["host", "not reported by this agent"]];
  if (load) {
    rows.push(["load", `CPU ${number(load.cpu_percent, " %")}, RAM ${mib(load.ram_used_mib)} used ` +
      `(${number(load.age_s, " s", 1)} ago)`]);
  }
  return rows;
}

function card(container) {
  const sessions = state.sessions.filter((s) => s.container === container.container);
  const availability = container.availability;
  const capacity = container.capacity.map((c) => `${c.width}x${c.height}@${c.fps}: ${c.sessions}`);
  return el("article", { class: "container", "data-container": container.container },
    el("h2", {}, container.container, el("span", { class: `availability ${availability}` }, availability)),
    terms([
      ["games", container.games.join(", ") || "-"],
      ["encoder", `${container.encoders.join(", ") || "-"}` +
        (container.encoder_reason ? ` (${container.encoder_reason})` : "")],
      ["frames drawn on", container.frames_on.toUpperCase()],
      ["capacity", capacity.join(", ") || "one session"],
      ["load", `${Math.round(container.load * 100)} % of capacity`],
      ["max stream", `${container.max_width}x${container.max_height}@${container.max_fps}`],
      ["heartbeat", `${number(container.heartbeat_age_s, " s", 1)} ago`],
      ["sessions", sessions.map((s) => `${s.session} (${s.state}, ${s.game})`).join(", ") || "none"],
    ]),
    el("h3", {}, "Host"),
    terms(hostRows(container)),
    ...gpuSections(container),
  );
}

function render() {
  const { containers, sessions, errors, updatedAt, error } = state;
  const cards = containers.map(card);
  if (!cards.length) cards.push(el("p", { class: "empty" }, "no container is registered"));
  document.getElementById("containers").replaceChildren(...cards);
  const summary = `${count(containers.length, "container")}, ${count(sessions.length, "session")}, ` +
    `${count(errors, "message")} refused`;
  const when = updatedAt ? `updated ${updatedAt.toLocaleTimeString()}` : "never updated";
  document.getElementById("summary").textContent = error ? `${error}; showing the last answer (${when})` : `${summary}; ${when}`;
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  return response.json();
}

// Each poll waits for the previous one: a slow server gets fewer requests, never a pile of them.
async function poll() {
  try {
    const [{ containers }, { sessions, errors }] = await Promise.all([
      fetchJson("/api/containers"),
      fetchJson("/api/sessions"),
    ]);
    Object.assign(state, { containers, sessions, errors, updatedAt: new Date(), error: null });
  } catch (error) {
    state.error = `signaling unreachable: ${error.message}`;
  }
  state.polls++;
  render();
  setTimeout(poll, POLL_MS);
}

poll();
