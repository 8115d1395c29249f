// Copyright the discover authors. BSD-3-Clause license.

/**
 * The dashboard (`agent/dashboard/page.ts`) in Debian's headless Chromium
 * (`/usr/bin/chromium`, or `CHROMIUM_PATH`), driven by `playwright-core`,
 * against an agent started in-process: critical instances with their
 * note, the header, down instances kept for `?keepDown` seconds, and what
 * the page says once the agent is gone and when it is back; and an
 * agent whose etcd is killed and restarted; and an agent with access rules,
 * where the page asks for a token and keeps it in the tab's sessionStorage;
 * and the owner of each instance, a client cut off behind a TCP proxy
 * whose instance waits out its grace TTL, and an admin's force-deregister.
 *
 * Bounds: Playwright's waits are 30 s (`tests/_browser.ts`); the page
 * reads owners every 5 s, so a lost client shows within 10 s or so. The
 * agent's TTL is 60 s where a lost client must stay listed for a few steps.
 *
 * With `DISCOVER_SCREENSHOTS=1` it also writes `docs/dashboard-live.png`,
 * `docs/dashboard-grace.png` and `docs/dashboard-disconnected.png` (the
 * README's pictures).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { startAgent } from "../agent/mod.ts";
import { VERSION } from "../agent/version.ts";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { launchChromium } from "./_browser.ts";
import { healthServer } from "./_health_server.ts";
import { tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";
import { tokenHash } from "./_tokens.ts";

const options = {
  // Playwright keeps its pipe to the browser and timers across steps.
  sanitizeOps: false,
  sanitizeResources: false,
};

const SCREENSHOTS = Deno.env.get("DISCOVER_SCREENSHOTS") === "1";

async function screenshot(page: Page, name: string, selector?: string) {
  if (!SCREENSHOTS) return;
  const path = new URL(`../docs/${name}`, import.meta.url).pathname;
  if (selector === undefined) {
    await page.screenshot({ path, fullPage: true });
  } else {
    await page.locator(selector).screenshot({ path });
  }
}

const row = (id: string) => `tr[data-id="${id}"]`;
const text = async (page: Page, selector: string) =>
  (await page.textContent(selector))?.replace(/\s+/g, " ").trim();
const CLOCK = /\d\d:\d\d:\d\d/;

/** Records every state and text of `#connection` from now on, in `seen`. */
const RECORD_CONNECTION = `(() => {
  const seen = (globalThis.seen = []);
  const node = document.getElementById("connection");
  new MutationObserver(() => {
    seen.push(node.dataset.state + ": " + node.textContent);
  }).observe(node, {
    attributes: true,
    childList: true,
    characterData: true,
    subtree: true,
  });
})()`;

Deno.test(
  "dashboard: health, header, down instances, disconnection",
  options,
  async (t) => {
    await using target = healthServer();
    const agentOptions = {
      hostname: "127.0.0.1",
      advertiseHost: "127.0.0.1",
      logLevel: "error",
    } as const;
    await using agent = await startAgent({ ...agentOptions, port: 0 });
    const http = agent.url.replace(/^ws/, "http");
    await using browser = await launchChromium();
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1280, height: 620 });
    // A second page that keeps down instances for 1 s only.
    const brief = await browser.context.newPage();
    const requested: string[] = [];
    page.on("request", (request) => void requested.push(request.url()));

    await t.step("loading, then the empty state", async () => {
      const html = await (await fetch(http)).text();
      assert.match(html, /<span id="connection" data-state="loading">/);
      assert.match(html, /<p id="loading">Loading…<\/p>/);
      await page.goto(http);
      await page.waitForSelector('#connection[data-state="connected"]');
      assert.equal(await text(page, "#empty"), "No instances registered yet.");
      assert.match(
        await text(page, "#totals") ?? "",
        /^0 services · 0 instances · 0 passing · 0 critical/,
      );
    });

    await using client = await connect(agent.url);
    await client.register("web", 10000, { attrs: { zone: "b" } });
    await client.register("web", 8080, {
      attrs: { zone: "a", version: "1.4.2" },
    });
    await client.register("web", 8081, {
      attrs: { zone: "b", version: "1.4.2" },
    });
    await client.register("cache", 6379, { attrs: { role: "primary" } });
    await client.register("api", target.port, {
      attrs: { zone: "a" },
      check: { http: `http://127.0.0.1:${target.port}/healthz`, interval: 0.2 },
    });
    const api = row(`api/127.0.0.1:${target.port}`);

    await t.step("the header: version, address and totals", async () => {
      await page.waitForSelector(`${api}[data-health="passing"]`);
      assert.equal(await text(page, "#version"), `v${VERSION}`);
      assert.equal(
        await text(page, "#address"),
        `127.0.0.1:${agent.port} · advertises 127.0.0.1`,
      );
      await page.waitForSelector(
        '#totals:has-text("3 services · 5 instances · 5 passing · 0 critical")',
      );
      assert.match(await text(page, "#status") ?? "", /^backend memory · /);
      // Sorted by service, then by address (ports as numbers).
      assert.deepEqual(
        await page.$$eval("section", (s) => s.map((n) => n.dataset.service)),
        ["api", "cache", "web"],
      );
      assert.deepEqual(
        await page.$$eval(
          'section[data-service="web"] tr[data-id]',
          (rows) => rows.map((r) => r.querySelector(".addr")!.textContent),
        ),
        ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:10000"],
      );
      // Each service's leader: its oldest passing instance, 10000 for web.
      assert.deepEqual(
        await page.$$eval(
          'section[data-service="web"] tr[data-leader]',
          (rows) => rows.map((r) => r.querySelector(".addr")!.textContent),
        ),
        ["127.0.0.1:10000"],
      );
      assert.equal(
        await text(page, 'tr[data-id="web/127.0.0.1:10000"] .leader'),
        "leader",
      );
      // The owner of each: the test's client, connected.
      assert.deepEqual(
        await page.$$eval(
          'section[data-service="web"] th',
          (th) => th.map((n) => n.textContent),
        ),
        ["address", "health", "owner", "attributes", "age"],
      );
      await page.waitForSelector("tr[data-id]:not([data-client])", {
        state: "detached",
      });
      const owned = await page.$$eval("tr[data-id]", (rows) =>
        rows.map((r) => [
          r.querySelector(".owner-id")!.textContent,
          r.dataset.client,
        ]));
      assert.equal(owned.length, 5);
      for (const [owner, client] of owned) {
        assert.match(owner ?? "", /^c:[\w-]{8}$/);
        assert.equal(client, "connected");
      }
      assert.equal(new Set(owned.map(([owner]) => owner)).size, 1);
      // No token in use: nothing to force-deregister with.
      assert.equal(await page.$(".deregister"), null);
      // The favicon is inline: the page loads nothing but itself and /client.js.
      assert.match(
        await page.getAttribute("#favicon", "href") ?? "",
        /^data:image\/svg\+xml,/,
      );
      assert.deepEqual(
        requested.filter((url) => !url.startsWith("data:")),
        [http, `${http}client.js`],
      );
    });

    await t.step("a critical instance is shown with its note", async () => {
      target.set(500);
      await page.waitForSelector(`${api}[data-health="critical"]`);
      assert.equal(await text(page, `${api} .health .badge`), "critical");
      assert.equal(await text(page, `${api} .note`), "HTTP 500");
      // A critical instance leads nothing: api has no leader now.
      assert.equal(await page.$(`${api}[data-leader]`), null);
      assert.equal(
        await text(page, 'section[data-service="api"] .count'),
        "0 up · 1 critical",
      );
      await page.waitForSelector(
        '#totals:has-text("5 instances · 4 passing · 1 critical")',
      );
      await page.waitForSelector(
        '#status:has-text("(4 passing, 1 critical) and runs 1 check")',
      );
    });

    await t.step(
      "an unregistered instance shows as down with its time, then goes",
      async () => {
        await brief.goto(`${http}?keepDown=1`);
        await brief.waitForSelector('#connection[data-state="connected"]');
        await brief.waitForSelector(`${api}[data-health="critical"]`);
        const gone = row("web/127.0.0.1:8081");
        await client.unregister("web", 8081);
        for (const p of [page, brief]) {
          await p.waitForSelector(`${gone}[data-state="down"]`);
          assert.match(await text(p, `${gone} .down-at`) ?? "", CLOCK);
          assert.equal(await text(p, `${gone} .age`), "down");
        }
        await page.waitForSelector('#totals:has-text("4 instances")');
        assert.match(
          await text(page, "#totals") ?? "",
          /1 down \(shown 60 s\)/,
        );
        assert.equal(
          await text(page, 'section[data-service="web"] .count'),
          "2 up",
        );
        // Dropped after its keep time; kept where the keep time is longer.
        await brief.waitForSelector(gone, { state: "detached" });
        assert.match(
          await text(brief, "#totals") ?? "",
          /0 down \(shown 1 s\)/,
        );
        assert.equal(await page.getAttribute(gone, "data-state"), "down");
      },
    );

    await t.step("an invalid keepDown is ignored, and said so", async () => {
      await brief.goto(`${http}?keepDown=soon`);
      await brief.waitForSelector('#connection[data-state="connected"]');
      assert.match(
        await text(brief, "#notice") ?? "",
        /^Ignored keepDown="soon": it must be a number of seconds from 0 to 86400/,
      );
      await brief.close();
    });

    await t.step(
      "once the agent is gone: disconnected and stale, never connected",
      async () => {
        await page.evaluate(RECORD_CONNECTION);
        await agent.shutdown();
        await page.waitForSelector('#connection[data-state="disconnected"]');
        await page.waitForSelector("tr[data-id]:not([data-stale])", {
          state: "detached",
        });
        assert.match(
          await text(page, "#connection") ?? "",
          /^connection to the agent lost at \d\d:\d\d:\d\d/,
        );
        assert.match(
          await text(page, `${api} .stale`) ?? "",
          /^stale since \d\d:\d\d:\d\d$/,
        );
        assert.match(await text(page, "#banner") ?? "", /stale since/);
        // The page keeps failing to reconnect for a while (the client retries
        // with backoff from 0.1 s); it never claims to be connected meanwhile.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        const body = await page.innerText("body");
        assert.doesNotMatch(body, /\bconnected\b/i);
        const seen = await page.evaluate(() =>
          (globalThis as unknown as { seen: string[] }).seen
        );
        assert.ok(seen.length > 0);
        for (const state of seen) assert.match(state, /^disconnected: /);
        assert.equal(
          await page.getAttribute(`${api}`, "data-health"),
          "critical",
        );
        await screenshot(page, "dashboard-disconnected.png");
      },
    );

    await t.step(
      "an agent back at the address makes the page current again",
      async () => {
        await using again = await startAgent({
          ...agentOptions,
          port: agent.port,
        });
        // The client registers its instances again, and its check runs again.
        await page.waitForSelector('#connection[data-state="connected"]');
        await page.waitForSelector(`${api}[data-health="critical"]`);
        await page.waitForSelector("tr[data-stale]", { state: "detached" });
        assert.equal(await page.isHidden("#banner"), true);
        target.set(200);
        await page.waitForSelector(`${api}[data-health="passing"]`);
        await page.waitForSelector(
          '#totals:has-text("3 services · 4 instances · 4 passing · 0 critical")',
        );
        await client.close();
        await again.shutdown();
      },
    );
  },
);

Deno.test(
  "dashboard: an agent whose backend is unreachable says so",
  options,
  async () => {
    await using cluster = await startEtcd();
    await using agent = await spawnAgent([
      "--backend",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints[0],
      "--etcd-prefix",
      `/dashboard-${crypto.randomUUID().slice(0, 8)}/`,
      "--log-level",
      "error",
    ]);
    await using client = await connect(agent.url);
    await client.register("web", "10.0.0.1:80");
    const web = row("web/10.0.0.1:80");
    await using browser = await launchChromium();
    const page = await browser.context.newPage();
    await page.goto(agent.http);
    await page.waitForSelector('#connection[data-state="connected"]');
    await page.waitForSelector(`${web}[data-health="passing"]`);

    await cluster.members[0].kill();
    // The agent notices within its etcd deadlines (3 s calls, keep-alive).
    await page.waitForSelector('#connection[data-state="backend-unreachable"]');
    assert.equal(await text(page, "#connection"), "backend etcd unreachable");
    await page.waitForSelector(`${web}[data-stale]`);
    assert.match(await text(page, `${web} .stale`) ?? "", /^stale since /);
    assert.match(
      await text(page, "#banner") ?? "",
      /^The agent cannot reach its backend \(etcd\)\. Showing the last known state, stale since \d\d:\d\d:\d\d\.$/,
    );
    assert.match(
      await text(page, "#status") ?? "",
      /backend etcd \(unreachable\)/,
    );
    assert.doesNotMatch(await page.innerText("body"), /\bconnected\b/i);

    await cluster.members[0].restart();
    await page.waitForSelector('#connection[data-state="connected"]');
    await page.waitForSelector("tr[data-stale]", { state: "detached" });
    assert.equal(await page.isHidden("#banner"), true);
    assert.doesNotMatch(await text(page, "#status") ?? "", /unreachable/);
  },
);

Deno.test(
  "dashboard: a token prompt for an agent with access rules",
  options,
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "discover-dashboard-acl-" });
    try {
      const viewer = `view-${crypto.randomUUID()}`;
      const ops = `ops-${crypto.randomUUID()}`;
      const wrong = `wrong-${crypto.randomUUID()}`;
      const acl = `${dir}/acl.json`;
      await Deno.writeTextFile(
        acl,
        JSON.stringify({
          default: "deny",
          tokens: [
            {
              name: "viewer",
              sha256: await tokenHash(viewer),
              rules: [{ service: "*", access: "read" }],
            },
            {
              name: "ops",
              sha256: await tokenHash(ops),
              rules: [{ service: "*", access: "admin" }],
            },
          ],
        }),
      );
      await using agent = await startAgent({
        hostname: "127.0.0.1",
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        port: 0,
        acl,
      });
      const http = agent.url.replace(/^ws/, "http");
      await using client = await connect(agent.url, { token: ops });
      await client.register("web", 8080, { attrs: { zone: "a" } });
      await client.register("cache", 6379);
      const web = row("web/127.0.0.1:8080");

      await using browser = await launchChromium();
      const page = await browser.context.newPage();
      // Every URL the page asks for: documents, scripts and WebSockets.
      const urls: string[] = [];
      page.on("request", (request) => void urls.push(request.url()));
      page.on("websocket", (socket) => void urls.push(socket.url()));
      const errors: string[] = [];
      page.on("pageerror", (error) => void errors.push(error.message));
      const stored = () =>
        page.evaluate(() => ({
          session: sessionStorage.getItem("discover.token"),
          local: localStorage.length,
        }));

      await t.step(
        "without a token: the prompt, and nothing else",
        async () => {
          await page.goto(http);
          await page.waitForSelector(
            '#auth[data-reason="empty"]:not([hidden])',
          );
          assert.equal(await page.$$eval("tr[data-id]", (r) => r.length), 0);
          assert.equal(await page.getAttribute("#token", "type"), "password");
          // No name: a form sent without the script would carry no token.
          assert.equal(await page.getAttribute("#token", "name"), null);
          assert.equal(await page.isHidden("#token-state"), true);
          assert.deepEqual(await stored(), { session: null, local: 0 });
        },
      );

      await t.step(
        "a wrong token: the agent's message; the prompt stays",
        async () => {
          await page.fill("#token", wrong);
          await page.click("#auth-submit");
          await page.waitForSelector("#auth-error:not([hidden])");
          assert.match(await text(page, "#auth-error") ?? "", /^unknown token/);
          assert.equal(await page.isVisible("#auth"), true);
          assert.equal(await page.inputValue("#token"), "");
          assert.equal(await page.$$eval("tr[data-id]", (r) => r.length), 0);
          assert.deepEqual(await stored(), { session: null, local: 0 });
        },
      );

      await t.step(
        "the right token: the instances, the token kept in the tab",
        async () => {
          await page.fill("#token", viewer);
          await page.press("#token", "Enter");
          await page.waitForSelector(`${web}[data-health="passing"]`);
          await page.waitForSelector(row("cache/127.0.0.1:6379"));
          await page.waitForSelector("#auth", { state: "hidden" });
          assert.equal(await page.isHidden("#auth-error"), true);
          assert.match(await text(page, "#token-state") ?? "", /^token in use/);
          assert.equal(
            await page.getAttribute("#connection", "data-state"),
            "connected",
          );
          assert.deepEqual(await stored(), { session: viewer, local: 0 });
          // Live: a new instance shows up.
          await client.register("web", 8081);
          await page.waitForSelector(row("web/127.0.0.1:8081"));
        },
      );

      await t.step("a reload uses the token again", async () => {
        await page.reload();
        await page.waitForSelector(`${web}[data-health="passing"]`);
        assert.equal(await page.isHidden("#auth"), true);
        assert.equal(await page.isVisible("#token-state"), true);
        // Another tab has its own sessionStorage: it asks again.
        const other = await browser.context.newPage();
        await other.goto(http);
        await other.waitForSelector("#auth:not([hidden])");
        assert.equal(await other.$$eval("tr[data-id]", (r) => r.length), 0);
        await other.close();
      });

      await t.step(
        "forget token: back to the prompt, nothing kept",
        async () => {
          await page.click("#forget-token");
          await page.waitForSelector(web, { state: "detached" });
          await page.waitForSelector("#auth:not([hidden])");
          assert.equal(await page.isHidden("#token-state"), true);
          assert.deepEqual(await stored(), { session: null, local: 0 });
        },
      );

      await t.step(
        "a kept token the agent refuses is dropped, and said so",
        async () => {
          await page.evaluate(
            (value) => sessionStorage.setItem("discover.token", value),
            wrong,
          );
          await page.reload();
          await page.waitForSelector("#auth-error:not([hidden])");
          assert.match(await text(page, "#auth-error") ?? "", /^unknown token/);
          assert.deepEqual(await stored(), { session: null, local: 0 });
          await page.fill("#token", viewer);
          await page.click("#auth-submit");
          await page.waitForSelector(`${web}[data-health="passing"]`);
        },
      );

      await t.step("no token ever appears in a URL", () => {
        assert.ok(urls.some((url) => url.startsWith("ws://")));
        for (const url of urls) {
          for (const secret of [viewer, wrong, ops]) {
            assert.ok(!url.includes(secret), `${url} holds a token`);
          }
        }
        assert.ok(!page.url().includes(viewer));
        assert.deepEqual(errors, []);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "dashboard: owners, a lost client in its grace TTL, an admin's force-deregister",
  options,
  async (t) => {
    await using target = healthServer();
    const dir = await Deno.makeTempDir({
      prefix: "discover-dashboard-owners-",
    });
    const proxy = tcpProxy(1); // its target is set once the agent listens
    try {
      const deployer = `deploy-${crypto.randomUUID()}`;
      const viewer = `view-${crypto.randomUUID()}`;
      const ops = `ops-${crypto.randomUUID()}`;
      const acl = `${dir}/acl.json`;
      const token = async (name: string, secret: string, access: string) => ({
        name,
        sha256: await tokenHash(secret),
        rules: [{ service: "*", access }],
      });
      await Deno.writeTextFile(
        acl,
        JSON.stringify({
          default: "deny",
          tokens: [
            await token("deployer", deployer, "write"),
            await token("viewer", viewer, "read"),
            await token("ops", ops, "admin"),
          ],
        }),
      );
      await using agent = await startAgent({
        hostname: "127.0.0.1",
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        port: 0,
        acl,
        ttl: 60,
      });
      proxy.target = agent.port;
      const http = agent.url.replace(/^ws/, "http");
      await using client = await connect(agent.url, { token: deployer });
      await client.register("web", 8080, {
        attrs: { zone: "a", version: "1.4.2" },
      });
      await client.register("web", 8081, {
        attrs: { zone: "b", version: "1.4.2" },
      });
      target.set(500);
      await client.register("api", target.port, {
        attrs: { zone: "a" },
        check: {
          http: `http://127.0.0.1:${target.port}/healthz`,
          interval: 0.2,
        },
      });
      // Another client, behind a proxy that will cut it off.
      await using remote = await connect(proxy.url, { token: deployer });
      await remote.register("web", 8082, { attrs: { zone: "c" } });
      await remote.register("cache", 6379, { attrs: { role: "primary" } });
      const web = row("web/127.0.0.1:8080");
      const far = row("web/127.0.0.1:8082");
      const cache = row("cache/127.0.0.1:6379");
      const api = row(`api/127.0.0.1:${target.port}`);

      await using browser = await launchChromium();
      const page = await browser.context.newPage();
      await page.setViewportSize({ width: 1280, height: 560 });
      const errors: string[] = [];
      page.on("pageerror", (error) => void errors.push(error.message));
      const useToken = async (secret: string) => {
        await page.waitForSelector("#auth:not([hidden])");
        await page.fill("#token", secret);
        await page.click("#auth-submit");
        await page.waitForSelector(`${web}[data-client="connected"]`);
      };

      await t.step("each instance's owner, with its token name", async () => {
        await page.goto(http);
        await useToken(viewer);
        await page.waitForSelector(`${api}[data-health="critical"]`);
        for (const id of [web, far, cache, api]) {
          await page.waitForSelector(`${id}[data-client="connected"]`);
          assert.match(
            await text(page, `${id} .owner-id`) ?? "",
            /^c:[\w-]{8}$/,
          );
          assert.equal(await text(page, `${id} .token`), "deployer");
        }
        // One owner per client: the proxied client's instances are another's.
        const ownerOf = (id: string) => page.getAttribute(id, "data-owner");
        assert.equal(
          await ownerOf(row("web/127.0.0.1:8081")),
          await ownerOf(web),
        );
        assert.equal(await ownerOf(cache), await ownerOf(far));
        assert.notEqual(await ownerOf(far), await ownerOf(web));
        // Every client is connected: no button anywhere.
        assert.equal(await page.$(".deregister"), null);
      });

      await t.step(
        "a client cut off: its rows wait out the TTL, counting down",
        async () => {
          proxy.refuse(); // cut, and no way back
          for (const id of [far, cache]) {
            await page.waitForSelector(`${id}[data-client="lost"]`);
          }
          const left = async () => {
            const shown = await text(page, `${far} .grace`) ?? "";
            const match = /^client lost, goes in (\d+)s$/.exec(shown);
            assert.ok(match, shown);
            return Number(match[1]);
          };
          const first = await left();
          assert.ok(first > 0 && first <= 60, `${first} s left of a 60 s TTL`);
          // It counts down each second.
          await until(async () => await left() < first, "the countdown moves");
          // Still listed, still up, and counted apart.
          assert.equal(await page.getAttribute(far, "data-state"), "up");
          assert.equal(
            await page.getAttribute(web, "data-client"),
            "connected",
          );
          await page.waitForSelector('#totals:has-text("2 clients lost")');
          assert.equal(
            await text(page, 'section[data-service="web"] .count'),
            "3 up · 1 client lost",
          );
          // A token is in use: the lost rows, and only they, have a button.
          assert.deepEqual(
            await page.$$eval(
              "tr:has(.deregister)",
              (rows) => rows.map((r) => r.dataset.id),
            ),
            ["cache/127.0.0.1:6379", "web/127.0.0.1:8082"],
          );
          await screenshot(
            page,
            "dashboard-grace.png",
            'section[data-service="web"]',
          );
        },
      );

      await t.step(
        "a token without admin access: the refusal, on the row",
        async () => {
          let asked = "";
          page.once("dialog", (dialog) => {
            asked = dialog.message();
            void dialog.accept();
          });
          await page.click(`${cache} .deregister`);
          await page.waitForSelector(`${cache} .action-error`);
          assert.match(asked, /^Force-deregister cache 127\.0\.0\.1:6379\?/);
          assert.match(
            await text(page, `${cache} .action-error`) ?? "",
            /^Refused \(this token may not\): .*admin access to 'cache'.*token 'viewer'/,
          );
          assert.equal(await page.getAttribute(cache, "data-state"), "up");
          assert.equal((await client.lookup("cache")).length, 1);
          // Dismissed: nothing is asked of the agent.
          page.once("dialog", (dialog) => void dialog.dismiss());
          await page.click(`${far} .deregister`);
          assert.equal(await page.$(`${far} .action-error`), null);
          assert.equal((await client.lookup("web")).length, 3);
        },
      );

      await t.step("an admin removes a lost client's instance", async () => {
        await page.click("#forget-token");
        await useToken(ops);
        await page.waitForSelector(`${cache}[data-client="lost"]`);
        page.once("dialog", (dialog) => void dialog.accept());
        await page.click(`${cache} .deregister`);
        await page.waitForSelector(`${cache}[data-state="down"]`);
        assert.equal(await page.$(`${cache} .action-error`), null);
        assert.deepEqual(await client.lookup("cache"), []);
        await page.waitForSelector('#totals:has-text("1 client lost")');
        // The other lost instance waits out its TTL; the live ones stay.
        assert.equal(await page.getAttribute(far, "data-client"), "lost");
        assert.equal(await page.getAttribute(web, "data-leader"), "true");
        assert.deepEqual(errors, []);
        await screenshot(page, "dashboard-live.png");
      });
    } finally {
      proxy.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
