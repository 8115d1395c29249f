// Copyright the discover authors. BSD-3-Clause license.

/**
 * `GET /metrics` of a running agent (memory backend), read by a strict
 * parser of the Prometheus text format (version 0.0.4): every sample
 * belongs to a family announced by `# HELP` and `# TYPE`, names and labels
 * are well formed, values are numbers. The values follow sessions and
 * instances as they come and go.
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { until } from "./_wait.ts";

/** One metric family: its help, its type and its samples. */
interface Family {
  help: string;
  type: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = ["counter", "gauge", "histogram", "summary", "untyped"];

/** Parses `{a="b",c="d"}` at `text[at]`; returns the labels and where they end. */
function parseLabels(
  text: string,
  at: number,
): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = at + 1;
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i);
    assert.ok(eq > i, `a label name at ${i} of '${text}'`);
    const name = text.slice(i, eq);
    assert.match(name, LABEL_NAME, `label name in '${text}'`);
    assert.ok(!Object.hasOwn(labels, name), `label ${name} twice`);
    assert.equal(text[eq + 1], '"', `a quoted value in '${text}'`);
    let value = "";
    let j = eq + 2;
    for (; text[j] !== '"'; j++) {
      assert.ok(j < text.length, `an unterminated value in '${text}'`);
      if (text[j] === "\\") {
        const escaped = text[++j];
        assert.ok(`\\"n`.includes(escaped), `escape \\${escaped}`);
        value += escaped === "n" ? "\n" : escaped;
      } else value += text[j];
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else assert.equal(text[i], "}", `',' or '}' after a label in '${text}'`);
  }
  return { labels, end: i + 1 };
}

function parseValue(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  assert.match(text, /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/, "a number");
  return Number(text);
}

/** The family a sample name belongs to, given the family's type. */
function familyOf(
  families: Map<string, Family>,
  name: string,
): [string, Family] | undefined {
  if (families.has(name)) return [name, families.get(name)!];
  const base = name.replace(/_(bucket|sum|count)$/, "");
  const family = families.get(base);
  if (family && (family.type === "histogram" || family.type === "summary")) {
    return [base, family];
  }
  return undefined;
}

/**
 * Parses the Prometheus text format strictly.
 *
 * @param text The exposition.
 * @returns The families, by name.
 */
function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const pending = new Map<string, Partial<Family>>();
  assert.ok(text.endsWith("\n"), "the exposition ends with a line feed");
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!match) continue; // a comment
      const [, kind, name, rest] = match;
      assert.match(name, NAME, `metric name in '${line}'`);
      assert.ok(!families.has(name), `${kind} of ${name} after its samples`);
      const family = pending.get(name) ?? {};
      if (kind === "HELP") {
        assert.equal(family.help, undefined, `HELP of ${name} twice`);
        family.help = rest;
      } else {
        assert.equal(family.type, undefined, `TYPE of ${name} twice`);
        assert.ok(TYPES.includes(rest), `type '${rest}' of ${name}`);
        family.type = rest;
      }
      pending.set(name, family);
      if (family.help !== undefined && family.type !== undefined) {
        families.set(name, {
          help: family.help,
          type: family.type,
          samples: [],
        });
        pending.delete(name);
      }
      continue;
    }
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    const nameEnd = brace >= 0 && brace < space ? brace : space;
    assert.ok(nameEnd > 0, `a sample: '${line}'`);
    const name = line.slice(0, nameEnd);
    assert.match(name, NAME, `sample name in '${line}'`);
    let labels: Record<string, string> = {};
    let rest = nameEnd;
    if (line[nameEnd] === "{") {
      ({ labels, end: rest } = parseLabels(line, nameEnd));
    }
    assert.equal(line[rest], " ", `a space before the value in '${line}'`);
    const fields = line.slice(rest + 1).split(" ");
    assert.ok(fields.length <= 2, `value [timestamp] in '${line}'`);
    const value = parseValue(fields[0]);
    if (fields[1] !== undefined) assert.match(fields[1], /^-?\d+$/);
    const owner = familyOf(families, name);
    assert.ok(owner, `${name} has HELP and TYPE before its samples`);
    owner[1].samples.push({ name, labels, value });
  }
  assert.equal(pending.size, 0, "every family has both HELP and TYPE");
  return families;
}

/** Scrapes and parses `/metrics`. */
async function scrape(http: string): Promise<Map<string, Family>> {
  const response = await fetch(`${http}/metrics`);
  assert.equal(response.status, 200);
  assert.equal(
    response.headers.get("content-type"),
    "text/plain; version=0.0.4; charset=utf-8",
  );
  return parsePrometheus(await response.text());
}

/** The value of the sample `name` with exactly `labels`, if any. */
function value(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = familyOf(families, name)?.[1];
  return family?.samples.find((s) =>
    s.name === name &&
    JSON.stringify(Object.entries(s.labels).sort()) ===
      JSON.stringify(Object.entries(labels).sort())
  )?.value;
}

/** A raw JSON-RPC WebSocket client: one call at a time. */
async function rawClient(url: string) {
  const ws = new WebSocket(url);
  const inbox: unknown[] = [];
  let waiting: (() => void) | undefined;
  ws.onmessage = (e) => {
    inbox.push(JSON.parse(e.data as string));
    waiting?.();
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
  let id = 0;
  return {
    ws,
    async call(method: string, params: unknown) {
      const mine = ++id;
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: mine, method, params }));
      for (;;) {
        const i = inbox.findIndex((m) => (m as { id?: number }).id === mine);
        if (i >= 0) return inbox.splice(i, 1)[0] as Record<string, unknown>;
        await new Promise<void>((resolve) => waiting = resolve);
      }
    },
    async close() {
      const closed = new Promise((resolve) => ws.onclose = resolve);
      ws.close(1000);
      await closed;
    },
  };
}

Deno.test("/metrics follows sessions, instances and calls in the Prometheus text format", async () => {
  await using agent = await startAgent({ port: 0, logLevel: "error" });
  const http = `http://127.0.0.1:${agent.port}`;
  let m = await scrape(http);
  for (
    const [name, type] of [
      ["discover_sessions", "gauge"],
      ["discover_instances", "gauge"],
      ["discover_requests_total", "counter"],
      ["discover_request_duration_seconds", "histogram"],
      ["discover_events_sent_total", "counter"],
      ["discover_slow_consumer_drops_total", "counter"],
      ["discover_queue_bytes", "gauge"],
      ["discover_backend_connected", "gauge"],
      ["discover_backend_request_duration_seconds", "histogram"],
      ["discover_backend_errors_total", "counter"],
    ]
  ) {
    assert.equal(m.get(name)?.type, type, name);
    assert.ok(m.get(name)!.help.length > 10, `${name} is documented`);
  }
  assert.equal(value(m, "discover_sessions"), 0);
  assert.equal(value(m, "discover_backend_connected"), 1);
  assert.equal(value(m, "discover_slow_consumer_drops_total"), 0);

  const client = await rawClient(agent.url);
  const watcher = await rawClient(agent.url);
  await until(
    async () => value(await scrape(http), "discover_sessions") === 2,
    "2 sessions",
  );
  const subscribed = await watcher.call("discover.subscribe", { service: "x" });
  assert.ok(subscribed.result, JSON.stringify(subscribed));
  for (const port of [9001, 9002]) {
    const r = await client.call("discover.register", {
      service: "x",
      addr: `127.0.0.1:${port}`,
    });
    assert.ok(r.result, JSON.stringify(r));
  }
  const bad = await client.call("discover.register", { service: "x" });
  assert.equal((bad.error as { code: number }).code, -32602);
  const unknown = await client.call("no.such.method", {});
  assert.equal((unknown.error as { code: number }).code, -32601);
  m = await scrape(http);
  assert.equal(value(m, "discover_instances", { service: "x" }), 2);
  const requests = (method: string, code: string) =>
    value(m, "discover_requests_total", { method, code });
  assert.equal(requests("discover.register", "ok"), 2);
  assert.equal(requests("discover.register", "-32602"), 1);
  assert.equal(requests("discover.subscribe", "ok"), 1);
  assert.equal(requests("_unknown", "-32601"), 1);
  assert.equal(
    value(m, "discover_request_duration_seconds_count", {
      method: "discover.register",
    }),
    3,
  );
  assert.equal(
    value(m, "discover_request_duration_seconds_bucket", {
      method: "discover.register",
      le: "+Inf",
    }),
    3,
  );
  // The subscriber had its snapshot's leader (none) and `current`, then
  // two `up`s, the first with its `leader` event.
  await until(
    async () => value(await scrape(http), "discover_events_sent_total") === 5,
    "5 events sent",
  );
  assert.equal(
    value(m, "discover_backend_request_duration_seconds_count", { op: "put" }),
    2,
  );
  assert.equal(value(m, "discover_backend_errors_total", { op: "put" }), 0);

  const r = await client.call("discover.unregister", {
    service: "x",
    addr: "127.0.0.1:9001",
  });
  assert.equal(r.result, true, JSON.stringify(r));
  m = await scrape(http);
  assert.equal(value(m, "discover_instances", { service: "x" }), 1);
  assert.equal(
    value(m, "discover_backend_request_duration_seconds_count", {
      op: "delete",
    }),
    1,
  );

  await client.close();
  await watcher.close();
  await until(
    async () => value(await scrape(http), "discover_sessions") === 0,
    "0 sessions",
  );
});

Deno.test("/metrics answers only to the agent's own names, and 404 when metrics are off", async () => {
  await using agent = await startAgent({ port: 0, logLevel: "error" });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
  try {
    await conn.write(
      new TextEncoder().encode(
        "GET /metrics HTTP/1.1\r\nHost: rebind.attacker.test\r\nConnection: close\r\n\r\n",
      ),
    );
    const head = new TextDecoder().decode(
      await new Response(conn.readable).arrayBuffer(),
    );
    assert.match(head, /^HTTP\/1\.1 403 /);
    assert.ok(!head.includes("discover_sessions"));
  } finally {
    try {
      conn.close();
    } catch { /* closed with its readable */ }
  }
  await using off = await startAgent({
    port: 0,
    logLevel: "error",
    metrics: false,
  });
  const response = await fetch(`http://127.0.0.1:${off.port}/metrics`);
  assert.equal(response.status, 404);
  await response.body?.cancel();
});
