// Copyright the discover authors. BSD-3-Clause license.

/**
 * Propagation samples, taken one at a time so that a benchmark can
 * alternate them with its baseline's (a slow spell of the machine then hits
 * both alike). Shared by benchmarks 1 and 2.
 *
 * @module
 */

import type { Client } from "../mod.ts";
import { openRaw, within } from "./_harness.ts";

/** Takes one timed sample per call, in ms. */
export interface Sampler extends AsyncDisposable {
  /** Takes sample `i`. */
  sample(i: number): Promise<number>;
}

/** Registers and unregisters one instance; resolves with the response. */
export interface Writer {
  /** Registers `addr` in `service`. */
  register(service: string, addr: string): Promise<unknown>;
  /** Unregisters it. */
  unregister(service: string, addr: string): Promise<unknown>;
  /** Closes what the writer opened. */
  close(): void;
}

/**
 * A writer through the client library.
 *
 * @param client The client.
 * @returns The writer.
 */
export function clientWriter(client: Client): Writer {
  return {
    register: (service, addr) => client.register(service, addr),
    unregister: (service, addr) => client.unregister(service, addr),
    close: () => {},
  };
}

/**
 * A writer speaking JSON-RPC on a bare WebSocket: it sends the request and
 * reads the response frame without parsing it, so that in a process that
 * also measures, the writer's side costs next to nothing.
 *
 * @param url The agent.
 * @returns The writer.
 */
export async function socketWriter(url: string): Promise<Writer> {
  const socket = await openRaw(url);
  let id = 0;
  const call = (method: string, service: string, addr: string) => {
    socket.send(JSON.stringify({
      jsonrpc: "2.0",
      id: ++id,
      method,
      params: { service, addr },
    }));
    return socket.next();
  };
  return {
    register: (service, addr) => call("discover.register", service, addr),
    unregister: (service, addr) => call("discover.unregister", service, addr),
    close: () => socket.close(),
  };
}

/**
 * `writer` registers an instance, and the sample ends when `reader`'s set
 * of the service (client library) has it as `up`. The instance is then
 * unregistered and its `down` awaited, untimed.
 *
 * @param writer Registers.
 * @param reader Watches.
 * @returns The sampler.
 */
export async function propagationSampler(
  writer: Writer,
  reader: Client,
): Promise<Sampler> {
  const service = `bench-${crypto.randomUUID().slice(0, 8)}`;
  const set = await reader.services(service);
  let expect: { kind: string; addr: string; resolve: () => void } | undefined;
  set.addEventListener("update", (e) => {
    if (expect && e.kind === expect.kind && e.instance.addr === expect.addr) {
      expect.resolve();
    }
  });
  const seen = (kind: string, addr: string) =>
    within(
      new Promise<void>((resolve) => expect = { kind, addr, resolve }),
      10_000,
      `'${kind}' of ${addr} at the subscriber`,
    );
  return {
    async sample(i) {
      const addr = `127.0.0.1:${20_000 + (i % 1000)}`;
      const up = seen("up", addr);
      const started = performance.now();
      const registered = writer.register(service, addr);
      await up;
      const took = performance.now() - started;
      await registered;
      const down = seen("down", addr);
      await writer.unregister(service, addr);
      await down;
      return took;
    },
    async [Symbol.asyncDispose]() {
      writer.close();
      await set.close();
    },
  };
}

/**
 * Takes `samples` samples from each sampler, alternating between them
 * after `warmup` untimed rounds.
 *
 * @param samplers The samplers.
 * @param samples Samples per sampler.
 * @param warmup Untimed rounds first.
 * @returns The samples of each sampler, in ms.
 */
export async function alternate(
  samplers: Sampler[],
  samples: number,
  warmup: number,
): Promise<number[][]> {
  const out = samplers.map((): number[] => []);
  for (let i = 0; i < warmup + samples; i++) {
    for (const [k, sampler] of samplers.entries()) {
      const took = await sampler.sample(i);
      if (i >= warmup) out[k].push(took);
    }
  }
  return out;
}
