// The network dashboard: every container the indexer knows, from /api/containers,
// /api/sessions and /api/verifiers every two seconds: lifecycle state and availability, what it
// hosts and streams, liveness, its sessions, the host it runs on and each GPU's telemetry, and
// what verifiers found (QoS, claimed against measured, recent verdicts), what the container
// reported about its builds (crashes, limit kills, hash refusals, planted folders); then the verifiers. Server strings only ever become text
// nodes or attribute values, never HTML. window.dashboard exposes the latest poll for tests.
const POLL_MS = 2000;

const state = { containers: [], sessions: [], verifiers: null, errors: 0, updatedAt: null, error: null, polls: 0 };
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

const shown = (value) => (known(value) && value !== "" ? String(value) : "-");

function findingRow(finding) {
  return el("tr", { class: finding.passed ? "pass" : "fail" },
    el("td", {}, finding.name), el("td", {}, shown(finding.claimed)), el("td", {}, shown(finding.measured)),
    el("td", {}, finding.passed ? "ok" : finding.detail || "failed"));
}

// The verifiers' view of one container: its QoS, the latest registration check's findings as
// claimed against measured, and its latest decisions.
function verificationSection(container) {
  const { qos, penalty, decisions } = container.verification;
  const registration = decisions.find((d) => d.check === "registration");
  const parts = [el("h3", {}, "Verification"), terms([
    ["lifecycle", container.state],
    ["QoS", `${qos.toFixed(2)}${penalty > 0 ? `, penalty ${penalty.toFixed(2)}` : ""}`],
  ])];
  if (registration) {
    parts.push(el("table", { class: "findings" },
      el("tr", {}, el("th", {}, "spec"), el("th", {}, "claimed"), el("th", {}, "measured"), el("th", {}, "verdict")),
      ...registration.findings.map(findingRow)));
  }
  parts.push(decisions.length
    ? el("ul", { class: "decisions" }, ...decisions.map((d) => el("li", { class: d.outcome },
      `${new Date(d.at * 1000).toLocaleTimeString()} ${d.check}: ${d.outcome}` +
      `${d.reason ? ` (${d.reason})` : ""}` +
      `${d.dissenters.length ? `; outvoted: ${d.dissenters.join(", ")}` : ""}`)))
    : el("p", { class: "empty" }, "not verified yet"));
  return parts;
}

// What the container reported about its builds: a count of each kind and the latest reports,
// newest first. A touched disk (hash refusal, planted folder) sends the host to re-inspection
// and is marked as the host's fault; crashes and limit kills are the build's.
const BUILD_EVENT_NAMES = {
  crashed: "crashed", limit_killed: "killed by a limit", hash_refused: "refused by the hash check",
  planted: "planted folder",
};

function buildEventsSection(container) {
  const { recent, counts } = container.build_events;
  const totals = Object.entries(counts).filter(([, n]) => n > 0)
    .map(([kind, n]) => `${n} ${BUILD_EVENT_NAMES[kind] || kind}`);
  const parts = [el("h3", {}, "Builds"), terms([["reports", totals.join(", ") || "none"]])];
  if (recent.length) {
    parts.push(el("ul", { class: "build-events" }, ...recent.map((e) => el("li",
      { class: `build-event ${e.kind}`, "data-kind": e.kind },
      `${new Date(e.at * 1000).toLocaleTimeString()} ${e.build || "?"}${e.version ? ` ${e.version}` : ""}: ` +
      `${BUILD_EVENT_NAMES[e.kind] || e.kind}${e.limit ? ` (${e.limit.replace("_", " ")})` : ""}` +
      `${e.session ? ` in ${e.session}` : ""}${e.detail ? `: ${e.detail}` : ""}`))));
  }
  return parts;
}

function verifiersSection() {
  const v = state.verifiers;
  if (!v) return [];
  const rows = v.roster.map((entry) => {
    const record = v.records[entry.verifier] || { checks: 0, agreed: 0, dissented: 0, absent: 0 };
    const duty = v.on_duty.includes(entry.verifier) ? "on duty" : "off duty";
    return el("tr", { "data-verifier": entry.verifier }, el("td", {}, entry.verifier), el("td", {}, String(entry.stake)),
      el("td", {}, duty), el("td", {}, `${record.checks} checks, ${record.agreed} agreed, ` +
        `${record.dissented} dissented, ${record.absent} absent`));
  });
  return [el("section", { id: "verifiers" },
    el("h2", {}, `Verifiers (epoch ${v.epoch ?? "-"}, ${v.epoch_seconds} s)`),
    rows.length ? el("table", {}, ...rows) : el("p", { class: "empty" }, "no verifier is enlisted"))];
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
    ...verificationSection(container),
    ...buildEventsSection(container),
  );
}

function render() {
  const { containers, sessions, errors, updatedAt, error } = state;
  const cards = containers.map(card);
  if (!cards.length) cards.push(el("p", { class: "empty" }, "no container is registered"));
  document.getElementById("containers").replaceChildren(...cards, ...verifiersSection());
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
    const [{ containers }, { sessions, errors }, verifiers] = await Promise.all([
      fetchJson("/api/containers"),
      fetchJson("/api/sessions"),
      fetchJson("/api/verifiers"),
    ]);
    Object.assign(state, { containers, sessions, verifiers, errors, updatedAt: new Date(), error: null });
  } catch (error) {
    state.error = `signaling unreachable: ${error.message}`;
  }
  state.polls++;
  render();
  setTimeout(poll, POLL_MS);
}

poll();
