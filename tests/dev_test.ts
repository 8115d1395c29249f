// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { freePort } from "../tools/_process.ts";

Deno.test({
  name:
    "deno task dev: etcd and two agents sharing it, their lines prefixed, stopped by SIGINT",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const [p1, p2] = [freePort(), freePort()];
    const task = JSON.parse(
      await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
    ).tasks.dev as string;
    const args = task.split(" ").slice(2); // after "deno run"
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...args, "--ports", `${p1},${p2}`],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let errText = "";
    const errDone = (async () => {
      for await (
        const text of child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        errText += text;
      }
    })();
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let stopped = false;
    try {
      let out = "";
      while (!out.includes("agents at")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      assert.match(out, /etcd at http:\/\/127\.0\.0\.1:\d+/);
      const etcdUrl = /etcd at (\S+)/.exec(out)![1];
      // The agents may need a moment after the line is printed.
      const open = async (port: number) => {
        for (let i = 0;; i++) {
          try {
            return await connect(`ws://127.0.0.1:${port}`);
          } catch (error) {
            if (i > 100) throw error;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      };
      const a = await open(p1), b = await open(p2);
      const set = await b.services("dev");
      await a.register("dev", 4000, { attrs: { from: "a" } });
      for (let i = 0; set.online().length === 0; i++) {
        assert.ok(i < 100, "the registration reaches the other agent");
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(set.online()[0].attrs, { from: "a" });
      await a.close();
      await b.close();
      child.kill("SIGINT");
      stopped = true;
      const status = await child.status;
      await reader.cancel();
      assert.equal(status.code, 0);
      // etcd is gone with it.
      await assert.rejects(fetch(`${etcdUrl}/health`));
      // Every agent line names its agent: the sessions above, and the
      // last lines, printed before the setup exits.
      await errDone;
      const lines = errText.split("\n").filter((line) => line !== "");
      for (const port of [p1, p2]) {
        const own = lines.filter((l) => l.startsWith(`agent:${port} | `));
        const says = (pattern: RegExp) =>
          own.some((l) => pattern.test(l.slice(`agent:${port} | `.length)));
        assert.ok(
          says(/^\S+ INFO \S+ listening url=ws:\/\/127\.0\.0\.1:/),
          errText,
        );
        assert.ok(says(/^\S+ INFO \S+ session opened /), errText);
        assert.ok(says(/^\S+ INFO \S+ stopped$/), errText);
      }
      const bare = lines.filter((l) => !/^agent:\d+ \| /.test(l));
      assert.deepEqual(bare, [], "agent lines without their prefix");
    } finally {
      // A failed step must not leave etcd and the agents running.
      if (!stopped) {
        child.kill("SIGINT");
        await child.status;
        await reader.cancel().catch(() => {});
        await errDone;
      }
    }
  },
});
