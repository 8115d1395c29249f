// Copyright the discover authors. BSD-3-Clause license.

/**
 * The dashboard the agent serves at `GET /`: one HTML page without
 * framework whose script imports the real client from `/client.js`, opens
 * one live set of every service (`client.services("*")`) and renders it.
 * It is also a worked example of the client in a browser.
 *
 * @module
 */

const STYLE = `
:root { color-scheme: light dark; --muted: #888; --ok: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; padding: 1.5rem; max-width: 70rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .5rem 1.5rem; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1rem; margin: 1.5rem 0 .4rem; }
h2 .count { color: var(--muted); font-weight: normal; }
#connection { font-weight: 600; }
#connection[data-state="connected"] { color: var(--ok); }
#connection[data-state="disconnected"], #connection[data-state="closed"] { color: var(--bad); }
#status { color: var(--muted); font-family: ui-monospace, monospace; font-size: 12px; }
#filter { width: 100%; margin: 1rem 0 0; padding: .45rem .6rem; font: inherit; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th:nth-child(1) { width: 14rem; }
th:nth-child(3) { width: 7rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.addr { font-family: ui-monospace, monospace; white-space: nowrap; }
td.age { white-space: nowrap; }
.attr { display: inline-block; margin: 0 .3rem .2rem 0; padding: 0 .35rem; border-radius: 4px;
  background: #8882; font-family: ui-monospace, monospace; font-size: 12px; }
tr[data-state="down"] { opacity: .5; text-decoration: line-through; }
#empty { color: var(--muted); }
`;

const SCRIPT = `
import { connect } from "/client.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}

function setConnection(state, text) {
  const node = $("connection");
  node.dataset.state = state;
  node.textContent = text;
}

const agentUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
let client, all, status = {};

function showStatus() {
  const { backend = "?", connected, epoch = "?" } = status;
  $("status").textContent = "backend " + backend +
    (connected === false ? " (unreachable)" : connected ? " (connected)" : "") +
    " · revision " + (all ? all.revision : status.revision ?? "?") +
    " · epoch " + epoch;
}

async function refreshStatus() {
  try {
    status = await client.status();
  } catch { /* shown as disconnected already */ }
  showStatus();
}

function matchesFilter(instance, words) {
  const text = (instance.service + " " + instance.addr + " " +
    Object.entries(instance.attrs).map(([k, v]) => k + "=" + v).join(" ")).toLowerCase();
  return words.every((word) => text.includes(word));
}

function row(instance, state) {
  const attrs = Object.entries(instance.attrs).map(([k, v]) =>
    el("span", { className: "attr", textContent: k + "=" + v }));
  const tr = el("tr", {},
    el("td", { className: "addr", textContent: instance.addr }),
    el("td", { className: "attrs" }, ...attrs),
    el("td", { className: "age", textContent: state === "down" ? "down" : age(Date.now() - instance.registeredAt) }),
  );
  tr.dataset.id = instance.id;
  tr.dataset.state = state;
  tr.dataset.registeredAt = instance.registeredAt;
  return tr;
}

function render() {
  const words = $("filter").value.toLowerCase().split(/\\s+/).filter(Boolean);
  const byService = new Map();
  const add = (instance, state) => {
    if (!matchesFilter(instance, words)) return;
    if (!byService.has(instance.service)) byService.set(instance.service, []);
    byService.get(instance.service).push(row(instance, state));
  };
  for (const instance of all.online()) add(instance, "up");
  for (const instance of all.offline()) add(instance, "down");
  const sections = [...byService.keys()].sort().map((service) => {
    const rows = byService.get(service);
    const up = rows.filter((r) => r.dataset.state === "up").length;
    const section = el("section", {},
      el("h2", {}, service + " ", el("span", { className: "count", textContent: up + " up" })),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["address", "attributes", "age"].map((t) => el("th", { textContent: t })))),
        el("tbody", {}, ...rows)),
    );
    section.dataset.service = service;
    return section;
  });
  const empty = el("p", { id: "empty", textContent: all.online().length === 0
    ? "No service is registered with this agent yet."
    : "No instance matches the filter." });
  $("services").replaceChildren(...(sections.length ? sections : [empty]));
  showStatus();
}

function tick() {
  for (const tr of document.querySelectorAll('tr[data-state="up"]')) {
    tr.querySelector(".age").textContent = age(Date.now() - Number(tr.dataset.registeredAt));
  }
}

async function main() {
  setConnection("disconnected", "connecting…");
  client = await connect(agentUrl);
  setConnection("connected", "connected");
  client.addEventListener("disconnect", () => setConnection("disconnected", "connection lost: reconnecting…"));
  client.addEventListener("reconnect", () => { setConnection("connected", "connected"); refreshStatus(); });
  client.addEventListener("close", () => setConnection("closed", "closed"));
  all = await client.services("*");
  all.addEventListener("update", render);
  all.addEventListener("sync", render);
  $("filter").addEventListener("input", render);
  render();
  await refreshStatus();
  // A status read after each change keeps revision and backend health current
  // without polling the agent.
  all.addEventListener("update", () => void refreshStatus());
  setInterval(tick, 1000);
  globalThis.discoverDashboard = { client, set: all };
}

main().catch((error) => {
  setConnection("closed", "could not connect: " + error.message);
});
`;

/** The dashboard page. */
export const DASHBOARD_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>discover agent</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>discover agent</h1>
<span id="connection" data-state="disconnected">loading…</span>
<span id="status"></span>
</header>
<input id="filter" type="search" placeholder="Filter by service, address or attribute (e.g. zone=b)" autofocus>
<main id="services"></main>
<script type="module">${SCRIPT}</script>
</body>
</html>
`;
