// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent over TLS (`--tls-cert`, `--tls-key`; `startAgent({ tls })`):
 * it serves `https://` and `wss://` only, with a certificate of a private
 * CA made at test time (`_tls.ts`), and each runtime trusts that CA its
 * own way:
 *
 * - Deno: a `WebSocket` whose `client` is `Deno.createHttpClient({ caCerts })`,
 *   or the CA file in `DENO_CERT` (a client process);
 * - Node.js: npm `ws` given the CA as `ca`, or Node's global WebSocket with
 *   `NODE_EXTRA_CA_CERTS` (`node/tls_client.mjs`);
 * - Chromium: the agent's certificate accepted by the hash of its public
 *   key (`--ignore-certificate-errors-spki-list`), or the CA imported into
 *   the NSS database of its HOME (`certutil`), loading the dashboard.
 *
 * Needs `openssl`, `node`, `npm`, Chromium and `certutil` (Debian's
 * `libnss3-tools`) on PATH; `.ci/run` installs them. Bounds: a process
 * starts within 20 s on an idle machine.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startAgent } from "../agent/mod.ts";
import { AGENT_RUN_ARGS } from "../tools/agent_command.ts";
import { CLIENT_JS } from "../agent/dashboard/_client_bundle.ts";
import { launchChromium, spawnRegistrant } from "./_browser.ts";
import { createTestCa } from "./_tls.ts";
import {
  installWs,
  NODE,
  NODE_DIR,
  run,
  tapCount,
  websocketFlag,
} from "./_node.ts";
import { nextWithin } from "./_wait.ts";

const STARTUP_MS = 20_000;
const decoder = new TextDecoder();

/** A WebSocket class for the client that trusts what `client` trusts. */
function trustingWebSocket(client: Deno.HttpClient) {
  return class extends WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, { protocols, client });
    }
  };
}

/**
 * Runs `start` with the environment variable `name` set to `value` in this
 * process, which a child process inherits as it starts, then restores it.
 */
async function withEnv<T>(
  name: string,
  value: string,
  start: () => Promise<T>,
): Promise<T> {
  const before = Deno.env.get(name);
  Deno.env.set(name, value);
  try {
    return await start();
  } finally {
    if (before === undefined) Deno.env.delete(name);
    else Deno.env.set(name, before);
  }
}

/** Runs agent.ts with `args` to its end (a usage error). */
async function runAgent(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...AGENT_RUN_ARGS, "--listen", "127.0.0.1:0", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(STARTUP_MS),
  }).output();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

Deno.test("agent.ts: --tls-cert and --tls-key go together, and an unreadable or wrong file exits 2 naming it", async () => {
  await using ca = await createTestCa();
  const agent = await ca.issue("agent");
  const other = await ca.issue("other");
  const cases: [string[], RegExp][] = [
    [["--tls-cert", agent.certFile], /--tls-cert and --tls-key go together/],
    [["--tls-key", agent.keyFile], /--tls-cert and --tls-key go together/],
    [
      ["--tls-cert", `${ca.dir}/missing.pem`, "--tls-key", agent.keyFile],
      /--tls-cert: cannot read '.*\/missing\.pem'/,
    ],
    [
      ["--tls-cert", agent.certFile, "--tls-key", ca.dir],
      /--tls-key: cannot read '.*discover-tls-[^']*'/,
    ],
    [
      ["--tls-cert", agent.keyFile, "--tls-key", agent.certFile],
      /--tls-cert '.*agent\.key' and --tls-key '.*agent\.pem' must be a PEM certificate chain .*: No certificates found/,
    ],
    [
      ["--tls-cert", agent.certFile, "--tls-key", other.keyFile],
      /--tls-key '.*other\.key' must be .*KeyMismatch/,
    ],
  ];
  const results = await Promise.all(cases.map(([args]) => runAgent(args)));
  cases.forEach(([args, message], i) => {
    const { code, stdout, stderr } = results[i];
    const label = args.join(" ");
    assert.equal(code, 2, `${label}: exit code ${code}; stderr: ${stderr}`);
    assert.match(stderr, message, label);
    assert.match(stderr, /--help/, label);
    assert.doesNotMatch(stdout, /listening/, label);
  });
});

Deno.test("startAgent refuses a key that is not the certificate's, naming 'tls'", async () => {
  await using ca = await createTestCa();
  const agent = await ca.issue("agent");
  const other = await ca.issue("other");
  await assert.rejects(
    startAgent({ port: 0, tls: { cert: agent.cert, key: other.key } }),
    (error) =>
      error instanceof TypeError && /^'tls' must hold/.test(error.message) &&
      !error.message.includes("PRIVATE KEY"),
  );
});

Deno.test("agent.ts --tls-cert --tls-key serves https:// and wss:// only", async () => {
  await using ca = await createTestCa();
  const leaf = await ca.issue("agent");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...AGENT_RUN_ARGS,
      "--listen",
      "127.0.0.1:0",
      "--advertise-host",
      "127.0.0.1",
      "--tls-cert",
      leaf.certFile,
      "--tls-key",
      leaf.keyFile,
      // The URL is printed on standard output at this level.
      "--log-level",
      "warn",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), STARTUP_MS);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  using client = Deno.createHttpClient({ caCerts: [ca.ca] });
  try {
    let out = "";
    let port: string | undefined;
    while (port === undefined) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
      port = /^discoverd listening on wss:\/\/127\.0\.0\.1:(\d+)\/$/m.exec(
        out,
      )?.[1];
    }
    clearTimeout(timer);
    assert.ok(port, `no wss:// listening line in: ${out}`);
    const health = await fetch(`https://127.0.0.1:${port}/healthz`, {
      client,
    });
    assert.equal(health.status, 200);
    const body = await health.json();
    assert.equal(body.status, "ok");
    assert.equal(body.tls, true);
    // The dashboard and the client module, by name too.
    const page = await fetch(`https://localhost:${port}/`, { client });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    // Plain HTTP on the TLS port fails: it is not served at all.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
    // The Host check holds over TLS, in HTTP/1.1 and in HTTP/2 (where a
    // browser names the host in :authority, with no Host header).
    for (const http2 of [false, true]) {
      using raw = Deno.createHttpClient({
        caCerts: [ca.ca],
        allowHost: true,
        http1: !http2,
        http2,
      });
      const url: string = `https://127.0.0.1:${port}/healthz`;
      const evil: Response = await fetch(url, {
        client: raw,
        headers: { host: `rebind.attacker.test:${port}` },
      });
      assert.equal(evil.status, 403, `HTTP/${http2 ? 2 : 1.1}`);
      assert.match(await evil.text(), /'rebind\.attacker\.test' is not a name/);
      const own = await fetch(url, { client: raw });
      assert.equal(own.status, 200, `HTTP/${http2 ? 2 : 1.1}`);
      await own.body?.cancel();
    }
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0, await stderr);
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await child.status;
    await reader.cancel().catch(() => {});
    await stderr;
  }
});

Deno.test({
  name:
    "Deno: a client trusts the agent's CA through Deno.createHttpClient, or DENO_CERT",
  // The registrant process's pipes outlive the step that reads them.
  sanitizeResources: false,
  async fn(t) {
    await using ca = await createTestCa();
    const leaf = await ca.issue("agent");
    await using agent = await startAgent({
      port: 0,
      advertiseHost: "127.0.0.1",
      tls: { cert: leaf.cert, key: leaf.key },
      logLevel: "error",
    });
    assert.match(agent.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/);
    using httpClient = Deno.createHttpClient({ caCerts: [ca.ca] });
    const WebSocket = trustingWebSocket(httpClient);
    const fast = { reconnect: false as const, requestTimeout: 5000 };

    await t.step(
      "without the CA, or over ws://, it cannot connect",
      async () => {
        await assert.rejects(connect(agent.url, fast), /could not connect/);
        const plain = agent.url.replace(/^wss:/, "ws:");
        await assert.rejects(
          connect(plain, { ...fast, WebSocket }),
          /could not connect/,
        );
      },
    );

    await using watcher = await connect(agent.url, { ...fast, WebSocket });
    const set = await watcher.services("tls-deno");
    const updates = set.updates();

    await t.step(
      "a WebSocket with Deno.createHttpClient({ caCerts })",
      async () => {
        {
          await using publisher = await connect(
            `wss://localhost:${agent.port}/`,
            { ...fast, WebSocket },
          );
          await publisher.register("tls-deno", 5001, {
            attrs: { via: "caCerts" },
          });
          const up = await nextWithin(updates);
          assert.equal(up.kind, "up");
          assert.deepEqual(up.instance.attrs, { via: "caCerts" });
        }
        // Closed cleanly: its instance goes down at once.
        assert.equal((await nextWithin(updates)).kind, "down");
      },
    );

    await t.step("DENO_CERT in a client process's environment", async () => {
      await using registrant = await withEnv(
        "DENO_CERT",
        ca.caFile,
        () => spawnRegistrant(agent.url),
      );
      await registrant.run("register tls-deno 5002 via=DENO_CERT");
      const up = await nextWithin(updates);
      assert.equal(up.kind, "up");
      assert.equal(up.instance.addr, "127.0.0.1:5002");
      assert.deepEqual(up.instance.attrs, { via: "DENO_CERT" });
    });
    await set.close();
  },
});

Deno.test("Node.js: npm ws with 'ca', and the global WebSocket with NODE_EXTRA_CA_CERTS", async () => {
  await using ca = await createTestCa();
  const leaf = await ca.issue("agent");
  const dir = await Deno.makeTempDir({ prefix: "discover-node-tls-" });
  try {
    // The bundled client as the agent serves it at /client.js
    // (tools/bundle.ts; bundle_test.ts keeps it fresh).
    const module = `${dir}/discover.mjs`;
    await Deno.writeTextFile(module, CLIENT_JS);
    await installWs();
    const flags = await websocketFlag();
    await using agent = await startAgent({
      port: 0,
      advertiseHost: "127.0.0.1",
      tls: { cert: leaf.cert, key: leaf.key },
      logLevel: "error",
    });
    // Only these: NODE_EXTRA_CA_CERTS must be unset in the first run.
    const env = {
      PATH: Deno.env.get("PATH") ?? "",
      DISCOVER_URL: agent.url,
      DISCOVER_CLIENT: module,
      DISCOVER_CA: ca.caFile,
    };
    // Without NODE_EXTRA_CA_CERTS: ws with 'ca' works, the others refuse;
    // with it: the global WebSocket works too.
    const runs = [[undefined, 3], [ca.caFile, 2]] as const;
    const results = await Promise.all(runs.map(([extra]) =>
      run(NODE, [
        ...flags,
        "--test",
        "--test-reporter=tap",
        `${NODE_DIR}tls_client.mjs`,
      ], {
        env: extra === undefined ? env : { ...env, NODE_EXTRA_CA_CERTS: extra },
        clearEnv: true,
      })
    ));
    runs.forEach(([extra, passes], i) => {
      const { code, out } = results[i];
      const label = `NODE_EXTRA_CA_CERTS ${extra ? "set" : "unset"}`;
      assert.equal(tapCount(out, "fail"), 0, `${label}:\n${out}`);
      assert.equal(tapCount(out, "pass"), passes, `${label}:\n${out}`);
      assert.equal(code, 0, `${label}: node --test exited with ${code}`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** How a Chromium trusts the agent's certificate. */
type ChromiumTrust =
  /** Accepts this one certificate by its public key's hash. */
  | { spki: string }
  /** Trusts the CA, imported into the NSS database under this HOME. */
  | { home: string };

/** Headless Chromium trusting the agent. */
function launchTrustingChromium(trust: ChromiumTrust) {
  return launchChromium({
    args: "spki" in trust
      ? [`--ignore-certificate-errors-spki-list=${trust.spki}`]
      : [],
    ...("home" in trust
      ? { env: { ...Deno.env.toObject(), HOME: trust.home } }
      : {}),
  });
}

/** Runs certutil (libnss3-tools) with `args`; fails on a non-zero exit. */
async function certutil(args: string[]): Promise<void> {
  const out = await new Deno.Command("certutil", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(
    out.code,
    0,
    `certutil ${args.join(" ")}: ${decoder.decode(out.stderr)}`,
  );
}

Deno.test({
  name:
    "Chromium: the dashboard over https:// with the agent's certificate trusted, live over wss://",
  // Playwright keeps its pipe to the browser and timers across steps.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using ca = await createTestCa();
    const leaf = await ca.issue("agent");
    await using agent = await startAgent({
      port: 0,
      advertiseHost: "127.0.0.1",
      tls: { cert: leaf.cert, key: leaf.key },
      logLevel: "error",
    });
    const dashboard = agent.url.replace(/^wss:/, "https:");
    using httpClient = Deno.createHttpClient({ caCerts: [ca.ca] });
    await using publisher = await connect(agent.url, {
      WebSocket: trustingWebSocket(httpClient),
    });

    /** Loads the dashboard and sees a registration arrive over wss://. */
    const dashboardIsLive = async (trust: ChromiumTrust, port: number) => {
      await using browser = await launchTrustingChromium(trust);
      const page = await browser.context.newPage();
      await page.goto(dashboard);
      await page.waitForSelector('#connection[data-state="connected"]');
      assert.equal(new URL(page.url()).protocol, "https:");
      await publisher.register("tls-browser", port, {
        attrs: { via: "wss" },
      });
      const row = `tr[data-id="tls-browser/127.0.0.1:${port}"]`;
      await page.waitForSelector(`${row}[data-state="up"]`);
      assert.match(await page.textContent(`${row} .attrs`) ?? "", /via=wss/);
    };

    await t.step(
      "the certificate accepted by --ignore-certificate-errors-spki-list",
      () => dashboardIsLive({ spki: leaf.spki }, 8443),
    );

    await t.step({
      name: "the CA trusted in the NSS database (certutil)",
      async fn() {
        const home = await Deno.makeTempDir({ prefix: "discover-nss-" });
        try {
          const db = `sql:${home}/.pki/nssdb`;
          await Deno.mkdir(`${home}/.pki/nssdb`, { recursive: true });
          await certutil(["-d", db, "-N", "--empty-password"]);
          await certutil([
            "-d",
            db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "discover test CA",
            "-i",
            ca.caFile,
          ]);
          await dashboardIsLive({ home }, 8444);
        } finally {
          await Deno.remove(home, { recursive: true });
        }
      },
    });

    await t.step("not trusted: Chromium refuses the certificate", async () => {
      await using browser = await launchChromium();
      const page = await browser.context.newPage();
      await assert.rejects(page.goto(dashboard), /ERR_CERT_AUTHORITY_INVALID/);
    });
  },
});
