// Copyright the discover authors. BSD-3-Clause license.

/**
 * Fault search: a seeded, randomized search for wrong answers of agents
 * sharing etcd.
 *
 * One round: one etcd, two or three agent processes (each reaching etcd
 * through its own proxy, each on a fixed port so it can be killed and
 * started again at the same address), clients that register, re-register
 * and unregister addresses of their own (`10.77.<client>.1:<1000+k>`, so
 * no two clients ever share one), close cleanly or crash and are replaced,
 * and two or three subscribers on different agents. Meanwhile a fault
 * injector, driven by the seed, SIGKILLs and restarts etcd, blackholes one
 * agent's path to etcd (outages both shorter and longer than twice the
 * lease TTL; a path comes back with its connections as they were, or
 * reset), SIGSTOPs and SIGCONTs an agent, SIGKILLs an agent and starts it
 * again on the same port, cuts client connections (some clients move to
 * another agent on the way), and lets a thief take an address during a
 * blip: the victim's path is closed, a new client at the victim's agent
 * registers the address (the victim's session is lost, so it may), the
 * victim's path opens again, and the thief closes or crashes 1 to 4 s
 * later; the victim must get its address back. A crash is a client whose
 * connection is cut and refused, and that then ends without a clean close.
 *
 * The truth: for every live client, what it last asked for at each of its
 * addresses (registered with these attributes, or not); for every gone
 * client, nothing. A call that failed or timed out leaves its address
 * uncertain until a later call on it succeeds; once the faults stop, every
 * live client repeats its last intent for each uncertain address until it
 * succeeds, so the truth is exact.
 *
 * After the faults stop, within CONVERGE_MS (45 s: etcd's gRPC reconnection
 * backoff after a long outage, up to about 20 s, plus the agent's resync
 * and lease restore backoff, up to 4 s, plus the grace TTL and the lease
 * TTL, plus client reconnection and ping detection, 5 s, with room for a
 * noisy 2-core machine), every one of these must equal the truth at once,
 * and keep equalling it for HOLD_MS (grace TTL + lease TTL + 2 s, so an
 * instance that comes back after a lease restore or goes after a lease
 * expiry is seen):
 *
 * - every agent's `lookup("fs")` (through a fresh client at each agent),
 *   and its `discover.status` says `connected`;
 * - etcd's records under the prefix (attributes and owner);
 * - every subscriber's `online()`, its set connected.
 *
 * Each subscriber's events must also be consistent per instance (no `up`
 * while up, no `update` or `down` while down) and replay to its final
 * `online()`. Since addresses are disjoint, no client may ever get
 * `-32001` (NotOwner), from a call or while its registrations are
 * restored, except at an address a thief took (where it is documented).
 * An agent process that exits by itself is reported too, except a crash
 * of the runtime itself (SIGSEGV, seen in Deno's `node:http2` under gRPC
 * after etcd's GOAWAY): that agent is restarted, as a supervisor would, the
 * answers must still come out right, and the round's summary counts it.
 *
 * Timings: grace TTL 2 s (`--ttl 2`) and lease TTL 3 s
 * (`--etcd-lease-ttl 3`), short so that the outages straddle them within a
 * round of about 20 s of faults. A failure prints the seed, the timeline of
 * faults and client lives (seconds from the round's start), a diff per
 * agent, etcd and subscriber and, for every address in the diff, every
 * call made on it, every revision of its key in etcd (with whether the
 * lease that held it is alive), every event the subscribers saw, and what
 * the agents logged about its client; then the tail of each agent's log.
 *
 * Environment:
 *
 * - `DISCOVER_FAULT_ROUNDS=N`: rounds to run (default 3, about 35 s each
 *   when all is well; a round that does not converge takes about 70 s).
 * - `DISCOVER_FAULT_SEED=S`: seed of the first round (the next ones use
 *   S+1, S+2, ...); random by default. Every round prints
 *   `fault search seed=<n>`; `DISCOVER_FAULT_SEED=<n>
 *   DISCOVER_FAULT_ROUNDS=1` runs that round again. The seed fixes every
 *   random draw (faults, their order and lengths, each client's operations
 *   and life); some draws depend on the state at the time (which agent is
 *   busy, which clients are live), so a rerun follows the same schedule
 *   only as far as the machine's timing lets it.
 * - `DISCOVER_FAULT_LOG_LEVEL=debug|info|warn|error`: the agents' log
 *   level (default warn), to see more of what they did in a failed round.
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import {
  type Attrs,
  type Client,
  connect,
  ErrorCode,
  type Instance,
  RpcError,
  type ServiceSet,
} from "../mod.ts";
import { clientOwnerId } from "../agent/owner_id.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { type EtcdCluster, startEtcd } from "../tools/etcd.ts";
import { type TcpProxy, tcpProxy } from "./_proxy.ts";
import { Random } from "./_fault_random.ts";
import { keyHistory } from "./_fault_etcd.ts";
import { freePort } from "../tools/_process.ts";

const SERVICE = "fs";
/** Agent grace TTL, seconds (`--ttl`). */
const TTL = 2;
/** etcd lease TTL, seconds (`--etcd-lease-ttl`). */
const LEASE_TTL = 3;
/** How long faults are injected in a round. */
const FAULT_MS = 20_000;
/** From the end of the faults until every answer must equal the truth. */
const CONVERGE_MS = 45_000;
/** How long the answers must then keep equalling the truth. */
const HOLD_MS = (TTL + LEASE_TTL) * 1000 + 2000;
/** Addresses per client. */
const PORTS = 3;
/** A short outage is below twice the lease TTL, a long one above it (s). */
const SHORT_OUTAGE: [number, number] = [0.5, 2 * LEASE_TTL - 0.5];
const LONG_OUTAGE: [number, number] = [2 * LEASE_TTL + 1, 2 * LEASE_TTL + 4];
const CLIENT_OPTIONS = {
  reconnect: { maxDelay: 200 },
  requestTimeout: 3000,
  connectTimeout: 2000,
};

const ROUNDS = wholeNumber("DISCOVER_FAULT_ROUNDS", 3, 1);
const FIRST_SEED = wholeNumber(
  "DISCOVER_FAULT_SEED",
  crypto.getRandomValues(new Uint32Array(1))[0],
  0,
);
/** The agents' log level; a failure prints the tail of their logs. */
const LOG_LEVEL = Deno.env.get("DISCOVER_FAULT_LOG_LEVEL") || "warn";
if (!["debug", "info", "warn", "error"].includes(LOG_LEVEL)) {
  throw new RangeError(
    `DISCOVER_FAULT_LOG_LEVEL must be debug, info, warn or error: current value is '${LOG_LEVEL}'`,
  );
}

/** A whole number from the environment variable `name`, at least `min`. */
function wholeNumber(name: string, fallback: number, min: number): number {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    throw new RangeError(
      `${name} must be a whole number of at least ${min}: current value is '${text}'`,
    );
  }
  return value;
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Resolves with `promise`, or with `undefined` after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]);
}

function describe(error: unknown): string {
  if (error instanceof RpcError) {
    return `${error.code} ${error.message.split("\n")[0]}`;
  }
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

/** Attributes as canonical JSON (sorted keys). */
function attrsText(attrs: Attrs): string {
  return JSON.stringify(Object.fromEntries(Object.entries(attrs).sort()));
}

/** What a view holds for one address. */
interface Entry {
  attrs: Attrs;
  owner?: string;
}

/** A view of the service: address to entry. */
type Holdings = Map<string, Entry>;

function fromInstances(instances: Instance[]): Holdings {
  return new Map(instances.map((i) => [i.addr, { attrs: i.attrs }]));
}

/** One agent slot: a fixed port, its etcd path, and its current process. */
class AgentSlot {
  proc?: AgentProcess;
  /** A fault holds the slot. */
  busy = false;
  /** Whether an agent of this slot ever listened: its port is fixed then. */
  #listened = false;
  #port = freePort();
  /** Logs of its earlier processes. */
  readonly logs: string[] = [];

  constructor(
    readonly index: number,
    readonly etcdPath: TcpProxy,
    readonly args: string[],
  ) {}

  /**
   * The agent's port: the same for every agent of the slot once one
   * listened, as clients and their proxies go back to it.
   */
  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Starts the agent, again and again until it listens or `deadline` passes. */
  async start(round: Round, deadline: number): Promise<void> {
    for (let attempt = 1; !round.closing; attempt++) {
      try {
        const proc = this.proc = await spawnAgent([
          ...this.args,
          "--listen",
          `127.0.0.1:${this.port}`,
        ]);
        // Only this slot's kill() ends an agent: it clears `proc` first.
        void proc.child.status.then((status) => {
          if (this.proc !== proc) return;
          this.proc = undefined;
          this.logs.push(proc.stderr());
          if (status.signal === "SIGSEGV" && !round.closing) {
            // The runtime itself crashed (Deno's node:http2 under gRPC,
            // seen after etcd's GOAWAY): not a wrong answer. A supervisor
            // restarts it; the answers must still come out right.
            round.runtimeCrashes++;
            round.note(
              `agent ${this.index} crashed (SIGSEGV in the runtime); restarted`,
            );
            void this.start(round, Date.now() + 60_000).catch((error) =>
              round.finding(`agent ${this.index} did not restart: ${error}`)
            );
            return;
          }
          round.finding(
            `agent ${this.index}: its process exited by itself (code ${status.code}, signal ${status.signal})`,
          );
        });
        this.#listened = true;
        if (round.closing) return await this.kill();
        if (attempt > 1) {
          round.note(`agent ${this.index} started (try ${attempt})`);
        }
        return;
      } catch (error) {
        // spawnAgent's message ends with what the agent wrote on stderr.
        const why = String(error instanceof Error ? error.message : error)
          .trim().split("\n").at(-1)!.slice(0, 200);
        this.logs.push(`(failed start) ${why}`);
        if (Date.now() > deadline) throw error;
        // The port, free when picked, may have become the local end of a
        // connection made since (it comes from the same range): before
        // any agent of the slot listened, another one will do.
        if (!this.#listened && why.includes("address already in use")) {
          this.#port = freePort();
        }
        if (attempt === 1) {
          round.note(
            `agent ${this.index} did not start, trying again: ${why}`,
          );
        }
        await sleep(500);
      }
    }
  }

  /** Sends `signal` to the process, if it runs. */
  signal(signal: Deno.Signal): void {
    try {
      this.proc?.kill(signal);
    } catch { /* exited: reported by start() */ }
  }

  /** SIGKILLs the process and waits for it to exit. */
  async kill(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc) return;
    try {
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
    } catch { /* exited */ }
    await within(proc.stop(), 10_000);
    this.logs.push(proc.stderr());
  }

  /** Every line logged by this slot's processes. */
  logLines(): string[] {
    return [...this.logs, this.proc?.stderr() ?? ""].join("\n")
      .split("\n").filter((l) => l.trim() !== "");
  }

  /** The tail of every log of this slot, runs of alike lines collapsed. */
  logTail(lines: number): string {
    const all = this.logLines();
    // A run of lines with the same message (time and fields aside) is one.
    const runs: { line: string; message: string; count: number }[] = [];
    for (const line of all) {
      const message = line.replace(/^\S+Z /, "").replace(/ \w+=.*$/, "");
      const last = runs.at(-1);
      if (last?.message === message) {
        last.count++;
        last.line = line;
      } else runs.push({ line, message, count: 1 });
    }
    return runs.slice(-lines).map((r) =>
      r.count > 1
        ? `${r.line} (and ${r.count - 1} more like it before)`
        : r.line
    ).join("\n");
  }
}

/**
 * What a client does: random operations on addresses of its own, or (a
 * thief) take one address of another client during a blip, then go.
 */
type Role = "client" | "thief";

/** A client doing random operations on addresses of its own. */
class Actor {
  state: "live" | "closed" | "crashed" = "live";
  /** When it closed or crashed, relative to the round's start. */
  goneAt = "";
  /** Last intent per address: attributes, or `null` for unregistered. */
  readonly intent = new Map<string, Attrs | null>();
  /** Addresses whose last call failed. */
  readonly uncertain = new Set<string>();
  /**
   * Addresses a thief took: left alone from then on, so only the client
   * itself can bring them back.
   */
  readonly untouched = new Set<string>();
  /** Calls per address, with their outcome. */
  readonly history = new Map<string, string[]>();
  /** A reconnection is restoring its registrations. */
  restoring = false;
  ops = 0;
  failed = 0;
  #stop = false;
  #loop?: Promise<void>;

  constructor(
    readonly round: Round,
    readonly index: number,
    readonly client: Client,
    readonly proxy: TcpProxy,
    public agent: number,
    readonly rng: Random,
    readonly role: Role = "client",
  ) {
    client.addEventListener("disconnect", () => this.restoring = true);
    client.addEventListener("reconnect", () => this.restoring = false);
    client.addEventListener("error", (event) => {
      const error = (event as CustomEvent).detail;
      round.note(`c${index} restore error: ${describe(error)}`);
      const addr = /10\.77\.\d+\.1:\d+/.exec(describe(error))?.[0];
      if (
        error instanceof RpcError && error.code === ErrorCode.NotOwner &&
        role === "client" && !(addr && round.contested.has(addr))
      ) {
        round.finding(
          `c${index} got NotOwner (-32001) while restoring its registrations: ${
            describe(error)
          }`,
          `c${index} ${addr} restore NotOwner`,
        );
      }
    });
  }

  get name(): string {
    return `c${this.index}`;
  }

  addr(k: number): string {
    return `10.77.${this.index}.1:${1000 + k}`;
  }

  /** Starts the random operations. */
  run(): void {
    this.#loop = (async () => {
      while (!this.#stop) {
        await sleep(this.rng.int(30, 300));
        if (this.#stop) break;
        const addr = this.addr(this.rng.int(0, PORTS - 1));
        if (this.untouched.has(addr)) continue;
        const current = this.intent.get(addr);
        const attrs = current && this.rng.chance(0.35)
          ? null
          : { v: String(this.rng.int(0, 999_999)) };
        await this.apply(addr, attrs, "op");
      }
    })();
  }

  /** Stops the operations and waits for the last one. */
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
  }

  /** Registers (`attrs`) or unregisters (`null`) `addr`; returns whether it succeeded. */
  async apply(
    addr: string,
    attrs: Attrs | null,
    why: "op" | "repeat",
  ): Promise<boolean> {
    if (this.state === "live") this.intent.set(addr, attrs);
    const what = attrs ? `register ${attrsText(attrs)}` : "unregister";
    const started = this.round.elapsed();
    this.ops++;
    try {
      if (attrs) await this.client.register(SERVICE, addr, { attrs });
      else await this.client.unregister(SERVICE, addr);
      if (this.state === "live") this.uncertain.delete(addr);
      this.#record(
        addr,
        `${started} ${why} ${what}: ok at ${this.round.elapsed()}`,
      );
      return true;
    } catch (error) {
      this.failed++;
      if (this.state === "live") this.uncertain.add(addr);
      this.#record(
        addr,
        `${started} ${why} ${what}: failed at ${this.round.elapsed()}: ${
          describe(error)
        }`,
      );
      if (
        error instanceof RpcError && error.code === ErrorCode.NotOwner &&
        this.state === "live" && this.role === "client" &&
        !this.round.contested.has(addr)
      ) {
        this.round.finding(
          `${this.name} got NotOwner (-32001) for its own ${addr} (${what}): ${
            describe(error)
          }`,
          `${this.name} ${addr} NotOwner`,
        );
      }
      return false;
    }
  }

  #record(addr: string, line: string) {
    const list = this.history.get(addr) ?? [];
    list.push(`${line.replace(/ /, ` ${this.name}`)}`);
    this.history.set(addr, list);
  }

  /** A clean close: the agent removes its instances at once. */
  async closeCleanly(): Promise<void> {
    this.state = "closed";
    this.goneAt = this.round.elapsed();
    this.#stop = true;
    await within(this.client.close(), 10_000);
    this.proxy.close();
    await this.#loop;
  }

  /**
   * A crash: the connection is cut and refused from now on, and the client
   * ends without a clean close; the agent removes its instances after the
   * grace TTL.
   */
  async crash(): Promise<void> {
    this.state = "crashed";
    this.goneAt = this.round.elapsed();
    this.#stop = true;
    this.proxy.refuse();
    const deadline = Date.now() + 2000;
    while (this.client.state === "connected" && Date.now() < deadline) {
      await sleep(20);
    }
    if (this.client.state === "connected") {
      this.round.note(`${this.name} was still connected when it crashed`);
    }
    await within(this.client.close(), 10_000); // sends nothing: disconnected
    this.proxy.close();
    await this.#loop;
  }
}

/** A subscriber's set, its events, and what is wrong with them. */
class Subscriber {
  readonly events: string[] = [];
  readonly problems: string[] = [];
  /** The set's state as its events tell it. */
  readonly replayed = new Map<string, string>();

  constructor(
    readonly round: Round,
    readonly index: number,
    readonly client: Client,
    readonly proxy: TcpProxy,
    readonly set: ServiceSet,
    readonly agent: number,
  ) {
    set.addEventListener("update", (e) => {
      const addr = e.instance.addr;
      const attrs = attrsText(e.instance.attrs);
      this.events.push(
        `${round.elapsed()} ${e.kind} ${addr} ${attrs} @rev ${e.revision}`,
      );
      const up = this.replayed.has(addr);
      if (e.kind === "up" && up) {
        this.problems.push(`up of ${addr} while up (${round.elapsed()})`);
      }
      if (e.kind !== "up" && !up) {
        this.problems.push(
          `${e.kind} of ${addr} while down (${round.elapsed()})`,
        );
      }
      if (e.kind === "down") this.replayed.delete(addr);
      else this.replayed.set(addr, attrs);
    });
  }
}

/** Whether a stored owner is the client id `clientId` (as the agent stores it). */
function sameOwner(stored: string | undefined, clientId: string | undefined) {
  return stored !== undefined && clientId !== undefined &&
    stored === clientOwnerId(clientId);
}

/** Differences of `actual` from `truth`, one line each. */
function diff(
  round: Round,
  name: string,
  actual: Holdings,
  truth: Holdings,
  owners: boolean,
): string[] {
  const lines: string[] = [];
  for (const [addr, want] of truth) {
    const got = actual.get(addr);
    if (!got) {
      lines.push(`${name}: missing ${addr} ${attrsText(want.attrs)}`);
    } else if (attrsText(got.attrs) !== attrsText(want.attrs)) {
      lines.push(
        `${name}: wrong attrs at ${addr}: ${attrsText(got.attrs)}, want ${
          attrsText(want.attrs)
        }`,
      );
    } else if (owners && !sameOwner(got.owner, want.owner)) {
      lines.push(
        `${name}: wrong owner at ${addr}: ${round.who(got.owner)}, want ${
          round.who(want.owner)
        }`,
      );
    }
  }
  for (const [addr, got] of actual) {
    if (truth.has(addr)) continue;
    const owner = owners ? `, owner ${round.who(got.owner)}` : "";
    lines.push(
      `${name}: extra ${addr} ${attrsText(got.attrs)}${owner} (${
        round.whose(addr)
      })`,
    );
  }
  return lines;
}

/** One round of the search. */
class Round {
  readonly t0 = Date.now();
  readonly rng: Random;
  readonly timeline: string[] = [];
  readonly #findings = new Map<string, { text: string; count: number }>();
  readonly prefix: string;
  readonly agents: AgentSlot[] = [];
  readonly actors: Actor[] = [];
  readonly subscribers: Subscriber[] = [];
  readonly faultCounts = new Map<string, number>();
  etcd?: EtcdCluster;
  reader?: Etcd3;
  probes: Client[] = [];
  faultsOver = false;
  /** Addresses a thief took (or tried to): NotOwner there is expected. */
  readonly contested = new Set<string>();
  #proxies: TcpProxy[] = [];
  #nextIndex = 0;
  /** The fault injector and the client lives, awaited by the cleanup. */
  #background: Promise<unknown>[] = [];
  /** The round is being cleaned up: start nothing new. */
  closing = false;
  /** Agents whose runtime crashed (SIGSEGV) and that were restarted. */
  runtimeCrashes = 0;

  constructor(readonly seed: number) {
    this.rng = new Random(seed);
    this.prefix = `/fs-${seed.toString(16)}/`;
    this.note(
      `round starts at ${
        new Date(this.t0).toISOString()
      } (the agents' log clock)`,
    );
  }

  elapsed(): string {
    return `+${((Date.now() - this.t0) / 1000).toFixed(2)}s`;
  }

  note(text: string): void {
    this.timeline.push(`${this.elapsed()} ${text}`);
  }

  /**
   * Something wrong that is not in the final answers (an error no client
   * should get); repeats of the same `key` are counted, not listed.
   */
  finding(text: string, key = text): void {
    const seen = this.#findings.get(key);
    if (seen) {
      seen.count++;
      return;
    }
    this.note(`FINDING ${text}`);
    this.#findings.set(key, { text: `${this.elapsed()} ${text}`, count: 1 });
  }

  /** The findings, each once, with how often it happened. */
  get findings(): string[] {
    return [...this.#findings.values()].map(({ text, count }) =>
      count > 1 ? `${text} (${count} times)` : text
    );
  }

  #fault(kind: string, text: string) {
    this.faultCounts.set(kind, (this.faultCounts.get(kind) ?? 0) + 1);
    this.note(text);
  }

  /** Names the client of an owner id. */
  who(owner: string | undefined): string {
    const actor = this.actors.find((a) => sameOwner(owner, a.client.clientId));
    return actor ? `${actor.name} (${actor.state})` : `unknown owner ${owner}`;
  }

  /** Names the client of an address, and its state. */
  whose(addr: string): string {
    const index = Number(/^10\.77\.(\d+)\./.exec(addr)?.[1]);
    const actor = this.actors.find((a) => a.index === index);
    if (!actor) return "no such client";
    if (actor.state === "live") {
      return `${actor.name} is live; its last intent: ${
        actor.intent.has(addr)
          ? (actor.intent.get(addr) ? "registered" : "unregistered")
          : "never registered"
      }`;
    }
    return `${actor.name} ${actor.state} at ${actor.goneAt}`;
  }

  /** The truth: every live client's last intent. */
  truth(): Holdings {
    const truth: Holdings = new Map();
    for (const actor of this.actors) {
      if (actor.state !== "live" || actor.role !== "client") continue;
      for (const [addr, attrs] of actor.intent) {
        if (attrs) truth.set(addr, { attrs, owner: actor.client.clientId });
      }
    }
    return truth;
  }

  #proxy(target: number): TcpProxy {
    const proxy = tcpProxy(target);
    this.#proxies.push(proxy);
    return proxy;
  }

  async setup(): Promise<void> {
    this.etcd = await startEtcd();
    const etcdPort = Number(new URL(this.etcd.endpoints[0]).port);
    const agentCount = this.rng.int(2, 3);
    for (let i = 0; i < agentCount; i++) {
      const path = this.#proxy(etcdPort);
      this.agents.push(
        new AgentSlot(i, path, [
          "--backend",
          "etcd",
          "--etcd-endpoints",
          `http://127.0.0.1:${path.port}`,
          "--etcd-prefix",
          this.prefix,
          "--etcd-lease-ttl",
          String(LEASE_TTL),
          "--ttl",
          String(TTL),
          "--log-level",
          LOG_LEVEL,
        ]),
      );
    }
    await Promise.all(
      this.agents.map((a) => a.start(this, Date.now() + 30_000)),
    );
    const subscriberCount = this.rng.int(2, 3);
    for (let i = 0; i < subscriberCount; i++) {
      const agent = i % agentCount;
      const proxy = this.#proxy(this.agents[agent].port);
      const client = await connect(proxy.url, CLIENT_OPTIONS);
      const set = await client.services(SERVICE);
      this.subscribers.push(
        new Subscriber(this, i, client, proxy, set, agent),
      );
    }
    const actorCount = this.rng.int(6, 10);
    for (let i = 0; i < actorCount; i++) {
      await this.#spawnActor(i % agentCount);
    }
    this.note(
      `${agentCount} agents, ${subscriberCount} subscribers, ${actorCount} clients; prefix ${this.prefix}`,
    );
  }

  async #spawnActor(
    agent: number,
    role: Role = "client",
  ): Promise<Actor | undefined> {
    const index = this.#nextIndex++;
    const proxy = this.#proxy(this.agents[agent].port);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        if (this.closing) throw new Error("the round is over");
        const client = await connect(proxy.url, CLIENT_OPTIONS);
        if (this.closing) {
          await client.close();
          throw new Error("the round is over");
        }
        const actor = new Actor(
          this,
          index,
          client,
          proxy,
          agent,
          this.rng.fork(`client ${index}`),
          role,
        );
        this.actors.push(actor);
        if (role === "client") actor.run();
        return actor;
      } catch (error) {
        if (this.closing || Date.now() > deadline) {
          this.note(`c${index} could not connect: ${describe(error)}`);
          proxy.close();
          return undefined;
        }
        await sleep(250);
      }
    }
  }

  /** Clients close or crash and are replaced, until the faults end. */
  async #lives(rng: Random): Promise<void> {
    while (!this.faultsOver) {
      await sleep(rng.int(1500, 4000));
      if (this.faultsOver) return;
      // A victim of a thief stays, to show it gets its address back.
      const live = this.actors.filter((a) =>
        a.state === "live" && a.role === "client" && a.untouched.size === 0
      );
      const victim = rng.pick(live);
      if (!victim || this.actors.length >= 200) continue;
      const crash = rng.chance(0.5);
      this.note(`${victim.name} ${crash ? "crashes" : "closes cleanly"}`);
      await (crash ? victim.crash() : victim.closeCleanly());
      const agent = rng.int(0, this.agents.length - 1);
      const fresh = await this.#spawnActor(agent);
      if (fresh) this.note(`${fresh.name} connects to agent ${agent}`);
    }
  }

  /** Runs the faults, the operations and the client lives for FAULT_MS. */
  async churn(): Promise<void> {
    const lives = this.#lives(this.rng.fork("lives"));
    const inject = this.#inject(this.rng.fork("faults"));
    this.#background.push(lives, inject);
    await inject;
    this.faultsOver = true;
    await lives;
    await Promise.all(this.actors.map((a) => a.stop()));
    this.note("faults and operations over");
  }

  async #inject(rng: Random): Promise<void> {
    const end = Date.now() + FAULT_MS;
    const running = new Set<Promise<void>>();
    let etcdDown = false;
    let first = true;
    const outage = (long: boolean) =>
      long ? rng.between(...LONG_OUTAGE) : rng.between(...SHORT_OUTAGE);
    const fits = (seconds: number) => Date.now() + seconds * 1000 + 500 < end;
    const freeAgent = () =>
      rng.pick(this.agents.filter((a) => !a.busy && a.proc !== undefined));
    while (Date.now() < end && !this.closing) {
      const kind = first
        ? rng.pick(["etcd-kill", "etcd-path-freeze"] as const)!
        : rng.weighted(
          [
            ["etcd-kill", 2],
            ["etcd-path-freeze", 3],
            ["agent-sigstop", 2],
            ["agent-kill", 2],
            ["client-cut", 3],
            ["steal", 2],
          ] as const,
        );
      const long = first || rng.chance(0.5);
      let fault: Promise<void> | undefined;
      if (kind === "etcd-kill" && !etcdDown) {
        const seconds = outage(long);
        if (fits(seconds)) {
          etcdDown = true;
          fault = this.#etcdKill(seconds, long).finally(() => etcdDown = false);
        }
      } else if (kind === "etcd-path-freeze") {
        const agent = freeAgent();
        const seconds = outage(long);
        if (agent && fits(seconds)) {
          fault = this.#freeze(
            agent,
            seconds,
            long,
            rng.pick(["resume", "reset"] as const)!,
          );
        }
      } else if (kind === "agent-sigstop") {
        const agent = freeAgent();
        const seconds = rng.between(0.5, 8);
        if (agent && fits(seconds)) fault = this.#sigstop(agent, seconds);
      } else if (kind === "agent-kill") {
        const agent = freeAgent();
        const seconds = rng.between(0, 4);
        if (agent && fits(seconds + 3)) fault = this.#agentKill(agent, seconds);
      } else if (kind === "steal" && fits(8)) {
        fault = this.#steal(rng);
      } else if (kind === "client-cut") {
        this.#cut(rng);
      }
      if (fault) {
        first = false;
        const tracked: Promise<void> = fault.catch((error) =>
          this.finding(`the ${kind} fault failed: ${describe(error)}`)
        ).finally(() => running.delete(tracked));
        running.add(tracked);
      }
      await sleep(rng.int(300, 2000));
    }
    await Promise.all(running);
  }

  async #etcdKill(seconds: number, long: boolean): Promise<void> {
    const member = this.etcd!.members[0];
    this.#fault(
      `etcd-kill-${long ? "long" : "short"}`,
      `etcd SIGKILL, down for ${seconds.toFixed(1)} s (${
        long ? "long" : "short"
      })`,
    );
    await member.kill();
    await sleep(seconds * 1000);
    await member.restart();
    this.note("etcd restarted and healthy");
  }

  async #freeze(
    agent: AgentSlot,
    seconds: number,
    long: boolean,
    mode: "resume" | "reset",
  ): Promise<void> {
    agent.busy = true;
    try {
      this.#fault(
        `etcd-path-freeze-${long ? "long" : "short"}`,
        `agent ${agent.index}'s etcd path frozen for ${seconds.toFixed(1)} s (${
          long ? "long" : "short"
        }; then ${mode})`,
      );
      agent.etcdPath.freeze();
      await sleep(seconds * 1000);
      agent.etcdPath.thaw(mode);
      this.note(`agent ${agent.index}'s etcd path back (${mode})`);
    } finally {
      agent.busy = false;
    }
  }

  async #sigstop(agent: AgentSlot, seconds: number): Promise<void> {
    agent.busy = true;
    try {
      this.#fault(
        "agent-sigstop",
        `agent ${agent.index} SIGSTOP for ${seconds.toFixed(1)} s`,
      );
      agent.signal("SIGSTOP");
      await sleep(seconds * 1000);
      agent.signal("SIGCONT");
      this.note(`agent ${agent.index} SIGCONT`);
    } finally {
      agent.busy = false;
    }
  }

  async #agentKill(agent: AgentSlot, seconds: number): Promise<void> {
    agent.busy = true;
    try {
      this.#fault(
        "agent-kill",
        `agent ${agent.index} SIGKILL, restarted on port ${agent.port} after ${
          seconds.toFixed(1)
        } s`,
      );
      await agent.kill();
      await sleep(seconds * 1000);
      await agent.start(this, Date.now() + 60_000);
      this.note(`agent ${agent.index} listening again`);
    } finally {
      agent.busy = false;
    }
  }

  /**
   * A thief takes one address of a live client during a blip: the victim's
   * path is closed until a new client at the same agent has registered the
   * address (the victim's session is lost, so it may be taken over); the
   * thief holds it for 1 to 4 s and then closes or crashes. The victim
   * must get its address back.
   */
  async #steal(rng: Random): Promise<void> {
    // A registration the victim is sure of, and no other thief is after.
    const held = (a: Actor) =>
      [...a.intent].filter(([addr, v]) =>
        v !== null && !a.uncertain.has(addr) && !this.contested.has(addr)
      ).map(([addr]) => addr);
    const victim = rng.pick(
      this.actors.filter((a) =>
        a.state === "live" && a.role === "client" && held(a).length > 0
      ),
    );
    if (!victim) return;
    const addr = rng.pick(held(victim))!;
    victim.untouched.add(addr);
    this.contested.add(addr);
    const thief = await this.#spawnActor(victim.agent, "thief");
    if (!thief) return;
    this.#fault(
      "steal",
      `${thief.name} takes ${addr} from ${victim.name} during a blip at agent ${victim.agent}`,
    );
    victim.proxy.refuse();
    try {
      const deadline = Date.now() + 1000;
      while (victim.client.state === "connected" && Date.now() < deadline) {
        await sleep(20);
      }
      await sleep(100); // the agent sees the session end
      await thief.apply(addr, { v: `taken by ${thief.name}` }, "op");
    } finally {
      victim.proxy.admit();
    }
    await sleep(rng.between(1000, 4000));
    const crash = rng.chance(0.3);
    this.note(`${thief.name} ${crash ? "crashes" : "closes cleanly"}`);
    await (crash ? thief.crash() : thief.closeCleanly());
  }

  #cut(rng: Random) {
    const all = rng.chance(0.25);
    const cut: string[] = [];
    for (const actor of this.actors) {
      if (actor.state !== "live" || actor.role !== "client") continue;
      if (!(all || rng.chance(0.35))) continue;
      let moved = "";
      if (this.agents.length > 1 && rng.chance(0.3)) {
        const others = this.agents.filter((a) => a.index !== actor.agent);
        const to = rng.pick(others)!;
        actor.agent = to.index;
        actor.proxy.target = to.port;
        moved = `->agent ${to.index}`;
      }
      actor.proxy.cut();
      cut.push(actor.name + moved);
    }
    for (const sub of this.subscribers) {
      if (!(all || rng.chance(0.35))) continue;
      sub.proxy.cut();
      cut.push(`s${sub.index}`);
    }
    if (cut.length === 0) return;
    this.#fault(
      "client-cut",
      `client connections cut${all ? " (all)" : ""}: ${cut.join(" ")}`,
    );
  }

  /**
   * After the faults: every path open, every agent running, every live
   * client reconnected; then each uncertain address gets its last intent
   * again until that succeeds.
   */
  async settle(deadline: number): Promise<void> {
    for (const agent of this.agents) {
      agent.etcdPath.thaw();
      agent.signal("SIGCONT");
      if (!agent.proc) await agent.start(this, deadline);
    }
    const live = () =>
      this.actors.filter((a) => a.state === "live" && a.role === "client");
    const reconnect = Date.now() + 20_000;
    while (
      live().some((a) => a.client.state !== "connected" || a.restoring) &&
      Date.now() < reconnect
    ) await sleep(50);
    const stuck = live().filter((a) =>
      a.client.state !== "connected" || a.restoring
    );
    if (stuck.length > 0) {
      this.note(
        `not reconnected and restored 20 s after the faults: ${
          stuck.map((a) => a.name).join(" ")
        }`,
      );
    }
    const repeats = live().flatMap((a) =>
      [...a.uncertain].map((addr) => ({ actor: a, addr }))
    );
    this.note(
      `repeating the last intent of ${repeats.length} uncertain addresses`,
    );
    await Promise.all(repeats.map(async ({ actor, addr }) => {
      while (!(await actor.apply(addr, actor.intent.get(addr)!, "repeat"))) {
        if (Date.now() > deadline) {
          this.note(`${actor.name} could not repeat its intent for ${addr}`);
          return;
        }
        await sleep(250);
      }
    }));
    this.note("intents repeated");
  }

  /** Every answer against the truth; an empty list when all agree. */
  async observe(): Promise<string[]> {
    const truth = this.truth();
    const perAgent = await Promise.all(this.probes.map(async (probe, i) => {
      try {
        const [status, instances] = await Promise.all([
          probe.status(),
          probe.lookup(SERVICE),
        ]);
        return [
          ...(status.connected ? [] : [
            `agent ${i}: discover.status says connected: false`,
          ]),
          ...diff(this, `agent ${i}`, fromInstances(instances), truth, false),
        ];
      } catch (error) {
        return [`agent ${i}: no answer: ${describe(error)}`];
      }
    }));
    let inEtcd: string[];
    try {
      // Every instance record under the prefix: only this service's may be there.
      const base = `${this.prefix}instances/`;
      const kvs = await this.reader!.getAll().prefix(base).strings();
      const held: Holdings = new Map();
      const odd: string[] = [];
      for (const [key, value] of Object.entries(kvs)) {
        const name = key.slice(base.length);
        let record;
        try {
          record = JSON.parse(value);
        } catch {
          odd.push(`etcd: a value that is not JSON at ${key}: ${value}`);
          continue;
        }
        if (!name.startsWith(`${SERVICE}/`)) {
          odd.push(`etcd: a record of another service at ${key}: ${value}`);
          continue;
        }
        held.set(name.slice(SERVICE.length + 1), {
          attrs: record.attrs ?? {},
          owner: record.owner,
        });
      }
      inEtcd = [...odd, ...diff(this, "etcd", held, truth, true)];
    } catch (error) {
      inEtcd = [`etcd: no answer: ${describe(error)}`];
    }
    const perSubscriber = this.subscribers.map((s) => [
      ...(s.set.connected ? [] : [`subscriber ${s.index}: not connected`]),
      ...diff(
        this,
        `subscriber ${s.index} (agent ${s.agent})`,
        fromInstances(s.set.online()),
        truth,
        false,
      ),
    ]);
    return [...perAgent.flat(), ...inEtcd, ...perSubscriber.flat()];
  }

  /**
   * Waits until every answer equals the truth (by `deadline`), then checks
   * that they keep equalling it for HOLD_MS. Returns the problems: empty
   * when all is well.
   */
  async converge(
    started: number,
    deadline: number,
  ): Promise<{ problems: string[]; ms: number }> {
    for (;;) {
      const problems = await this.observe();
      if (problems.length === 0) break;
      if (Date.now() > deadline) {
        this.note("answers did not converge");
        return {
          problems: [
            `not equal to the truth ${CONVERGE_MS} ms after the faults:`,
            ...problems,
          ],
          ms: Date.now() - started,
        };
      }
      await sleep(300);
    }
    const ms = Date.now() - started;
    this.note(`every answer equals the truth; holding for ${HOLD_MS} ms`);
    const holdEnd = Date.now() + HOLD_MS;
    const crashes = this.runtimeCrashes;
    while (Date.now() < holdEnd) {
      await sleep(500);
      if (this.runtimeCrashes !== crashes) {
        // A runtime crash is a fault like the others: the restarted agent
        // must come out right again, within the usual bound.
        this.note(
          "an agent was restarted after a runtime crash: converging again",
        );
        return await this.converge(started, Date.now() + CONVERGE_MS);
      }
      const problems = await this.observe();
      if (problems.length > 0) {
        // The exit of a crashed agent may be noticed after its answers.
        await sleep(1000);
        if (this.runtimeCrashes !== crashes) continue;
        this.note("answers changed after converging");
        return {
          problems: [
            `equal to the truth, then different ${this.elapsed()} with no fault or call:`,
            ...problems,
          ],
          ms,
        };
      }
    }
    return { problems: [], ms };
  }

  /** What went wrong, with the evidence. */
  async report(problems: string[]): Promise<string> {
    const addrs = [
      ...new Set(
        problems.flatMap((p) =>
          [...p.matchAll(/10\.77\.\d+\.1:\d+/g)].map((m) => m[0])
        ),
      ),
    ].sort();
    const actorOf = (addr: string) =>
      this.actors.find((a) =>
        a.index === Number(/^10\.77\.(\d+)\./.exec(addr)?.[1])
      );
    const histories = await Promise.all(
      addrs.slice(0, 12).map(async (addr) => {
        let stored: string[];
        try {
          stored = this.reader
            ? await keyHistory(
              this.reader,
              `${this.prefix}instances/${SERVICE}/${addr}`,
            )
            : ["no etcd client"];
        } catch (error) {
          stored = [`could not read: ${describe(error)}`];
        }
        const events = this.subscribers.flatMap((s) =>
          s.events.filter((e) => e.includes(` ${addr} `)).map((e) =>
            `s${s.index}@agent ${s.agent}: ${e}`
          )
        );
        const calls = this.actors.flatMap((a) => a.history.get(addr) ?? [])
          .sort((x, y) => parseFloat(x.slice(1)) - parseFloat(y.slice(1)));
        return [
          `${addr} (${this.whose(addr)})`,
          "  calls:",
          ...(calls.length ? calls : ["no calls"]).map((l) => `    ${l}`),
          "  in etcd:",
          ...stored.map((l) => `    ${l}`),
          "  at the subscribers:",
          ...(events.length ? events : ["none"]).map((l) => `    ${l}`),
        ].join("\n");
      }),
    );
    // What each agent logged about the clients and addresses concerned.
    const actors = this.actors.filter((a) =>
      addrs.some((addr) => actorOf(addr) === a || a.history.has(addr))
    );
    const needles = [
      ...addrs,
      ...actors.map((a) => a.client.clientId),
    ];
    const logs = this.agents.map((a) => {
      const lines = a.logLines().filter((l) =>
        needles.some((n) => l.includes(n))
      );
      return `--- agent ${a.index} log about ${
        actors.map((x) => `${x.name}=${x.client.clientId}`).join(" ")
      } and the addresses (last 40 lines)\n${
        lines.slice(-40).join("\n") || "none"
      }`;
    });
    return [
      `fault search seed=${this.seed}: WRONG ANSWERS (reproduce: DISCOVER_FAULT_SEED=${this.seed} DISCOVER_FAULT_ROUNDS=1)`,
      "--- timeline (seconds from the round's start)",
      ...this.timeline,
      "--- findings",
      ...(this.findings.length ? this.findings : ["none"]),
      "--- diff",
      ...problems,
      "--- history of those addresses",
      ...histories,
      ...logs,
      ...this.agents.map((a) =>
        `--- agent ${a.index} log (tail)\n${a.logTail(30)}`
      ),
    ].join("\n");
  }

  summary(ms: number): string {
    const ops = this.actors.reduce((n, a) => n + a.ops, 0);
    const failed = this.actors.reduce((n, a) => n + a.failed, 0);
    const clients = this.actors.filter((a) => a.role === "client");
    const thieves = this.actors.length - clients.length;
    const closed = clients.filter((a) => a.state === "closed").length;
    const crashed = clients.filter((a) => a.state === "crashed").length;
    const faults = [...this.faultCounts].map(([k, n]) => `${k}=${n}`).join(" ");
    return `fault search seed=${this.seed}: ${this.agents.length} agents, ${clients.length} clients (${closed} closed, ${crashed} crashed) and ${thieves} thieves, ${ops} calls (${failed} failed), ${this.truth().size} instances at the end; faults: ${faults}; converged ${ms} ms after the faults, held ${HOLD_MS} ms; agent runtime crashes restarted: ${this.runtimeCrashes}`;
  }

  async cleanup(): Promise<void> {
    this.closing = this.faultsOver = true;
    // Faults under way end first (an etcd or agent restart must not
    // outlive the round).
    await within(Promise.allSettled(this.#background), 60_000);
    for (const agent of this.agents) {
      agent.etcdPath.thaw();
      agent.signal("SIGCONT");
    }
    await within(Promise.all(this.actors.map((a) => a.stop())), 10_000);
    await within(
      Promise.all([
        ...this.actors.map((a) => a.client.close()),
        ...this.subscribers.map((s) => s.client.close()),
        ...this.probes.map((p) => p.close()),
      ]),
      10_000,
    );
    this.reader?.close();
    for (const proxy of this.#proxies) proxy.close();
    await Promise.all(this.agents.map((a) => a.kill()));
    await this.etcd?.stop();
  }
}

async function searchRound(seed: number): Promise<void> {
  console.log(`fault search seed=${seed}`);
  const round = new Round(seed);
  let failed = false;
  try {
    await round.setup();
    await round.churn();
    const faultsOver = Date.now();
    const deadline = faultsOver + CONVERGE_MS;
    await round.settle(deadline);
    round.probes = await Promise.all(
      round.agents.map((a) => connect(a.url, CLIENT_OPTIONS)),
    );
    round.reader = new Etcd3({ hosts: round.etcd!.endpoints });
    const { problems, ms } = await round.converge(
      faultsOver,
      deadline,
    );
    const subscriberProblems = round.subscribers.flatMap((s) => {
      const online = new Map(
        s.set.online().map((i) => [i.addr, attrsText(i.attrs)]),
      );
      const replay = JSON.stringify([...s.replayed].sort());
      return [
        ...s.problems.map((p) => `subscriber ${s.index}: ${p}`),
        ...(replay === JSON.stringify([...online].sort()) ? [] : [
          `subscriber ${s.index}: its events replay to ${replay}, but online() holds ${
            JSON.stringify([...online].sort())
          }`,
        ]),
      ];
    });
    const all = [...problems, ...subscriberProblems, ...round.findings];
    console.log(round.timeline.join("\n"));
    if (all.length > 0) {
      console.log(await round.report([...problems, ...subscriberProblems]));
      assert.fail(
        `fault search seed=${seed}: ${all.length} wrong answers, first: ${
          all.slice(0, 3).join(" | ")
        }`,
      );
    }
    console.log(round.summary(ms));
    assert.ok(round.faultCounts.size > 0, "faults were injected");
    assert.ok(
      round.actors.some((a) => a.ops > 0),
      "clients made calls",
    );
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    // A cleanup that fails after a failure must not hide the first one.
    await round.cleanup().catch((error) => {
      if (!failed) throw error;
      console.log(`the cleanup failed too: ${describe(error)}`);
    });
  }
}

for (let r = 0; r < ROUNDS; r++) {
  const seed = (FIRST_SEED + r) >>> 0;
  Deno.test({
    name: `fault search: round ${r + 1} of ${ROUNDS}, seed ${seed}`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => searchRound(seed),
  });
}
