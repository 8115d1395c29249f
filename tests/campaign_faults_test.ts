// Copyright the discover authors. BSD-3-Clause license.

/**
 * Leader election under faults, as an invariant: at no time do two
 * campaigners of a set both believe they lead, and each leader's fencing
 * token is greater than the one before.
 *
 * Two agent processes share one store, etcd in one test and a ZooKeeper
 * server in the other, each through a TCP proxy (its path to the store, to
 * blackhole); four campaigner processes (two per agent), each
 * through a proxy of its own (its connection, to cut). Every round draws
 * one fault from the seed: a campaigner SIGKILLed (and another started in
 * its place), a campaigner's connection cut or frozen, an agent's path to
 * the store blackholed, an agent SIGKILLed (and started again) or SIGSTOPped (and
 * continued), for 0.5 to 4 s. Each campaigner prints, with timestamps on
 * the host's shared clock (`performance.timeOrigin + performance.now()`),
 * when it was elected, each new deadline of its belief, and when it was
 * deposed; a SIGKILLed one believed until its last deadline. The checker
 * orders every believed-leadership interval by its start and fails on any
 * overlap and on any token that does not grow.
 *
 * Timings: agents' grace TTL 3 s, etcd lease TTL 3 s, ZooKeeper session
 * timeout 3 s; campaigners ping
 * every 300 ms with a 1 s request timeout. After the last round the faults
 * stop and a campaigner must be elected again within 40 s. Should none
 * be, the test prints what each campaigner believes (printed every second:
 * its state, last deposal, its own subscription of the set and its agent's
 * `discover.leader`), what each agent says (`discover.status`,
 * `discover.leader`, `discover.owners` and a subscription of its own) and
 * the agents' logs (`--log-level info`, restarted processes included).
 *
 * - `DISCOVER_CAMPAIGN_ROUNDS=N`: rounds (default 16: about 50 s, under 2
 *   minutes on a busy 2-core machine);
 * - `DISCOVER_CAMPAIGN_SEED=S`: the seed (default random; printed as
 *   `campaign faults seed=S`).
 *
 * Run as `deno run -A tests/campaign_faults_test.ts campaigner URL ADDR`,
 * the module is the campaigner process.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { type Campaign, connect, type ServiceSet } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { startZooKeeper } from "../tools/zookeeper.ts";
import { Random } from "./_fault_random.ts";
import { type TcpProxy, tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";

const storeTest = { sanitizeOps: false, sanitizeResources: false };

/** The host's shared clock, in milliseconds. */
const clock = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One line a campaigner prints. */
interface Said {
  e: "elected" | "deadline" | "deposed";
  token: number;
  t: number;
  reason?: string;
}

/** What a campaigner believes, printed every second (for a failure's diagnosis). */
interface State {
  e: "state";
  t: number;
  client: string;
  leading: boolean;
  ended: boolean;
  token?: number;
  life?: number;
  deposed?: string;
  set: string;
  agentLeader: string;
}

/** An instance as one short word: `addr@created`. */
const short = (i: { addr: string; created: number } | undefined) =>
  i === undefined ? "none" : `${i.addr}@${i.created}`;

/** The campaigner process: campaigns until killed, printing what it believes. */
async function campaigner(url: string, addr: string) {
  const say = (line: Said) => console.log(JSON.stringify(line));
  const client = await connect(url, {
    pingInterval: 300,
    requestTimeout: 1000,
    reconnect: { initialDelay: 50, maxDelay: 500 },
  });
  client.addEventListener("error", (e) => {
    e.preventDefault();
    console.error(`restore error: ${String(e.error)}`);
  });
  // A campaign that cannot start (its agent is being faulted: the register
  // is not sent in time) is started again, as a program would.
  let me: Campaign;
  for (;;) {
    try {
      me = await client.campaign("db", addr, { attrs: { shard: "1" } });
      break;
    } catch (error) {
      console.error(`campaign not started: ${String(error)}; again`);
      await sleep(200);
    }
  }
  let shown: number | undefined;
  let deposed: string | undefined;
  me.addEventListener("elected", (e) => {
    // The deadline first: the interval is open from now until then.
    shown = me.deadline;
    say({ e: "elected", token: e.token, t: clock() });
    say({ e: "deadline", token: e.token, t: performance.timeOrigin + shown! });
  });
  me.addEventListener("deposed", (e) => {
    deposed = `${e.reason} (token ${e.token})`;
    say({
      e: "deposed",
      token: e.token,
      t: performance.timeOrigin + e.at,
      reason: e.reason,
    });
  });
  setInterval(() => {
    const deadline = me.deadline;
    if (deadline !== undefined && deadline !== shown && me.token) {
      shown = deadline;
      say({
        e: "deadline",
        token: me.token,
        t: performance.timeOrigin + deadline,
      });
    }
  }, 20);
  // What this client sees, every second: its own subscription of the set
  // and the agent's answer to `discover.leader`.
  let set: ServiceSet | undefined;
  let agentLeader = "not asked yet";
  void (async () => {
    while (set === undefined) {
      set = await client.services("db", { filter: { shard: "1" } }).catch(
        () => sleep(500).then(() => undefined),
      );
    }
  })();
  setInterval(() => {
    const state: State = {
      e: "state",
      t: clock(),
      client: client.state,
      leading: me.leading,
      ended: me.ended,
      token: me.token,
      life: me.instance?.created,
      deposed,
      set: set === undefined
        ? "not open"
        : `${set.connected ? "in sync" : "stale"}, leader ${
          short(set.leader())
        }, ${set.online().map(short).join(" ")}`,
      agentLeader,
    };
    console.log(JSON.stringify(state));
    client.leader("db", { filter: { shard: "1" } }).then(
      (leader) => agentLeader = short(leader),
      (error) => agentLeader = `error: ${String(error)}`,
    );
  }, 1000);
  console.error("campaigning");
}

if (import.meta.main && Deno.args[0] === "campaigner") {
  await campaigner(Deno.args[1], Deno.args[2]);
}

/** A believed-leadership interval. */
interface Interval {
  who: string;
  token: number;
  start: number;
  end: number;
  how: string;
}

/** A running campaigner process and what it said. */
class Campaigner {
  readonly lines: Said[] = [];
  /** The last state it printed. */
  state?: State;
  stderr = "";
  readonly child: Deno.ChildProcess;
  readonly done: Promise<unknown>;
  killed = false;

  constructor(
    readonly name: string,
    readonly proxy: TcpProxy,
    readonly agent: number,
  ) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        import.meta.filename!,
        "campaigner",
        proxy.url,
        name,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const out = (async () => {
      let rest = "";
      for await (
        const text of child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        rest += text;
        const lines = rest.split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          if (!line) continue;
          const said: Said | State = JSON.parse(line);
          if (said.e === "state") this.state = said;
          else this.lines.push(said);
        }
      }
    })();
    const err = (async () => {
      for await (
        const text of child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        this.stderr = (this.stderr + text).slice(-16_384);
      }
    })();
    this.done = Promise.all([out, err, child.status]);
  }

  kill() {
    if (this.killed) return;
    this.killed = true;
    try {
      this.child.kill("SIGKILL");
    } catch { /* exited */ }
  }

  /** Its intervals; an open one ends at its last deadline. */
  intervals(): Interval[] {
    const out: Interval[] = [];
    let open: Interval | undefined;
    for (const line of this.lines) {
      if (line.e === "elected") {
        assert.equal(open, undefined, `${this.name}: elected twice`);
        open = {
          who: this.name,
          token: line.token,
          start: line.t,
          end: line.t,
          how: "open",
        };
      } else if (open && line.e === "deadline") {
        open.end = Math.max(open.end, line.t);
      } else if (open && line.e === "deposed") {
        assert.equal(line.token, open.token);
        open.end = line.t;
        open.how = line.reason!;
        out.push(open);
        open = undefined;
      }
    }
    if (open) out.push({ ...open, how: "killed" });
    return out;
  }
}

/**
 * Fails on two intervals that overlap and on a token that does not grow.
 *
 * @param intervals Every believed-leadership interval.
 */
function check(intervals: Interval[]) {
  const sorted = [...intervals].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1];
    const after = sorted[i];
    const show = (x: Interval) =>
      `${x.who} token ${x.token} [${x.start.toFixed(1)}, ${
        x.end.toFixed(1)
      }] (${x.how})`;
    assert.ok(
      after.start >= before.end,
      `two leaders at once: ${show(before)} and ${show(after)}`,
    );
    assert.ok(
      after.token > before.token,
      `the token did not grow: ${show(before)} then ${show(after)}`,
    );
  }
}

/**
 * What one agent says of the set: `discover.leader`, `discover.owners`
 * (every instance, passing or not), `discover.status`, and a subscription
 * of its own. Through a client of its own, straight to the agent.
 *
 * @param url The agent's URL.
 * @returns Lines to print.
 */
async function agentSays(url: string): Promise<string> {
  const signal = AbortSignal.timeout(5000);
  try {
    const probe = await connect(url, { reconnect: false, signal });
    try {
      const filter = { shard: "1" };
      const status = await probe.status({ signal });
      const leader = await probe.leader("db", { filter, signal });
      const { owners } = await probe.owners("db", { health: "any", signal });
      const set = await probe.services("db", { filter, signal });
      return [
        `status: backend ${
          status.connected ? "reachable" : "unreachable"
        }, revision ${status.revision}, ${JSON.stringify(status.instances)}`,
        `leader: ${short(leader)}`,
        `owners: ${JSON.stringify(owners)}`,
        `subscription: ${set.connected ? "in sync" : "stale"}, leader ${
          short(set.leader())
        }, ${set.online().map(short).join(" ")}`,
      ].join("\n  ");
    } finally {
      await probe.close();
    }
  } catch (error) {
    return `no answer: ${String(error)}`;
  }
}

function wholeNumber(name: string, fallback: number): number {
  const text = Deno.env.get(name);
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(
      `${name} must be a whole number: current value is '${text}'`,
    );
  }
  return value;
}

const ROUNDS = wholeNumber("DISCOVER_CAMPAIGN_ROUNDS", 16);
const SEED = wholeNumber(
  "DISCOVER_CAMPAIGN_SEED",
  Math.floor(Math.random() * 2 ** 31),
);

/** The store the agents share, for {@linkcode campaignFaults}. */
interface FaultStore {
  /** `etcd` or `zookeeper`, for what the test prints. */
  name: string;
  /** The port of the store's (first) server: each agent's path proxies to it. */
  port: number;
  /** The agent's arguments for its backend, its path to the store on `port`. */
  args(port: number): string[];
  /** What the store holds of the test's records over time, after a failed check. */
  history?(): Promise<string>;
}

/** Runs the rounds of faults on agents sharing `store`, and checks the invariant. */
async function campaignFaults(store: FaultStore) {
  console.log(
    `campaign faults (${store.name}) seed=${SEED} rounds=${ROUNDS} (reproduce: DISCOVER_CAMPAIGN_SEED=${SEED} DISCOVER_CAMPAIGN_ROUNDS=${ROUNDS})`,
  );
  const rng = new Random(SEED);
  const paths = [tcpProxy(store.port), tcpProxy(store.port)];
  const agentArgs = (i: number) => [
    ...store.args(paths[i].port),
    "--ttl",
    "3",
    "--log-level",
    "info",
  ];
  const agents: AgentProcess[] = [];
  /** The logs of every agent process, restarted ones too. */
  const agentLogs: (() => string)[] = [];
  const spawn = async (i: number) => {
    const agent = await spawnAgent(agentArgs(i));
    agentLogs.push(() =>
      `agent ${i} pid ${agent.child.pid}:\n${agent.stderr()}`
    );
    return agent;
  };
  const campaigners: Campaigner[] = [];
  const proxies: TcpProxy[] = [];
  const all: Campaigner[] = [];
  const faults: string[] = [];
  let spawned = 0;
  const portOf = (agent: AgentProcess) => Number(new URL(agent.url).port);
  const start = (slot: number) => {
    const agent = slot % 2;
    const proxy = proxies[slot];
    const c = new Campaigner(`10.0.0.${++spawned}:5432`, proxy, agent);
    campaigners[slot] = c;
    all.push(c);
  };
  try {
    for (const i of [0, 1]) agents.push(await spawn(i));
    for (let slot = 0; slot < 4; slot++) {
      proxies.push(tcpProxy(portOf(agents[slot % 2])));
      start(slot);
    }
    const elected = () =>
      campaigners.some((c) => {
        const last = c.lines.at(-1);
        return !c.killed && last !== undefined && last.e !== "deposed";
      });
    await until(elected, "a first leader", 30_000);
    for (let round = 0; round < ROUNDS; round++) {
      const kind = rng.int(0, 6);
      const slot = rng.int(0, 3);
      const which = rng.int(0, 1);
      const ms = rng.int(500, 4000);
      const leader = campaigners.findIndex((c) => {
        const last = c.lines.at(-1);
        return last !== undefined && last.e !== "deposed";
      });
      // Half the campaigner faults hit the leader, when there is one.
      const target = leader >= 0 && rng.next() < 0.5 ? leader : slot;
      const agentOfTarget = target % 2;
      switch (kind) {
        case 0: {
          faults.push(`kill campaigner ${campaigners[target].name}`);
          campaigners[target].kill();
          await sleep(ms);
          start(target);
          break;
        }
        case 1: {
          faults.push(`cut ${campaigners[target].name}`);
          proxies[target].cut();
          await sleep(ms);
          break;
        }
        case 2: {
          faults.push(`freeze ${campaigners[target].name} ${ms} ms`);
          proxies[target].freeze();
          await sleep(ms);
          proxies[target].thaw(rng.next() < 0.5 ? "resume" : "reset");
          break;
        }
        case 3: {
          const agent = leader >= 0 ? agentOfTarget : which;
          faults.push(
            `blackhole agent ${agent}'s ${store.name} path ${ms} ms`,
          );
          paths[agent].freeze();
          await sleep(ms);
          paths[agent].thaw("reset");
          break;
        }
        case 4: {
          const agent = leader >= 0 ? agentOfTarget : which;
          faults.push(`SIGKILL agent ${agent}`);
          agents[agent].kill("SIGKILL");
          await agents[agent].stop();
          await sleep(ms / 2);
          agents[agent] = await spawn(agent);
          for (let s = agent; s < 4; s += 2) {
            proxies[s].target = portOf(agents[agent]);
            proxies[s].cut();
          }
          break;
        }
        default: {
          const agent = leader >= 0 ? agentOfTarget : which;
          faults.push(`SIGSTOP agent ${agent} ${ms} ms`);
          agents[agent].kill("SIGSTOP");
          await sleep(ms);
          agents[agent].kill("SIGCONT");
          break;
        }
      }
      await sleep(rng.int(300, 1500));
    }
    // The faults stop: someone leads again.
    await until(
      elected,
      `a leader after the faults (${faults.join("; ")})`,
      // Generous: the whole suite runs beside it on 2 busy cores.
      40_000,
    ).catch(async (error) => {
      // What each campaigner believes and what each agent says.
      for (const c of campaigners) {
        console.log(
          `${c.name} (agent ${c.agent}): state ${
            JSON.stringify(c.state)
          }\n  last lines ${JSON.stringify(c.lines.slice(-3))}\n  stderr ${
            c.stderr.slice(-1500)
          }`,
        );
      }
      for (const [i, agent] of agents.entries()) {
        console.log(`agent ${i}:\n  ${await agentSays(agent.url)}`);
      }
      for (const [i, log] of agentLogs.entries()) {
        console.log(`agent log ${i}:\n${log().slice(-30_000)}`);
      }
      throw error;
    });
  } finally {
    for (const c of all) c.kill();
    await Promise.all(all.map((c) => c.done));
    for (const agent of agents) await agent.stop().catch(() => {});
    for (const p of [...proxies, ...paths]) p.close();
  }
  const intervals = all.flatMap((c) => c.intervals());
  console.log(
    `campaign faults seed=${SEED}: ${intervals.length} leadership intervals, ${all.length} campaigners; faults: ${
      faults.join("; ")
    }`,
  );
  assert.ok(intervals.length >= 2, "leadership changed hands at least once");
  try {
    check(intervals);
  } catch (error) {
    console.log(
      `${store.name} history:\n${await store.history?.() ?? "(not kept)"}`,
    );
    for (const [i, agent] of agents.entries()) {
      console.log(`agent ${i}:\n${agent.stderr().slice(-20000)}`);
    }
    for (const c of all) {
      console.log(`${c.name}:\n${c.stderr.slice(-6000)}`);
    }
    for (const i of intervals.sort((a, b) => a.start - b.start)) {
      console.log(JSON.stringify(i));
    }
    throw error;
  }
}

Deno.test(
  "campaign faults on etcd: never two leaders at once, tokens always grow",
  storeTest,
  async () => {
    await using cluster = await startEtcd();
    const prefix = `/cf-${SEED.toString(16)}/`;
    await campaignFaults({
      name: "etcd",
      port: Number(new URL(cluster.endpoints[0]).port),
      args: (port) => [
        "--backend",
        "etcd",
        "--etcd-endpoints",
        `http://127.0.0.1:${port}`,
        "--etcd-prefix",
        prefix,
        "--etcd-lease-ttl",
        "3",
      ],
      history: () => etcdHistory(cluster.endpoints, prefix),
    });
  },
);

Deno.test(
  "campaign faults on ZooKeeper: never two leaders at once, tokens always grow",
  storeTest,
  async () => {
    await using zk = await startZooKeeper(1);
    await campaignFaults({
      name: "zookeeper",
      port: Number(zk.members[0].address.split(":")[1]),
      args: (port) => [
        "--backend",
        "zookeeper",
        "--zk-connect",
        `127.0.0.1:${port}`,
        "--zk-prefix",
        `/cf-${SEED.toString(16)}`,
        "--zk-session-timeout",
        "3",
      ],
    });
  },
);

/** Every put and delete under `prefix` from etcd's history, one a line. */
async function etcdHistory(hosts: string[], prefix: string): Promise<string> {
  const client = new Etcd3({ hosts });
  const lines: string[] = [];
  try {
    const watcher = await client.watch().prefix(prefix).startRevision("1")
      .withPreviousKV().create();
    watcher.on("put", (kv) => {
      lines.push(
        `rev ${kv.mod_revision} put ${kv.key} created ${kv.create_revision} lease ${kv.lease}`,
      );
    });
    watcher.on("delete", (kv, previous) => {
      lines.push(
        `rev ${kv.mod_revision} delete ${kv.key} (lease ${previous?.lease})`,
      );
    });
    await sleep(1500);
    await watcher.cancel();
  } finally {
    client.close();
  }
  return lines.join("\n");
}
