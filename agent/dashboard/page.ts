// Copyright the discover authors. BSD-3-Clause license.

/**
 * The dashboard the agent serves at `GET /`: one self-contained HTML page
 * (no framework, no external resource: its favicon is an inline `data:`
 * SVG) whose script imports the real client from `/client.js`, opens one
 * live set of every instance of every service, whatever its health
 * (`client.services("*", { health: "any" })`), and renders it. It is also a
 * worked example of the client in a browser.
 *
 * What it shows, and how long:
 *
 * - The header: the agent's version and address (from `discover.status`),
 *   the connection state, totals of the set (services, instances,
 *   passing, critical, and the down instances still shown), and the
 *   backend, revision, epoch and this agent's own instances and checks.
 * - One table per service, sorted by service then address (numbers in
 *   addresses compare as numbers). A `critical` instance is marked as such
 *   with its note (`HTTP 500`, `connection refused`...).
 * - An instance that leaves the set is kept greyed as `down at HH:MM:SS`
 *   (the page's local time when it learned of it) for 60 seconds, then
 *   dropped; at most 200 are kept, the oldest dropped first. The query
 *   parameter `keepDown` sets the time in seconds, from 0 to 86,400
 *   (`http://127.0.0.1:1111/?keepDown=300`); another value is ignored,
 *   and the page says so.
 * - While the page is not in sync with the agent (the connection is lost
 *   and the client reconnects, or the agent cannot reach its backend)
 *   nothing says "connected": the connection state says what is wrong,
 *   and every row is marked `stale since HH:MM:SS` until the set is
 *   current again. The agent's status is read after changes, and every 2
 *   seconds while it says its backend is unreachable; never polled
 *   otherwise.
 * - The owner of each instance (`discover.owners`): its short owner id
 *   (`c:` and 8 characters for a client, never its id; `s:AGENT:SESSION`
 *   for a session without one), the name of its token when the agent knows
 *   it, and what the agent knows of that owner's connection. An instance
 *   whose client is lost (its connection ended without closing) stays for
 *   the agent's TTL unless the client comes back: its row is set apart
 *   (tinted, dimmed, a bar on its left) and counts down `client lost, goes
 *   in 12s` (from the agent's clock); one held through another agent says
 *   `held via another agent`. The page reads the owners of each service it
 *   shows (one `discover.owners` call per service, every instance of it)
 *   every 5 seconds while the tab is visible and the page is in sync, at
 *   once when the tab becomes visible again or the page is in sync again,
 *   and a quarter of a second after changes of a service (a burst of
 *   changes is one read). A hidden tab reads none. An agent that does not
 *   know the method (an older version) is asked once: the column then says
 *   so.
 * - With a token in use, rows whose client is lost or elsewhere have a
 *   `force deregister` button: after a confirmation it calls
 *   `unregister(service, addr, { force: true })`, which the agent allows a
 *   token with `admin` access to the service; the row then goes down like
 *   any other. A refusal (`-32007` for a token without admin access,
 *   `-32001` for an instance whose client came back) is shown on the row
 *   with the agent's message, and the row stays. Without a token there is
 *   no button.
 * - An agent with access rules (`--acl`): when opening the set is refused
 *   (`-32007`), or it shows nothing without a token, the page asks for a
 *   token (a password field). It connects again with
 *   `connect(url, { token })`; a refused token leaves the prompt up with
 *   the agent's message (`unknown token: ...`) and the current view as it
 *   was. A token that works is kept in `sessionStorage` only (the tab's
 *   storage, cleared when the tab closes; never in the URL, never in
 *   `localStorage`), so a reload uses it again; the header then says
 *   `token in use`, with a `forget token` button that drops it and
 *   connects again without one. The field has no `name`, so even a form
 *   submitted without the script would not send it anywhere.
 *
 * Elements tests and scripts may rely on: `#connection[data-state]`
 * (`loading`, `connected`, `catching-up`, `backend-unreachable`,
 * `disconnected`, `closed`, `token-required`), `#version`, `#address`, `#totals`, `#status`,
 * `#filter`, `section[data-service]` with its `.count`, and one
 * `tr[data-id]` per instance with `data-state` (`up` or `down`),
 * `data-health` (`passing` or `critical`, on `up` rows), `data-stale` while
 * stale, `data-leader` on its service's leader (the oldest passing
 * instance, as `protocol/leader.ts` says), `data-owner` once its owner is
 * known and `data-client` (`connected`, `lost` or `elsewhere`, on `up`
 * rows), and cells `.addr`, `.health` (with `.note`, `.down-at`, `.stale`,
 * `.leader`), `.owner` (with `.owner-id`, `.token`, `.grace` counting down
 * with `data-expires`, `.elsewhere`, the button `.deregister` and
 * `.action-error`), `.attrs` and `.age`; the token prompt `#auth`
 * (`data-reason` `refused` or `empty`) with `#token`, `#auth-submit` and
 * `#auth-error`, and `#token-state` with `#forget-token` while a token is
 * in use.
 *
 * @module
 */

/** Seconds a down instance stays on the page by default. */
const KEEP_DOWN_SECONDS = 60;
/** Most down instances kept on the page at once. */
const MAX_DOWN = 200;
/** Largest accepted `keepDown`, in seconds (one day). */
const MAX_KEEP_DOWN_SECONDS = 86_400;
/** Milliseconds between two reads of the owners of the services shown. */
const OWNERS_POLL_MS = 5000;
/** Milliseconds from a change of a service to the read of its owners. */
const OWNERS_AFTER_CHANGE_MS = 250;

const STYLE = `
:root { color-scheme: light dark; --muted: #888; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700;
  --bad-bg: #cf222e1a; --warn-bg: #d4a72c26; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; padding: 1rem 1.5rem 2rem; }
header { display: flex; flex-direction: column; gap: .3rem; }
header .line { display: flex; flex-wrap: wrap; align-items: baseline; gap: .3rem 1.2rem; }
h1 { font-size: 1.3rem; margin: 0; }
#version, #address, #status { color: var(--muted); font-family: ui-monospace, monospace; font-size: 12px; }
#connection { font-weight: 600; }
#connection[data-state="connected"] { color: var(--ok); }
#connection[data-state="catching-up"], #connection[data-state="loading"] { color: var(--muted); }
#connection[data-state="backend-unreachable"] { color: var(--warn); }
#connection[data-state="disconnected"], #connection[data-state="closed"] { color: var(--bad); }
#connection[data-state="token-required"] { color: var(--warn); }
#token-state { color: var(--muted); font-size: 12px; }
#token-state button { font: inherit; margin-left: .3rem; }
#auth { margin: .8rem 0 0; padding: .6rem .8rem; border-radius: 6px; background: var(--warn-bg);
  border-left: 4px solid var(--warn); }
#auth p { margin: 0 0 .4rem; }
#auth input { font: inherit; padding: .3rem .5rem; width: 24rem; max-width: 100%; }
#auth button { font: inherit; padding: .3rem .8rem; }
#auth-error { color: var(--bad); margin: .4rem 0 0 !important; }
#totals b { font-weight: 600; }
#totals .critical { color: var(--bad); }
#totals .lost { color: var(--warn); }
#banner { margin: .8rem 0 0; padding: .5rem .8rem; border-radius: 6px; background: var(--warn-bg);
  border-left: 4px solid var(--warn); }
#banner[data-kind="disconnected"] { background: var(--bad-bg); border-left-color: var(--bad); }
#notice { margin: .5rem 0 0; color: var(--warn); }
#filter { width: 100%; margin: .8rem 0 0; padding: .45rem .6rem; font: inherit; }
h2 { font-size: 1rem; margin: 1.3rem 0 .3rem; }
h2 .count { color: var(--muted); font-weight: normal; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th:nth-child(1) { width: 18%; }
th:nth-child(2) { width: 24%; }
th:nth-child(3) { width: 20%; }
th:nth-child(5) { width: 8%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.addr { font-family: ui-monospace, monospace; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
td.age { white-space: nowrap; }
.attr { display: inline-block; margin: 0 .3rem .2rem 0; padding: 0 .35rem; border-radius: 4px;
  background: #8882; font-family: ui-monospace, monospace; font-size: 12px; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: 4px; font-size: 12px; font-weight: 600;
  color: #fff; background: var(--ok); }
.note, .down-at, .stale { margin-left: .4rem; }
.note { font-family: ui-monospace, monospace; font-size: 12px; }
.stale { display: inline-block; color: var(--warn); font-style: italic; font-size: 12px; }
td.owner { font-size: 12px; padding-top: .4rem; }
.owner-id { font-family: ui-monospace, monospace; }
.token { display: inline-block; margin-left: .4rem; padding: 0 .35rem; border-radius: 4px; background: #8882; }
.grace, .elsewhere, .action-error { display: block; }
.grace { color: var(--warn); font-weight: 600; }
.elsewhere { color: var(--muted); }
.action-error { color: var(--bad); }
button.deregister { font: inherit; margin-top: .2rem; padding: .05rem .5rem; }
tr[data-client="lost"] { background: var(--warn-bg); }
tr[data-client="lost"] td:first-child { box-shadow: inset 3px 0 var(--warn); }
tr[data-client="lost"] td.addr, tr[data-client="lost"] td.attrs, tr[data-client="lost"] td.age { opacity: .6; }
tr[data-health="critical"] { background: var(--bad-bg); }
tr[data-health="critical"] td:first-child { box-shadow: inset 3px 0 var(--bad); }
tr[data-health="critical"] .badge { background: var(--bad); }
tr[data-state="down"] { opacity: .5; }
.leader { font-size: .75em; padding: 0 .4em; border: 1px solid currentColor; border-radius: .6em; }
tr[data-state="down"] td.addr { text-decoration: line-through; }
tr[data-state="down"] .badge { background: var(--muted); }
tr[data-stale] td { background-image: repeating-linear-gradient(135deg, transparent 0 8px, #8881 8px 16px); }
#empty, #loading { color: var(--muted); }
`;

const SCRIPT = `
import { connect, ErrorCode, leaderOf } from "/client.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// How long down instances stay (seconds): ?keepDown=N, from 0 to ${MAX_KEEP_DOWN_SECONDS}.
const params = new URLSearchParams(location.search);
let keepDown = ${KEEP_DOWN_SECONDS};
if (params.has("keepDown")) {
  const raw = params.get("keepDown");
  const value = Number(raw);
  if (raw.trim() !== "" && Number.isFinite(value) && value >= 0 && value <= ${MAX_KEEP_DOWN_SECONDS}) {
    keepDown = value;
  } else {
    $("notice").hidden = false;
    $("notice").textContent = "Ignored keepDown=" + JSON.stringify(raw) +
      ": it must be a number of seconds from 0 to ${MAX_KEEP_DOWN_SECONDS}; down instances stay " + keepDown + " s.";
  }
}
const MAX_DOWN = ${MAX_DOWN};

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}

const pad = (n) => String(n).padStart(2, "0");
const clock = (ms) => {
  const d = new Date(ms);
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
};

const byAddr = (a, b) => a.localeCompare(b, "en", { numeric: true });

const FAVICON_COLORS = { ok: "#1a7f37", critical: "#cf222e", stale: "#9a6700", off: "#888888" };
let faviconKind;
function setFavicon(kind) {
  if (kind === faviconKind) return;
  faviconKind = kind;
  const color = FAVICON_COLORS[kind];
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">' +
    '<circle cx="8" cy="8" r="6.5" fill="none" stroke="' + color + '" stroke-width="3"/>' +
    '<circle cx="8" cy="8" r="2.5" fill="' + color + '"/></svg>';
  $("favicon").href = "data:image/svg+xml," + encodeURIComponent(svg);
}

const agentUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
let client, all;
let status;
let linkUp = false; // the client's connection to the agent
let lostAt; // when that connection was lost
let closed = false;
let staleSince; // when the set stopped being in sync with the agent
const down = new Map(); // id -> { instance, at, owner }, oldest first
let authRequired = false; // opening the set was refused and no view is open
const owners = new Map(); // service -> Map(addr -> discover.owners entry)
let ownersKnown = true; // false once the agent said it has no discover.owners
const actionErrors = new Map(); // id -> why a force-deregister failed
const acting = new Set(); // ids whose force-deregister is under way

function connectionState() {
  if (authRequired) return ["token-required", "token required"];
  if (closed) return ["closed", "closed"];
  if (!linkUp) {
    return ["disconnected", lostAt === undefined
      ? "connecting…"
      : "connection to the agent lost at " + clock(lostAt) + ": reconnecting…"];
  }
  if (status && status.connected === false) {
    return ["backend-unreachable", "backend " + status.backend + " unreachable"];
  }
  if (all && !all.connected) return ["catching-up", "catching up…"];
  if (!all) return ["loading", "loading…"];
  return ["connected", "connected"];
}

let lastCounts;
function showHeader(counts = lastCounts) {
  lastCounts = counts;
  const [state, text] = connectionState();
  const node = $("connection");
  node.dataset.state = state;
  node.textContent = text;

  if (status) {
    $("version").textContent = "v" + status.version;
    $("address").textContent = location.host + " · advertises " + status.advertiseHost;
    const mine = status.instances;
    $("status").textContent = (state === "connected" ? "" : "last received: ") +
      "backend " + status.backend +
      (status.connected === false ? " (unreachable)" : "") +
      " · revision " + (all ? all.revision : status.revision) +
      " · epoch " + status.epoch +
      (mine ? " · this agent holds " + mine.registered + " (" + mine.passing + " passing, " +
        mine.critical + " critical) and runs " + mine.checks + " check" + (mine.checks === 1 ? "" : "s") : "");
  }

  if (counts) {
    const part = (n, label, cls) =>
      el("span", { className: cls || "" }, el("b", { textContent: String(n) }), " " + label);
    const parts = [
      part(counts.services, counts.services === 1 ? "service" : "services"),
      part(counts.instances, counts.instances === 1 ? "instance" : "instances"),
      part(counts.passing, "passing"),
      part(counts.critical, "critical", counts.critical ? "critical" : ""),
      ...(counts.lost ? [part(counts.lost, "client" + (counts.lost === 1 ? "" : "s") + " lost", "lost")] : []),
      part(counts.down, "down (shown " + keepDown + " s)"),
    ];
    $("totals").replaceChildren(...parts.flatMap((p, i) => i ? [" · ", p] : [p]));
  }

  const banner = $("banner");
  if (state === "disconnected" && lostAt !== undefined) {
    banner.hidden = false;
    banner.dataset.kind = "disconnected";
    banner.textContent = "The connection to the agent was lost at " + clock(lostAt) +
      ". Showing the state last received, stale since " + clock(staleSince ?? lostAt) +
      ", until the page reconnects.";
  } else if (state === "backend-unreachable" || (state === "catching-up" && staleSince !== undefined)) {
    banner.hidden = false;
    banner.dataset.kind = state;
    banner.textContent = (state === "catching-up"
      ? "Not in sync with the agent yet."
      : "The agent cannot reach its backend (" + status.backend + ").") +
      " Showing the last known state, stale since " + clock(staleSince ?? Date.now()) + ".";
  } else {
    banner.hidden = true;
  }

  const critical = counts ? counts.critical : 0;
  setFavicon(state === "connected" ? (critical ? "critical" : "ok")
    : state === "disconnected" || state === "closed" ? "off" : "stale");
  showTokenState();
  document.title = (state === "connected" ? "" : "(" + state.replace("-", " ") + ") ") +
    (critical ? critical + " critical · " : "") + "discover " + location.host;
}

// Read after changes, and every few seconds while the agent says its
// backend is unreachable (to see it come back); never polled otherwise.
const STATUS_RETRY_MS = 2000;
let statusBusy = false, statusAgain = false, statusTimer;
async function refreshStatus() {
  if (!client || client.state !== "connected") return;
  if (statusBusy) { statusAgain = true; return; }
  statusBusy = true;
  clearTimeout(statusTimer);
  const asked = client;
  try {
    const answer = await asked.status();
    if (asked === client) status = answer;
  } catch { /* the connection state says why */ }
  statusBusy = false;
  if (asked !== client) return; // another connection replaced this one
  if (statusAgain) {
    statusAgain = false;
    void refreshStatus();
  } else if (status && status.connected === false) {
    statusTimer = setTimeout(() => void refreshStatus(), STATUS_RETRY_MS);
  }
  showHeader();
}

// Owners: read per service shown, every OWNERS_POLL_MS while the tab is
// visible and the page in sync, and soon after changes of a service.
const ownerOf = (instance) =>
  owners.get(instance.service)?.get(instance.addr) ?? down.get(instance.id)?.owner;
const ownersBusy = new Map(); // service -> whether to read again once done
async function refreshOwners(service) {
  if (!ownersKnown || !client || client.state !== "connected") return;
  if (ownersBusy.has(service)) { ownersBusy.set(service, true); return; }
  ownersBusy.set(service, false);
  const asked = client;
  try {
    const answer = await asked.owners(service, { health: "any" });
    if (asked === client) {
      owners.set(service, new Map(answer.owners.map((o) => [o.addr, o])));
      scheduleRender();
    }
  } catch (error) {
    if (asked === client && error?.code === ErrorCode.MethodNotFound) {
      ownersKnown = false;
      scheduleRender();
    } // otherwise the last answer stays; the connection state says why
  }
  const again = ownersBusy.get(service);
  ownersBusy.delete(service);
  if (again && asked === client) void refreshOwners(service);
}

// The services with an instance up on the page: one read each.
function pollOwners() {
  if (document.visibilityState !== "visible" || !all || !all.connected) return;
  const shown = new Set();
  for (const tr of document.querySelectorAll('section[data-service] tr[data-state="up"]')) {
    shown.add(tr.closest("section").dataset.service);
  }
  for (const service of owners.keys()) if (!shown.has(service)) owners.delete(service);
  for (const service of shown) void refreshOwners(service);
}

const ownersSoon = new Set(); // services changed since the last read
let ownersSoonTimer;
function afterChange(service) {
  ownersSoon.add(service);
  if (ownersSoonTimer !== undefined) return;
  ownersSoonTimer = setTimeout(() => {
    ownersSoonTimer = undefined;
    const services = [...ownersSoon];
    ownersSoon.clear();
    if (document.visibilityState !== "visible") return;
    for (const service of services) void refreshOwners(service);
  }, ${OWNERS_AFTER_CHANGE_MS});
}

function graceText(expires) {
  const left = expires - Date.now();
  return left > 0 ? "client lost, goes in " + age(left + 999) : "client lost, going now";
}

// An admin's force-deregister of an instance whose client is lost or
// elsewhere; the agent decides whether this session may.
async function forceDeregister(instance) {
  const id = instance.id;
  if (acting.has(id)) return;
  if (!confirm("Force-deregister " + instance.service + " " + instance.addr +
    "? Its owner's client is " + (ownerOf(instance)?.client ?? "unknown") +
    "; the instance goes down for every subscriber at once.")) return;
  const asked = client;
  acting.add(id);
  actionErrors.delete(id);
  render();
  try {
    const removed = await asked.unregister(instance.service, instance.addr, { force: true });
    if (!removed) actionErrors.set(id, "Nothing removed: the instance was already gone.");
  } catch (error) {
    actionErrors.set(id, (error?.code === ErrorCode.Forbidden
      ? "Refused (this token may not): "
      : error?.code === ErrorCode.NotOwner
      ? "Refused: "
      : "Failed: ") + error.message);
  }
  acting.delete(id);
  if (asked !== client) return;
  render();
  void refreshOwners(instance.service);
}

function matchesFilter(instance, words) {
  const owner = ownerOf(instance);
  const text = (instance.service + " " + instance.addr + " " + (instance.health ?? "") + " " +
    (instance.note ?? "") + " " +
    Object.entries(instance.attrs).map(([k, v]) => k + "=" + v).join(" ") +
    (owner ? " " + owner.owner + " " + (owner.token ?? "") + " " + owner.client : "")).toLowerCase();
  return words.every((word) => text.includes(word));
}

function ownerCell(instance, downAt) {
  const td = el("td", { className: "owner" });
  const owner = ownerOf(instance);
  if (!owner) {
    if (!ownersKnown) td.append(el("span", { className: "elsewhere", textContent: "(not reported by this agent)" }));
    return td;
  }
  td.append(el("span", { className: "owner-id", textContent: owner.owner,
    title: owner.owner.startsWith("c:") ? "a client (a short form of its stored id)" : "a session without a client id" }));
  if (owner.token !== undefined) {
    td.append(el("span", { className: "token", textContent: owner.token, title: "its token" }));
  }
  if (downAt !== undefined) return td;
  if (owner.client === "lost") {
    const grace = el("span", { className: "grace", textContent: graceText(owner.expires ?? 0),
      title: "Its connection ended without closing: the instance stays for the agent's TTL unless the client comes back." });
    grace.dataset.expires = owner.expires ?? 0;
    td.append(grace);
  } else if (owner.client === "elsewhere") {
    td.append(el("span", { className: "elsewhere", textContent: "held via another agent" }));
  }
  if (token !== undefined && owner.client !== "connected") {
    const button = el("button", { type: "button", className: "deregister", textContent: "force deregister",
      disabled: acting.has(instance.id),
      title: "Remove it now, whoever holds it (needs admin access to " + instance.service + ")" });
    button.addEventListener("click", () => void forceDeregister(instance));
    td.append(button);
  }
  if (actionErrors.has(instance.id)) {
    td.append(el("span", { className: "action-error", role: "alert", textContent: actionErrors.get(instance.id) }));
  }
  return td;
}

function row(instance, downAt, leads) {
  const attrs = Object.entries(instance.attrs).map(([k, v]) =>
    el("span", { className: "attr", textContent: k + "=" + v }));
  const health = el("td", { className: "health" });
  if (downAt !== undefined) {
    health.append(el("span", { className: "badge", textContent: "down" }),
      el("span", { className: "down-at", textContent: "at " + clock(downAt) }));
  } else if (instance.health === "critical") {
    health.append(el("span", { className: "badge", textContent: "critical" }),
      el("span", { className: "note", textContent: instance.note ?? "" }));
  } else {
    health.append(el("span", { className: "badge", textContent: "passing" }));
  }
  if (staleSince !== undefined) {
    health.append(" ", el("span", { className: "stale", textContent: "stale since " + clock(staleSince) }));
  }
  if (leads) {
    health.append(" ", el("span", { className: "leader", textContent: "leader", title: "the oldest passing instance of its service" }));
  }
  const owner = ownerOf(instance);
  const tr = el("tr", {},
    el("td", { className: "addr", textContent: instance.addr, title: instance.addr }),
    health,
    ownerCell(instance, downAt),
    el("td", { className: "attrs" }, ...attrs),
    el("td", { className: "age", textContent: downAt !== undefined ? "down" : age(Date.now() - instance.registeredAt) }),
  );
  tr.dataset.id = instance.id;
  tr.dataset.addr = instance.addr;
  tr.dataset.state = downAt !== undefined ? "down" : "up";
  if (downAt === undefined) tr.dataset.health = instance.health === "critical" ? "critical" : "passing";
  if (owner) tr.dataset.owner = owner.owner;
  if (owner && downAt === undefined) tr.dataset.client = owner.client;
  if (staleSince !== undefined) tr.dataset.stale = "true";
  if (leads) tr.dataset.leader = "true";
  tr.dataset.registeredAt = instance.registeredAt;
  return tr;
}

function render() {
  if (!all) return;
  const words = $("filter").value.toLowerCase().split(/\\s+/).filter(Boolean);
  const online = all.online();
  const counts = {
    services: new Set(online.map((i) => i.service)).size,
    instances: online.length,
    passing: online.filter((i) => i.health !== "critical").length,
    critical: online.filter((i) => i.health === "critical").length,
    lost: online.filter((i) => ownerOf(i)?.client === "lost").length,
    down: down.size,
  };
  // Each service's leader, as every client and agent derives it: the
  // oldest passing instance (protocol/leader.ts).
  const passingOf = new Map();
  for (const instance of online) {
    if (instance.health === "critical") continue;
    if (!passingOf.has(instance.service)) passingOf.set(instance.service, []);
    passingOf.get(instance.service).push(instance);
  }
  const leaders = new Set(
    [...passingOf.values()].map((instances) => leaderOf(instances).id),
  );
  const byService = new Map();
  const add = (instance, downAt) => {
    if (!matchesFilter(instance, words)) return;
    if (!byService.has(instance.service)) byService.set(instance.service, []);
    byService.get(instance.service).push(
      row(instance, downAt, downAt === undefined && leaders.has(instance.id)),
    );
  };
  for (const instance of online) add(instance);
  for (const { instance, at } of down.values()) add(instance, at);
  const sections = [...byService.keys()].sort().map((service) => {
    const rows = byService.get(service).sort((a, b) => byAddr(a.dataset.addr, b.dataset.addr));
    const up = rows.filter((r) => r.dataset.health === "passing").length;
    const critical = rows.filter((r) => r.dataset.health === "critical").length;
    const lost = rows.filter((r) => r.dataset.client === "lost").length;
    const section = el("section", {},
      el("h2", {}, service + " ", el("span", { className: "count",
        textContent: up + " up" + (critical ? " · " + critical + " critical" : "") +
          (lost ? " · " + lost + " client" + (lost === 1 ? "" : "s") + " lost" : "") })),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["address", "health", "owner", "attributes", "age"].map((t) => el("th", { textContent: t })))),
        el("tbody", {}, ...rows)),
    );
    section.dataset.service = service;
    return section;
  });
  const empty = el("p", { id: "empty", textContent: online.length === 0 && down.size === 0
    ? "No instances registered yet."
    : "No instance matches the filter." });
  $("services").replaceChildren(...(sections.length ? sections : [empty]));
  showHeader(counts);
  showPrompt();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; render(); }, 0);
}

// Drops the down instances kept longer than keepDown; true when one went.
function expireDown() {
  const limit = Date.now() - keepDown * 1000;
  let dropped = false;
  for (const [id, { at }] of down) {
    if (at > limit && down.size <= MAX_DOWN) break; // oldest first
    down.delete(id);
    dropped = true;
  }
  return dropped;
}

function onUpdate(event) {
  const { kind, instance } = event;
  if (kind === "down") {
    down.delete(instance.id);
    // Its owner as last known: who held it stays on its row.
    down.set(instance.id, { instance, at: Date.now(), owner: ownerOf(instance) });
    actionErrors.delete(instance.id);
    expireDown();
  } else {
    down.delete(instance.id);
  }
  scheduleRender();
  // Who holds it may have changed too (taken over, re-registered).
  afterChange(instance.service);
  // A status read after changes keeps the agent's own counts current
  // without polling it.
  void refreshStatus();
}

function tick() {
  if (expireDown()) render();
  for (const tr of document.querySelectorAll('tr[data-state="up"]')) {
    tr.querySelector(".age").textContent = age(Date.now() - Number(tr.dataset.registeredAt));
  }
  for (const grace of document.querySelectorAll(".grace[data-expires]")) {
    grace.textContent = graceText(Number(grace.dataset.expires));
  }
}

// Access rules: the token lives in this tab's sessionStorage only (never
// in the URL, never in localStorage), and is sent only by the client, in
// discover.authenticate.
const TOKEN_KEY = "discover.token";
const storage = {
  get() {
    try { return sessionStorage.getItem(TOKEN_KEY) || undefined; } catch { return undefined; }
  },
  set(value) {
    try {
      if (value === undefined) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, value);
    } catch { /* storage disabled: the token lasts as long as the page */ }
  },
};
let token; // the token of the open connection, if any

function showTokenState() {
  $("token-state").hidden = token === undefined;
}

// The prompt shows while opening the set is refused, and, without a token,
// while the set shows nothing (an agent may hide every service from a
// session without one), or while the visitor is using it.
function showPrompt(error) {
  const prompt = $("auth");
  if (error !== undefined) {
    $("auth-error").hidden = false;
    $("auth-error").textContent = error;
  }
  const nothing = all !== undefined && all.connected && all.online().length === 0 && down.size === 0;
  const inUse = $("token").value !== "" || !$("auth-error").hidden;
  const show = authRequired || (token === undefined && (nothing || (inUse && !prompt.hidden)));
  const reason = authRequired ? "refused" : "empty";
  prompt.dataset.reason = reason;
  $("auth-reason").textContent = reason === "refused"
    ? "This agent needs a token to show its services."
    : "Nothing to show without a token. If this agent has access rules (--acl), a token may show more.";
  if (show && prompt.hidden) {
    prompt.hidden = false;
    $("token").focus();
  } else if (!show) {
    prompt.hidden = true;
  }
  $("filter").hidden = authRequired;
}

// Opens a client (with a token or none), its status and its set; closes it
// again when any of that fails.
async function open(withToken) {
  const next = await connect(agentUrl, withToken === undefined ? {} : { token: withToken });
  try {
    const answer = await next.status().catch((error) => {
      if (error?.code === ErrorCode.Forbidden) throw error;
      return undefined; // the connection state says why
    });
    const set = await next.services("*", { health: "any" });
    return { next, answer, set };
  } catch (error) {
    void next.close().catch(() => {});
    throw error;
  }
}

// Makes an opened client the page's: forgets what the one before showed.
function adopt({ next, answer, set }, withToken) {
  const before = client;
  client = next;
  all = set;
  status = answer;
  token = withToken;
  storage.set(withToken);
  authRequired = false;
  linkUp = next.state === "connected";
  lostAt = undefined;
  closed = false;
  staleSince = undefined;
  down.clear();
  owners.clear();
  ownersKnown = true;
  actionErrors.clear();
  acting.clear();
  clearTimeout(statusTimer);
  $("auth-error").hidden = true;
  $("token").value = "";
  void before?.close().catch(() => {});

  const current = (listener) => (event) => { if (client === next) listener(event); };
  next.addEventListener("disconnect", current(() => {
    linkUp = false;
    lostAt = Date.now();
    staleSince ??= lostAt;
    render();
    showHeader();
  }));
  next.addEventListener("reconnect", current(() => {
    linkUp = true;
    showHeader();
    void refreshStatus();
  }));
  next.addEventListener("close", current(() => {
    closed = true;
    linkUp = false;
    showHeader();
  }));
  set.addEventListener("update", current(onUpdate));
  set.addEventListener("disconnect", current(() => {
    staleSince ??= Date.now();
    scheduleRender();
    // After the client's own "disconnect", when the connection is what was lost.
    setTimeout(() => void refreshStatus(), 0);
  }));
  set.addEventListener("sync", current(() => {
    staleSince = undefined;
    render();
    void refreshStatus();
    pollOwners();
  }));
  render();
  pollOwners();
  globalThis.discoverDashboard = { client, set: all, keepDown };
}

// Connects with a token, or none. A refusal (-32007: a wrong token, or no
// access) shows the prompt and keeps the view open before, if any; other
// errors are thrown.
let attempt = 0;
async function start(withToken) {
  const mine = ++attempt;
  let opened;
  try {
    opened = await open(withToken);
  } catch (error) {
    if (mine !== attempt) return;
    if (error?.code !== ErrorCode.Forbidden) throw error;
    if (withToken !== undefined && storage.get() === withToken) storage.set(undefined);
    if (!client && withToken !== undefined) {
      // A token that no longer works (rules reloaded): carry on without
      // one, and say why.
      await start(undefined);
      if (attempt === mine + 1) showPrompt(error.message);
      return;
    }
    if (!client) {
      authRequired = true;
      $("services").replaceChildren();
      $("totals").replaceChildren();
      showHeader();
    }
    $("token").value = "";
    showPrompt(error.message);
    return;
  }
  if (mine !== attempt) {
    void opened.next.close().catch(() => {});
    return;
  }
  adopt(opened, withToken);
}

function failed(error) {
  closed = true;
  showHeader();
  $("connection").textContent = "could not connect: " + error.message;
  $("services").replaceChildren(el("p", { id: "empty", textContent: "Could not connect to the agent at " +
    agentUrl + ": " + error.message + ". Reload the page to try again." }));
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value;
  if (value === "") return;
  $("auth-submit").disabled = true;
  start(value)
    .catch((error) => showPrompt("could not connect: " + error.message))
    .finally(() => { $("auth-submit").disabled = false; });
});
$("forget-token").addEventListener("click", () => {
  storage.set(undefined);
  start(undefined).catch(failed);
});
$("filter").addEventListener("input", render);
setInterval(tick, 1000);
setInterval(pollOwners, ${OWNERS_POLL_MS});
document.addEventListener("visibilitychange", pollOwners);
showHeader();
start(storage.get()).catch(failed);
`;

const FAVICON = "data:image/svg+xml," + encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">' +
    '<circle cx="8" cy="8" r="6.5" fill="none" stroke="#888888" stroke-width="3"/>' +
    '<circle cx="8" cy="8" r="2.5" fill="#888888"/></svg>',
);

/**
 * The dashboard page, served at `GET /`.
 *
 * @example Usage
 * ```ts
 * import { DASHBOARD_HTML } from "./page.ts";
 * const response = new Response(DASHBOARD_HTML, {
 *   headers: { "content-type": "text/html; charset=utf-8" },
 * });
 * console.log(response.status); // 200
 * ```
 */
export const DASHBOARD_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>discover agent</title>
<link id="favicon" rel="icon" type="image/svg+xml" href="${FAVICON}">
<style>${STYLE}</style>
</head>
<body>
<header>
<div class="line">
<h1>discover agent</h1>
<span id="version"></span>
<span id="address"></span>
<span id="connection" data-state="loading">loading…</span>
<span id="token-state" hidden>token in use<button id="forget-token" type="button">forget token</button></span>
</div>
<div class="line" id="totals"></div>
<div class="line" id="status"></div>
</header>
<div id="banner" role="status" hidden></div>
<p id="notice" hidden></p>
<form id="auth" data-reason="empty" autocomplete="off" hidden>
<p id="auth-reason"></p>
<input id="token" type="password" placeholder="token" aria-label="token" autocomplete="off" spellcheck="false">
<button id="auth-submit" type="submit">Use token</button>
<p id="auth-error" role="alert" hidden></p>
</form>
<input id="filter" type="search" placeholder="Filter by service, address, health, note or attribute (e.g. zone=b, critical)" autofocus>
<main id="services"><p id="loading">Loading…</p></main>
<script type="module">${SCRIPT}</script>
</body>
</html>
`;
