// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: the churn workload of the churn-under-faults tests (on etcd
 * and on ZooKeeper), and the checks of what subscribers saw.
 *
 * @module
 */

import type { Client, ServiceSet } from "../mod.ts";

/**
 * Retries an idempotent call until it succeeds, for up to `ms`.
 *
 * @param fn The call.
 * @param ms How long to keep trying.
 * @returns Its result.
 */
export async function persist<T>(
  fn: () => Promise<T>,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * Records the events of `set` per instance and checks each sequence as it
 * goes: no `up` of an instance already up, no `update` or `down` of one
 * that is down.
 *
 * @param set The set.
 * @returns The problems found, and the number of events seen.
 */
export function watchSequences(
  set: ServiceSet,
): { problems: string[]; events: () => number } {
  const problems: string[] = [];
  const up = new Map<string, boolean>();
  let events = 0;
  set.addEventListener("update", (e) => {
    events++;
    const addr = e.instance.addr;
    const isUp = up.get(addr) ?? false;
    if (e.kind === "up" && isUp) problems.push(`duplicate up of ${addr}`);
    if (e.kind !== "up" && !isUp) {
      problems.push(`${e.kind} of ${addr} while down`);
    }
    up.set(addr, e.kind !== "down");
  });
  return { problems, events: () => events };
}

/** Options of {@linkcode churn}. */
export interface ChurnOptions {
  /** When to stop, in `Date.now()` milliseconds. */
  until: number;
  /** Addresses each client cycles through. */
  portsPerClient: number;
  /** Most milliseconds between two calls of a client. */
  pauseMs: number;
  /** What is registered now, by address: `v` attribute values. */
  truth: Map<string, string>;
}

/**
 * Each client registers (with a random `v` attribute) and unregisters
 * instances of service `churn` at its own addresses, at random, one call
 * at a time, retrying each until it succeeds, until `options.until`.
 *
 * @param clients The clients.
 * @param options When to stop, how many addresses, pauses, and the truth.
 * @returns The number of calls made.
 */
export async function churn(
  clients: Client[],
  options: ChurnOptions,
): Promise<number> {
  const { truth } = options;
  let ops = 0;
  await Promise.all(clients.map(async (client, c) => {
    while (Date.now() < options.until) {
      const addr = `10.9.${c}.1:${
        1000 + Math.floor(Math.random() * options.portsPerClient)
      }`;
      if (Math.random() < 0.3) {
        await persist(() => client.unregister("churn", addr));
        truth.delete(addr);
      } else {
        const v = String(Math.floor(Math.random() * 1000));
        await persist(() => client.register("churn", addr, { attrs: { v } }));
        truth.set(addr, v);
      }
      ops++;
      await new Promise((resolve) =>
        setTimeout(resolve, Math.random() * options.pauseMs)
      );
    }
  }));
  return ops;
}

/**
 * What a set holds, as `addr v` lines, sorted: compare with the truth.
 *
 * @param set The set.
 * @returns The lines.
 */
export function churned(set: ServiceSet): string[] {
  return set.online().map((i) => `${i.addr} ${i.attrs.v}`).sort();
}

/**
 * The truth as `addr v` lines, sorted.
 *
 * @param truth What is registered, by address.
 * @returns The lines.
 */
export function truthLines(truth: Map<string, string>): string[] {
  return [...truth].map(([addr, v]) => `${addr} ${v}`).sort();
}
