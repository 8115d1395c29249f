// Copyright the discover authors. BSD-3-Clause license.

/**
 * Instances written straight into etcd, in the agent's record format
 * (`backends/_etcd_record.ts`: key `<prefix>instances/<service>/<addr>`,
 * value `{"attrs":{...},"owner":"...","registeredAt":<ms>}`), as another
 * agent of the cluster would have written them: for benchmarks that need a
 * fleet larger than one agent may register. Writes go in transactions of
 * {@linkcode TXN_PUTS} puts (etcd's `--max-txn-ops` default), a few at
 * once.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { RecordCodec } from "../backends/_etcd_record.ts";
import { addrOf } from "./_harness.ts";

/** Puts per transaction: etcd's `--max-txn-ops` default. */
export const TXN_PUTS = 128;

/** The owner of every record written here: no agent's. */
export const FLEET_OWNER = "00000000-0000-4000-8000-000000000000";

/** A fixed registration time, so that every value has the same size. */
const REGISTERED_AT = 1767225600000;

/** Encodes values (the prefix plays no part in them). */
const CODEC = new RecordCodec("/discover/");

/** Options of {@linkcode writeFleet}. */
export interface WriteFleetOptions {
  /**
   * Instances in each service.
   *
   * @default {100}
   */
  perService?: number;
  /**
   * Key prefix, as the agent's `--etcd-prefix`.
   *
   * @default {"/discover/"}
   */
  prefix?: string;
  /** The lease every key is attached to (etcd deletes them when it ends); none by default. */
  lease?: string;
  /**
   * Transactions in flight at once.
   *
   * @default {4}
   */
  concurrency?: number;
  /**
   * The attributes of instance `i` of a service.
   *
   * @default {(i) => ({ zone: `z${i % 3}` })}
   */
  attrs?: (i: number) => Record<string, string>;
}

/**
 * The etcd value of an instance, in the agent's format.
 *
 * @example Usage
 * ```ts ignore
 * import { fleetValue } from "./_etcd_fleet.ts";
 * fleetValue({ zone: "z1" });
 * // '{"attrs":{"zone":"z1"},"owner":"00000000-...","registeredAt":1767225600000}'
 * ```
 *
 * @param attrs The instance's attributes.
 * @returns The JSON value.
 */
export function fleetValue(attrs: Record<string, string>): string {
  return CODEC.encode({
    service: "",
    addr: "",
    attrs,
    owner: FLEET_OWNER,
    registeredAt: REGISTERED_AT,
  });
}

/**
 * Writes `perService` instances (addresses `addrOf(0)`, `addrOf(1)`, ...)
 * of each of `services` into etcd, and resolves with the number of keys
 * written.
 *
 * @example Usage
 * ```ts ignore
 * import { Etcd3 } from "etcd3";
 * import { writeFleet } from "./_etcd_fleet.ts";
 * const etcd = new Etcd3({ hosts: ["http://127.0.0.1:2379"] });
 * await writeFleet(etcd, ["cache", "db"], { perService: 1000 });
 * ```
 *
 * @param client The etcd client.
 * @param services The services.
 * @param options Instances per service, prefix, lease, concurrency and
 * attributes.
 * @returns How many keys were written.
 */
export async function writeFleet(
  client: Etcd3,
  services: readonly string[],
  options: WriteFleetOptions = {},
): Promise<number> {
  const perService = options.perService ?? 100;
  const codec = new RecordCodec(options.prefix ?? "/discover/");
  const attrs = options.attrs ?? ((i: number) => ({ zone: `z${i % 3}` }));
  // Values repeat across services: encode each once.
  const values = Array.from(
    { length: perService },
    (_, i) => Buffer.from(fleetValue(attrs(i))),
  );
  const total = services.length * perService;
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const from = next;
      const to = Math.min(total, from + TXN_PUTS);
      next = to;
      const success = [];
      for (let k = from; k < to; k++) {
        const i = k % perService;
        success.push({
          request_put: {
            key: Buffer.from(
              codec.key(services[Math.floor(k / perService)], addrOf(i)),
            ),
            value: values[i],
            lease: options.lease,
          },
        });
      }
      await client.kv.txn({ success });
    }
  };
  await Promise.all(
    Array.from({ length: options.concurrency ?? 4 }, worker),
  );
  return total;
}
