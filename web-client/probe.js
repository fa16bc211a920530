// Round trips to the containers the indexer names before it claims one (DESIGN.md step 3).
// Each target is fetched `count` times in a row over one kept-alive connection, all targets at
// once; the median is reported, so one slow probe (a connection being opened) does not count.
// A target that does not answer within PROBE_TIMEOUT_MS is left out of the report.

import { MIN_PROBE_MS } from "/protocol.js";

const PROBE_TIMEOUT_MS = 1000;

async function timeOne(url) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
  try {
    const started = performance.now();
    await fetch(url, { cache: "no-store", mode: "cors", signal: abort.signal });
    return performance.now() - started;
  } finally {
    clearTimeout(timer);
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

export async function measureTargets(targets, count) {
  const measured = await Promise.all(targets.map(async ({ container, url }) => {
    const times = [];
    try {
      for (let i = 0; i < count; i += 1) times.push(await timeOne(url));
    } catch {
      return null; // unreachable from here: say nothing rather than guess
    }
    return { container, rtt_ms: Math.max(median(times), MIN_PROBE_MS) };
  }));
  return measured.filter((sample) => sample !== null);
}
