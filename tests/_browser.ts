// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helpers for browser tests: Debian's headless Chromium driven by npm
 * `playwright-core` (which never downloads a browser), a client process
 * driven over standard input, and tiny web servers on other origins.
 *
 * @module
 */

import fs from "node:fs";
import type { BrowserContext } from "playwright-core";

// Playwright probes /proc/sys/fs/binfmt_misc/WSLInterop when it loads; Deno
// answers paths under /proc/sys with NotCapable unless run with --allow-all.
// Such a path does not exist as far as these tests are concerned.
const existsSync = fs.existsSync;
fs.existsSync = (path) => {
  try {
    return existsSync(path);
  } catch {
    return false;
  }
};
const { chromium } = await import("playwright-core");

/** Where CI and the dev container install Chromium. */
export const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** A headless Chromium with a throw-away profile. */
export interface Browser extends AsyncDisposable {
  /** The browser context. */
  readonly context: BrowserContext;
}

/** Options of {@linkcode launchChromium}. */
export interface LaunchOptions {
  /** More command-line switches. */
  args?: string[];
  /** The browser's environment (the test's own by default). */
  env?: Record<string, string>;
}

/**
 * Launches headless Chromium with an empty temporary profile.
 *
 * @param options More switches, and the environment.
 * @returns The browser; dispose of it to close it and remove the profile.
 */
export async function launchChromium(
  options: LaunchOptions = {},
): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "discover-chromium-" });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      ...options.args ?? [],
    ],
    ...(options.env ? { env: options.env } : {}),
  });
  context.setDefaultTimeout(30_000);
  return {
    context,
    async [Symbol.asyncDispose]() {
      await context.close();
      await Deno.remove(profile, { recursive: true });
    },
  };
}

/** A client process driven by commands on its standard input (`_registrant.ts`). */
export interface Registrant extends AsyncDisposable {
  /**
   * Sends one command and waits for its `ok`.
   *
   * @param command `register SERVICE PORT [K=V...]` or `unregister SERVICE PORT`.
   */
  run(command: string): Promise<void>;
}

/**
 * Starts `_registrant.ts` against `url` and resolves once it is connected.
 *
 * @param url The agent's URL.
 * @returns The running process.
 */
export async function spawnRegistrant(url: string): Promise<Registrant> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL("./_registrant.ts", import.meta.url).pathname,
      url,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const expect = async (word: string) => {
    while (!out.includes(`${word}\n`)) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`the registrant exited: ${out}`);
      out += value;
    }
    out = out.slice(out.indexOf(`${word}\n`) + word.length + 1);
  };
  await expect("ready");
  return {
    async run(command) {
      await writer.write(new TextEncoder().encode(`${command}\n`));
      await expect("ok");
    },
    async [Symbol.asyncDispose]() {
      await writer.close().catch(() => {});
      await child.status;
      await lines.cancel();
    },
  };
}

/** A web server on another port (another origin) serving one page. */
export interface PageServer extends AsyncDisposable {
  /** The page's URL, e.g. `http://127.0.0.1:PORT/`. */
  readonly url: string;
  /** The page's origin. */
  readonly origin: string;
}

/**
 * Serves `html` at `/` on a free loopback port.
 *
 * @param html The page.
 * @returns The server.
 */
export function servePage(html: string): PageServer {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(html, {
        headers: { "content-type": "text/html; charset=utf-8" },
      }),
  );
  const origin = `http://127.0.0.1:${server.addr.port}`;
  return {
    url: `${origin}/`,
    origin,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}
