// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 13, the DNS interface (`agent/dns.ts`).
 *
 * - Queries per second: an agent (a process of its own, memory backend,
 *   `--dns`) holds a service of 10 instances, registered by a client; a
 *   load generator in the measuring process (one `node:dgram` socket, 64
 *   queries in flight, matched to their answers by id) asks for the `A`
 *   records of the service's name as fast as they come back. Baseline: a
 *   bare `dns-packet` responder on `node:dgram` (`_dns_responder.ts`, a
 *   process of its own) answering the same 10 `A` records for the same
 *   name, decoding each query and encoding each answer as the agent does.
 *   Spans of the agent and of the responder alternate, so that a slow
 *   spell of the machine hits both. Target: at least 0.8x the responder's
 *   queries per second. Beside it, the CPU time each spent per answer
 *   over those spans (`/proc/PID/stat`), which other load on the machine
 *   sways less than queries per second.
 * - Latency: the same queries at a steady 1,000 per second, each timed
 *   from its send to its answer; p50 and p99 against the responder's,
 *   spans alternating as above.
 * - Freshness: agents A and B (processes) on one etcd, B with `--dns`. A
 *   client registers an instance with a new address through A (a bare
 *   JSON-RPC socket, as benchmark 2's); from then on B's DNS is asked for
 *   the service's name again as soon as each answer arrives, until an
 *   answer holds the address. The name was asked for once before the
 *   first round, so B watches the service: a round measures how fresh an
 *   answer is, not how long a first lookup takes. The instance is then
 *   unregistered and the address awaited gone, untimed. Baseline:
 *   benchmark 2's, an `etcd3` put until a watch in another process sees
 *   it; samples of both alternate.
 *
 * `--quick`: spans of 0.3 s, one of each, and 20 freshness rounds.
 *
 * @module
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket, { type Packet } from "dns-packet";
import { spawnAgent } from "../tools/agent_process.ts";
import { freePort, startEtcd } from "../tools/etcd.ts";
import {
  addrOf,
  type Bench,
  cpuTicks,
  etcdAgentArgs,
  figure,
  openRaw,
  percentile,
  registerRange,
  ticksPerSecond,
  within,
} from "./_harness.ts";
import { alternate, type Sampler, socketWriter } from "./_propagation.ts";
import { otherProcessSampler } from "./cross_host.ts";

const SERVICE = "bench-dns";
/** The instances of the service the load asks for. */
const INSTANCES = 10;
/** Queries in flight while measuring queries per second. */
const IN_FLIGHT = 64;
/** Queries per second while measuring latency. */
const RATE = 1_000;
/** A query unanswered for this long is counted lost and replaced, in ms. */
const LOST_MS = 250;

/** Sizes of one run. */
interface Sizes {
  /** Spans of each side, alternating, for queries per second and latency. */
  spans: number;
  /** Length of a queries-per-second span, in ms. */
  loadMs: number;
  /** Length of a latency span, in ms. */
  latencyMs: number;
  /** Freshness rounds of each side. */
  rounds: number;
  /** Untimed freshness rounds first. */
  warmup: number;
}

const FULL: Sizes = {
  spans: 4,
  loadMs: 1_500,
  latencyMs: 1_000,
  rounds: 200,
  warmup: 20,
};
const QUICK: Sizes = {
  spans: 1,
  loadMs: 300,
  latencyMs: 300,
  rounds: 20,
  warmup: 3,
};

/** The IP address of an `addrOf` address (`10.a.b.c`). */
function ipOf(addr: string): string {
  return addr.slice(0, addr.lastIndexOf(":"));
}

/** The addresses of the `A` records of an answer. */
function ipsIn(answer: Packet | undefined): string[] {
  return (answer?.answers ?? []).flatMap((a) => a.type === "A" ? [a.data] : []);
}

/** What came back over one span. */
interface Span {
  /** Answers received within the span. */
  answered: number;
  /** The span's length, in seconds. */
  seconds: number;
  /** Send-to-answer times, in ms (latency spans only). */
  times: number[];
  /** Queries never answered. */
  lost: number;
  /** CPU seconds the answering process and the measuring one spent. */
  cpu?: { server: number; load: number };
}

/**
 * A DNS client on one UDP socket: queries are matched to their answers by
 * id, so that many can be in flight.
 */
class DnsClient {
  readonly #socket = dgram.createSocket("udp4");
  readonly #pending = new Map<
    number,
    { at: number; done: (answer: Buffer, at: number) => void }
  >();
  #id = 0;

  constructor() {
    this.#socket.on("message", (message: Buffer) => {
      if (message.length < 12) return;
      const id = message.readUInt16BE(0);
      const pending = this.#pending.get(id);
      if (!pending) return; // late: counted lost already
      this.#pending.delete(id);
      pending.done(message, pending.at);
    });
  }

  /** Binds the socket. */
  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#socket.once("error", reject);
      this.#socket.bind({ address: "127.0.0.1", port: 0 }, () => {
        this.#socket.off("error", reject);
        resolve();
      });
    });
  }

  /**
   * Sends `query` (encoded, its id overwritten) to `port`; `done` gets
   * the answer and the send time.
   */
  send(
    port: number,
    query: Uint8Array,
    done: (answer: Buffer, at: number) => void,
  ): number {
    const id = this.#id = (this.#id + 1) & 0xffff;
    const bytes = Buffer.from(query);
    bytes.writeUInt16BE(id, 0);
    const at = performance.now();
    this.#pending.set(id, { at, done });
    this.#socket.send(bytes, port, "127.0.0.1");
    return id;
  }

  /** Forgets the queries sent before `before` (ms); returns their ids. */
  expire(ids: Set<number>, before: number): number[] {
    const out = [];
    for (const id of ids) {
      const pending = this.#pending.get(id);
      if (!pending || pending.at < before) {
        this.#pending.delete(id);
        out.push(id);
      }
    }
    return out;
  }

  /** Asks once; resolves with the decoded answer, or undefined after `ms`. */
  ask(
    port: number,
    query: Uint8Array,
    ms: number,
  ): Promise<Packet | undefined> {
    return new Promise((resolve) => {
      const id = this.send(port, query, (answer) => {
        clearTimeout(timer);
        resolve(dnsPacket.decode(answer));
      });
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, ms);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#socket.close(() => resolve()));
  }
}

/** An encoded `A` query for `name` (its id is overwritten at each send). */
function aQuery(name: string): Uint8Array {
  return dnsPacket.encode({
    type: "query",
    id: 0,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", class: "IN", name }],
  });
}

/**
 * Checks an answer without decoding it: `NOERROR` and `count` answers.
 * Throws otherwise (the load would measure the wrong thing).
 */
function checkAnswer(answer: Buffer, count: number, what: string): void {
  const rcode = answer[3] & 0x0f;
  const answers = answer.readUInt16BE(6);
  if (rcode !== 0 || answers !== count) {
    throw new Error(
      `${what} answered rcode ${rcode} with ${answers} records; expected NOERROR with ${count}`,
    );
  }
}

/**
 * Keeps `IN_FLIGHT` queries in flight to `target` for `ms`, each answer
 * followed by the next query at once; answers after `ms` are not counted.
 */
function saturate(
  client: DnsClient,
  target: { port: number; what: string },
  query: Uint8Array,
  ms: number,
): Promise<Span> {
  return new Promise((resolve, reject) => {
    const outstanding = new Set<number>();
    let answered = 0, lost = 0, failure: Error | undefined;
    const start = performance.now();
    const end = start + ms;
    const next = () => {
      outstanding.add(client.send(target.port, query, done));
    };
    const done = (answer: Buffer) => {
      outstanding.delete(answer.readUInt16BE(0));
      const now = performance.now();
      if (now >= end || failure) return;
      try {
        checkAnswer(answer, INSTANCES, target.what);
      } catch (error) {
        failure = error as Error;
        return;
      }
      answered++;
      next();
    };
    const timer = setInterval(() => {
      const now = performance.now();
      if (now >= end || failure) {
        clearInterval(timer);
        client.expire(outstanding, Infinity);
        if (failure) reject(failure);
        else resolve({ answered, seconds: ms / 1000, times: [], lost });
        return;
      }
      for (const id of client.expire(outstanding, now - LOST_MS)) {
        outstanding.delete(id);
        lost++;
        next();
      }
    }, 20);
    for (let i = 0; i < IN_FLIGHT; i++) next();
  });
}

/**
 * Sends queries to `target` at `RATE` per second for `ms`, and times each
 * from its send to its answer.
 */
function paced(
  client: DnsClient,
  target: { port: number; what: string },
  query: Uint8Array,
  ms: number,
): Promise<Span> {
  return new Promise((resolve, reject) => {
    const outstanding = new Set<number>();
    const times: number[] = [];
    let sent = 0, lost = 0, failure: Error | undefined;
    const start = performance.now();
    const end = start + ms;
    const total = Math.round(ms / 1000 * RATE);
    const done = (answer: Buffer, at: number) => {
      const now = performance.now();
      outstanding.delete(answer.readUInt16BE(0));
      try {
        checkAnswer(answer, INSTANCES, target.what);
      } catch (error) {
        failure ??= error as Error;
      }
      times.push(now - at);
    };
    const timer = setInterval(() => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / 1000 * RATE));
      while (sent < due) {
        outstanding.add(client.send(target.port, query, done));
        sent++;
      }
      for (const id of client.expire(outstanding, now - LOST_MS)) {
        outstanding.delete(id);
        lost++;
      }
      if (failure || (now >= end && outstanding.size === 0)) {
        clearInterval(timer);
        client.expire(outstanding, Infinity);
        if (failure) return reject(failure);
        resolve({ answered: times.length, seconds: ms / 1000, times, lost });
      }
    }, 1);
  });
}

/** Spawns `_dns_responder.ts` for `name` and resolves with its port. */
async function spawnResponder(
  name: string,
  addresses: string[],
): Promise<AsyncDisposable & { port: number; pid: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      new URL("./_dns_responder.ts", import.meta.url).pathname,
      name,
      addresses.join(","),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
  };
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let port: number | undefined;
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  while (port === undefined) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
    const match = /listening on udp 127\.0\.0\.1:(\d+)/.exec(out);
    if (match) port = Number(match[1]);
  }
  clearTimeout(timer);
  if (port === undefined) {
    await stop();
    throw new Error(`the DNS responder did not start:\n${out}`);
  }
  // Keep draining standard output so the child never blocks on it.
  const draining = (async () => {
    while (!(await lines.read()).done) { /* discard */ }
  })();
  return {
    port,
    pid: child.pid,
    [Symbol.asyncDispose]: async () => {
      await stop();
      await draining;
    },
  };
}

/** Starts an agent with `--dns` on a free port, trying again if it was taken. */
async function spawnDnsAgent(args: string[]) {
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    try {
      const agent = await spawnAgent([
        ...args,
        "--dns",
        `127.0.0.1:${port}`,
      ]);
      return Object.assign(agent, { dnsPort: port });
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
}

/**
 * Asks `port` for `name` again as soon as each answer arrives, until an
 * answer holds `ip` (or, `present` false, no longer holds it).
 */
async function until(
  client: DnsClient,
  port: number,
  name: string,
  expect: { ip: string; present: boolean },
): Promise<void> {
  const query = aQuery(name);
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const answer = await client.ask(port, query, 50);
    if (!answer) continue;
    if (ipsIn(answer).includes(expect.ip) === expect.present) return;
  }
  throw new Error(
    `waited 10000 ms in vain for ${name} ${
      expect.present ? "to hold" : "to drop"
    } ${expect.ip} at agent B's DNS`,
  );
}

/** Runs benchmark 13. */
export const dns: Bench = async ({ quick, log }) => {
  const sizes = quick ? QUICK : FULL;
  const name = `${SERVICE}.service.discover`;
  const addrs = Array.from({ length: INSTANCES }, (_, i) => addrOf(i + 1));
  const ticks = await ticksPerSecond();
  const client = new DnsClient();
  await client.open();
  try {
    // Queries per second and latency.
    const query = aQuery(name);
    let agentSpans: Span[][], baseSpans: Span[][];
    {
      await using agent = await spawnDnsAgent(["--log-level", "warn"]);
      await using responder = await spawnResponder(name, addrs.map(ipOf));
      const holder = await openRaw(agent.url);
      try {
        await registerRange(holder, [0, INSTANCES], (i) => ({
          service: SERVICE,
          addr: addrs[i],
        }));
        const ours = {
          port: agent.dnsPort,
          pid: agent.child.pid,
          what: "the agent",
        };
        const base = {
          port: responder.port,
          pid: responder.pid,
          what: "the responder",
        };
        for (const target of [ours, base]) {
          const answer = await client.ask(target.port, query, 5_000);
          const got = ipsIn(answer).sort();
          if (JSON.stringify(got) !== JSON.stringify(addrs.map(ipOf).sort())) {
            throw new Error(
              `${target.what} answered ${JSON.stringify(got)} for ${name}`,
            );
          }
          // Warm-up (the compiler, the views), untimed, as long as a span.
          await saturate(client, target, query, sizes.loadMs);
        }
        const run = async (
          measure: typeof saturate,
          ms: number,
        ): Promise<Span[][]> => {
          const out: Span[][] = [[], []];
          for (let s = 0; s < sizes.spans; s++) {
            // ABBA: neither side always goes first.
            const order = s % 2 === 0 ? [0, 1] : [1, 0];
            for (const k of order) {
              const target = [ours, base][k];
              const pids = [target.pid, Deno.pid];
              const before = await cpuTicks(pids);
              const span = await measure(client, target, query, ms);
              const after = await cpuTicks(pids);
              span.cpu = {
                server: (after[0] - before[0]) / ticks,
                load: (after[1] - before[1]) / ticks,
              };
              out[k].push(span);
            }
          }
          return out;
        };
        const load = await run(saturate, sizes.loadMs);
        const latency = await run(paced, sizes.latencyMs);
        agentSpans = [load[0], latency[0]];
        baseSpans = [load[1], latency[1]];
      } finally {
        holder.close();
      }
    }
    const qps = (spans: Span[]) =>
      spans.reduce((n, s) => n + s.answered, 0) /
      spans.reduce((n, s) => n + s.seconds, 0);
    const lostOf = (spans: Span[]) => spans.reduce((n, s) => n + s.lost, 0);
    const timesOf = (spans: Span[]) => spans.flatMap((s) => s.times);
    const ourQps = qps(agentSpans[0]), baseQps = qps(baseSpans[0]);
    const ourTimes = timesOf(agentSpans[1]), baseTimes = timesOf(baseSpans[1]);
    const cpuOf = (spans: Span[]) => {
      const sum = (f: (s: Span) => number) =>
        spans.reduce((n, s) => n + f(s), 0);
      const seconds = sum((s) => s.seconds);
      return {
        perAnswer: sum((s) => s.cpu!.server) / sum((s) => s.answered) * 1e6,
        server: sum((s) => s.cpu!.server) / seconds * 100,
        load: sum((s) => s.cpu!.load) / seconds * 100,
      };
    };
    const ourCpu = cpuOf(agentSpans[0]), baseCpu = cpuOf(baseSpans[0]);
    const spread = (spans: Span[]) =>
      spans.map((s) => Math.round(s.answered / s.seconds)).join(", ");
    log(
      `13: queries/s of each span: agent ${spread(agentSpans[0])}; ` +
        `responder ${spread(baseSpans[0])}`,
    );
    log(
      `13: ${Math.round(ourQps)} queries/s at the agent (${
        ourCpu.server.toFixed(0)
      } % CPU), ${Math.round(baseQps)} at the responder (${
        baseCpu.server.toFixed(0)
      } % CPU); load generator ${ourCpu.load.toFixed(0)} % and ${
        baseCpu.load.toFixed(0)
      } %; lost ${lostOf([...agentSpans[0], ...agentSpans[1]])} and ${
        lostOf([...baseSpans[0], ...baseSpans[1]])
      }`,
    );

    // Freshness.
    await using cluster = await startEtcd();
    const etcdArgs = etcdAgentArgs(cluster.endpoints);
    await using a = await spawnAgent(etcdArgs);
    await using b = await spawnDnsAgent(etcdArgs);
    await using other = await otherProcessSampler(cluster.endpoints);
    const fresh = `${SERVICE}-${crypto.randomUUID().slice(0, 8)}`;
    const freshName = `${fresh}.service.discover`;
    // B watches the service from here on: it answers NXDOMAIN.
    const first = await within(
      (async () => {
        for (;;) {
          const answer = await client.ask(b.dnsPort, aQuery(freshName), 500);
          if (answer) return answer;
        }
      })(),
      10_000,
      `an answer for ${freshName} from agent B`,
    );
    if (((first.flags ?? 0) & 0x0f) !== 3) {
      throw new Error(
        `agent B answered rcode ${
          (first.flags ?? 0) & 0x0f
        } for ${freshName}; expected NXDOMAIN (3)`,
      );
    }
    const writer = await socketWriter(a.url);
    await using ours: Sampler = {
      async sample(i) {
        const addr = addrOf(100 + (i % 1000));
        const ip = ipOf(addr);
        const started = performance.now();
        const registered = writer.register(fresh, addr);
        await until(client, b.dnsPort, freshName, { ip, present: true });
        const took = performance.now() - started;
        await registered;
        await writer.unregister(fresh, addr);
        await until(client, b.dnsPort, freshName, { ip, present: false });
        return took;
      },
      [Symbol.asyncDispose]: () => Promise.resolve(writer.close()),
    };
    const [base, times] = await alternate(
      [other, ours],
      sizes.rounds,
      sizes.warmup,
    );
    log(
      `13: ${sizes.rounds} rounds of each: register at A -> resolves at B's DNS, etcd put->watch`,
    );

    const load = `${
      sizes.spans * 2
    } alternating spans of ${sizes.loadMs} ms, ${IN_FLIGHT} queries in flight on one UDP socket`;
    const steady = `${ourTimes.length.toLocaleString("en-US")} and ${
      baseTimes.length.toLocaleString("en-US")
    } queries at ${RATE.toLocaleString("en-US")}/s`;
    const poll = `${sizes.rounds} rounds; B's DNS asked again as soon as ` +
      `each answer arrives; name watched by B beforehand`;
    return [
      figure({
        figure: `13 DNS queries/s, A of ${INSTANCES} instances`,
        unit: "queries/s",
        value: ourQps,
        baseline: baseQps,
        baselineLabel: "bare dns-packet UDP responder",
        target: { ratioAtLeast: 0.8 },
        note: `${load}; the responder decodes each query and encodes each ` +
          `answer as the agent does; % of one core: agent ${
            ourCpu.server.toFixed(0)
          }, responder ${baseCpu.server.toFixed(0)}, load generator ${
            ourCpu.load.toFixed(0)
          } and ${baseCpu.load.toFixed(0)}; lost ${lostOf(agentSpans[0])} and ${
            lostOf(baseSpans[0])
          }`,
      }),
      figure({
        figure: `13 CPU per DNS answer, A of ${INSTANCES} instances`,
        unit: "µs",
        value: ourCpu.perAnswer,
        baseline: baseCpu.perAnswer,
        baselineLabel: "bare dns-packet UDP responder",
        note: "CPU time (/proc/PID/stat utime + stime) of the answering " +
          "process over the queries/s spans, per answer: less sensitive " +
          "than queries/s to other load on the machine",
      }),
      figure({
        figure: `13 DNS query latency p50, A of ${INSTANCES} instances`,
        unit: "ms",
        value: percentile(ourTimes, 50),
        baseline: percentile(baseTimes, 50),
        baselineLabel: "bare dns-packet UDP responder",
        note: `${steady}, send to answer; lost ${lostOf(agentSpans[1])} and ${
          lostOf(baseSpans[1])
        }`,
      }),
      figure({
        figure: `13 DNS query latency p99, A of ${INSTANCES} instances`,
        unit: "ms",
        value: percentile(ourTimes, 99),
        baseline: percentile(baseTimes, 99),
        baselineLabel: "bare dns-packet UDP responder",
      }),
      figure({
        figure: "13 DNS answer freshness p50, register at A -> resolves at B",
        unit: "ms",
        value: percentile(times, 50),
        baseline: percentile(base, 50),
        baselineLabel: "etcd put->watch p50",
        note: poll,
      }),
      figure({
        figure: "13 DNS answer freshness p99, register at A -> resolves at B",
        unit: "ms",
        value: percentile(times, 99),
        baseline: percentile(base, 99),
        baselineLabel: "etcd put->watch p99",
      }),
    ];
  } finally {
    await client.close();
  }
};
