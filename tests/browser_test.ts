// Copyright the discover authors. BSD-3-Clause license.

/**
 * The dashboard and the client in a real browser: Debian's headless
 * Chromium (`/usr/bin/chromium`, or `CHROMIUM_PATH`) driven by
 * `playwright-core`, against an agent process. The registrations come from
 * another process (`_registrant.ts`), so every change reaches the page over
 * the agent, live.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { launchChromium, servePage, spawnRegistrant } from "./_browser.ts";

/** Probes the agent from another origin: a raw WebSocket, then the client. */
const PROBE_PAGE = `<!doctype html>
<title>probe</title>
<script type="module">
const agent = new URLSearchParams(location.search).get("agent");
const result = {};
const ws = new WebSocket(agent);
result.socket = await new Promise((resolve) => {
  ws.onopen = () => resolve("open");
  ws.onclose = (event) => resolve("closed " + event.code);
});
ws.close();
try {
  const { connect } = await import(agent.replace(/^ws/, "http") + "client.js");
  const client = await connect(agent);
  await client.register("from-page", 9000, { attrs: { origin: location.origin } });
  const set = await client.services("from-page");
  result.client = set.online().map((i) => i.addr + " " + i.attrs.origin).join();
  result.catalog = (await client.catalog()).services.map((s) => s.service).join();
} catch (error) {
  result.client = "error: " + error.message;
}
window.result = result;
</script>`;

const options = {
  // Playwright keeps its pipe to the browser and timers across steps.
  sanitizeOps: false,
  sanitizeResources: false,
};

async function probe(page: Page, pageUrl: string, agentUrl: string) {
  await page.goto(`${pageUrl}?agent=${encodeURIComponent(agentUrl)}`);
  await page.waitForFunction(() => "result" in globalThis);
  return await page.evaluate(() =>
    (globalThis as unknown as { result: Record<string, string> }).result
  );
}

const row = (id: string) => `tr[data-id="${id}"]`;

Deno.test(
  "browser: dashboard, client module and the Origin check",
  options,
  async (t) => {
    await using allowed = servePage(PROBE_PAGE);
    await using foreign = servePage(PROBE_PAGE);
    await using agent = await spawnAgent(["--allow-origin", allowed.origin]);
    await using browser = await launchChromium();
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1000, height: 640 });

    await t.step(
      "the dashboard shows registrations of another process, live",
      async () => {
        await using registrant = await spawnRegistrant(agent.url);
        await registrant.run("register cache 6379 zone=a role=primary");
        await page.goto(agent.http);
        await page.waitForSelector('#connection[data-state="connected"]');
        const web = row("web/127.0.0.1:8080");
        const cache = row("cache/127.0.0.1:6379");
        await page.waitForSelector(`${cache}[data-state="up"]`);
        assert.match(await page.textContent(`${cache} .attrs`) ?? "", /zone=a/);
        // A new service, unknown when the page loaded, appears without reload.
        await registrant.run("register web 8080 zone=a version=1.4.2");
        await registrant.run("register web 8081 zone=b version=1.4.2");
        await registrant.run("register api 9090 zone=b");
        await page.waitForSelector(`${web}[data-state="up"]`);
        assert.match(
          await page.textContent(`${web} .attrs`) ?? "",
          /version=1\.4\.2/,
        );
        assert.match(await page.textContent(`${web} .age`) ?? "", /^\d+s$/);
        await page.waitForSelector(`section[data-service="api"]`);
        assert.match(await page.textContent("#status") ?? "", /backend memory/);

        // An attrs change updates the row in place.
        await registrant.run("register web 8080 zone=a version=1.5.0");
        await page.waitForSelector(
          `${web} .attrs:has-text("version=1.5.0")`,
        );

        // The filter matches service names and attribute text.
        await page.fill("#filter", "zone=b");
        await page.waitForSelector(web, { state: "detached" });
        assert.ok(await page.$(row("web/127.0.0.1:8081")));
        assert.ok(await page.$(row("api/127.0.0.1:9090")));
        await page.fill("#filter", "cache");
        await page.waitForSelector(row("api/127.0.0.1:9090"), {
          state: "detached",
        });
        assert.ok(await page.$(cache));
        await page.fill("#filter", "");
        await page.waitForSelector(web);

        await Deno.mkdir("test-output", { recursive: true });
        await page.screenshot({
          path: "test-output/dashboard.png",
          fullPage: true,
        });

        // Unregistered: the row goes down (kept, struck through, as "down").
        await registrant.run("unregister web 8081");
        await page.waitForSelector(
          `${row("web/127.0.0.1:8081")}[data-state="down"]`,
        );
        assert.equal(
          await page.textContent(`${row("web/127.0.0.1:8081")} .age`),
          "down",
        );
        assert.equal(
          await page.textContent(`section[data-service="web"] .count`),
          "1 up",
        );
      },
    );

    await t.step("a page from another origin is refused", async () => {
      const result = await probe(page, foreign.url, agent.url);
      assert.equal(result.socket, "closed 1006"); // the 403 is not shown to pages
      assert.match(result.client, /^error: could not connect/);
      assert.match(agent.stderr(), /origin not allowed/);
    });

    await t.step(
      "an allowed origin connects; its page uses /client.js to register and subscribe",
      async () => {
        const result = await probe(page, allowed.url, agent.url);
        assert.equal(result.socket, "open");
        assert.equal(result.client, `127.0.0.1:9000 ${allowed.origin}`);
        assert.match(result.catalog, /from-page/);
        // Seen from outside the browser too.
        await using client = await connect(agent.url);
        const [instance] = await client.lookup("from-page");
        assert.equal(instance.attrs.origin, allowed.origin);
      },
    );

    await t.step(
      "the dashboard shows a lost connection to the agent",
      async () => {
        await page.goto(agent.http);
        await page.waitForSelector('#connection[data-state="connected"]');
        await agent.stop();
        await page.waitForSelector('#connection[data-state="disconnected"]');
        assert.match(await page.textContent("#connection") ?? "", /lost/);
      },
    );
  },
);
