// Copyright the discover authors. BSD-3-Clause license.

/**
 * Runs real ZooKeeper servers (Debian's `zookeeper` package: the jar in
 * `/usr/share/java`, run with `java`) on free loopback ports, each with a
 * throwaway data directory, and removes everything when stopped: one
 * standalone server, or an ensemble of several (`QuorumPeerMain`, a
 * `myid` file each). A member can be killed, stopped (`SIGSTOP`), resumed
 * and started again.
 *
 * Ticks are short (200 ms by default) so that a lost member or an expired
 * session is noticed in seconds; session timeouts from 1 s to 60 s are
 * accepted whatever the tick.
 *
 * Each server logs its warnings and errors to `server.log` in its
 * directory. A start that fails (a server exits, or does not serve within
 * 30 s, where 1.5 s is usual) is tried again on new ports, three times in
 * all; the error of the last attempt quotes the end of the logs.
 *
 * @module
 */

import { freePort } from "./etcd.ts";
import { type RestartableProcess, restartableProcess } from "./_process.ts";

/** Where Debian's `zookeeper` package puts the server and its logging binding. */
export const ZOOKEEPER_CLASSPATH =
  "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/** One ZooKeeper server. */
export interface ZooKeeperMember {
  /** Member name, `zk1`... */
  readonly name: string;
  /** Client address, `127.0.0.1:PORT`. */
  readonly address: string;
  /** Whether the process is running (stopped with `SIGSTOP` counts as running). */
  readonly running: boolean;
  /** The process id, while running. */
  readonly pid: number | undefined;
  /** Sends a signal to the process (`SIGSTOP`, `SIGCONT`). */
  signal(signal: Deno.Signal): void;
  /** Kills the process (SIGKILL) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts the process again with the same data directory, and waits until it serves. */
  restart(): Promise<void>;
  /** What the server says of itself (`srvr`): its mode, `leader`, `follower` or `standalone`, if it serves. */
  mode(): Promise<string | undefined>;
}

/** A running standalone server or ensemble. */
export interface ZooKeeperEnsemble extends AsyncDisposable {
  /** The members. */
  readonly members: ZooKeeperMember[];
  /** The connect string, `127.0.0.1:P1,127.0.0.1:P2,...`. */
  readonly connect: string;
  /** Stops every member and removes the data directories. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startZooKeeper}. */
export interface StartZooKeeperOptions {
  /**
   * Length of a tick, in ms: the unit of ZooKeeper's timeouts.
   *
   * @default {200}
   */
  tickTime?: number;
  /**
   * Client ports of the members, in order (a member without one gets a
   * free port).
   */
  clientPorts?: number[];
}

/**
 * Fails with an install hint when `java` or the ZooKeeper jar is missing.
 *
 * @example Usage
 * ```ts ignore
 * import { requireZooKeeper } from "./zookeeper.ts";
 * await requireZooKeeper();
 * ```
 */
export async function requireZooKeeper(): Promise<void> {
  const hint =
    "install it (Debian/Ubuntu: apt-get install -y zookeeper default-jre-headless) and try again";
  try {
    await Deno.stat(ZOOKEEPER_CLASSPATH.split(":")[0]);
  } catch {
    throw new Error(
      `ZooKeeper is not installed (${
        ZOOKEEPER_CLASSPATH.split(":")[0]
      } is missing): ${hint}`,
    );
  }
  try {
    const out = await new Deno.Command("java", {
      args: ["-version"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) throw new Error("java -version failed");
  } catch {
    throw new Error(`java is not on PATH: ${hint}`);
  }
}

/**
 * Sends a four-letter command to a server and returns its answer.
 *
 * @example Usage
 * ```ts ignore
 * import { fourLetters } from "./zookeeper.ts";
 * console.log(await fourLetters("127.0.0.1:2181", "ruok")); // "imok"
 * ```
 *
 * @param address `host:port`.
 * @param command `ruok`, `srvr`, `mntr`...
 * @returns The answer, or `undefined` when the server does not answer within a second.
 */
export async function fourLetters(
  address: string,
  command: string,
): Promise<string | undefined> {
  const [hostname, port] = address.split(":");
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), 1000);
  try {
    conn = await Deno.connect({ hostname, port: Number(port) });
    await conn.write(new TextEncoder().encode(command));
    let text = "";
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return text;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch { /* closed by the timer */ }
  }
}

async function modeOf(address: string): Promise<string | undefined> {
  const text = await fourLetters(address, "srvr");
  return text ? /^Mode: (\S+)/m.exec(text)?.[1] : undefined;
}

/** How long one server may take to serve after it is started. */
const SERVE_TIMEOUT = 30_000;
/** How many times a start is tried, each on new ports. */
const START_ATTEMPTS = 3;

/** The last lines of a server's log, or a note that there is none. */
async function logTail(dir: string, lines = 15): Promise<string> {
  try {
    const text = await Deno.readTextFile(`${dir}/server.log`);
    return text.trimEnd().split("\n").slice(-lines).join("\n") || "(empty)";
  } catch {
    return "(no log)";
  }
}

async function waitServing(
  name: string,
  address: string,
  options: { proc: RestartableProcess; dir: string },
): Promise<void> {
  const deadline = Date.now() + SERVE_TIMEOUT;
  while (await modeOf(address) === undefined) {
    const { status } = options.proc;
    const why = status
      ? `exited with code ${status.code}`
      : Date.now() > deadline
      ? `did not serve in ${SERVE_TIMEOUT} ms`
      : undefined;
    if (why) {
      throw new Error(
        `ZooKeeper ${name} at ${address} ${why}; the end of its log:\n${await logTail(
          options.dir,
        )}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Starts `size` ZooKeeper servers (one: standalone; more: an ensemble)
 * and waits until every one serves.
 *
 * @example Usage
 * ```ts ignore
 * import { startZooKeeper } from "./zookeeper.ts";
 * await using zk = await startZooKeeper(3);
 * console.log(zk.connect); // "127.0.0.1:24123,127.0.0.1:27311,127.0.0.1:21950"
 * ```
 *
 * @param size Number of servers.
 * @param options The tick, and client ports.
 * @returns The running servers.
 */
export async function startZooKeeper(
  size = 1,
  options: StartZooKeeperOptions = {},
): Promise<ZooKeeperEnsemble> {
  await requireZooKeeper();
  for (let attempt = 1;; attempt++) {
    try {
      return await startOnce(size, options);
    } catch (error) {
      if (attempt === START_ATTEMPTS) throw error;
    }
  }
}

async function startOnce(
  size: number,
  options: StartZooKeeperOptions,
): Promise<ZooKeeperEnsemble> {
  const tickTime = options.tickTime ?? 200;
  const root = await Deno.makeTempDir({ prefix: "discover-zookeeper-" });
  const ports = Array.from({ length: size }, (_, i) => ({
    client: options.clientPorts?.[i] ?? freePort(),
    peer: freePort(),
    election: freePort(),
  }));
  const members = await Promise.all(ports.map(async (p, i) => {
    const name = `zk${i + 1}`;
    const dir = `${root}/${name}`;
    await Deno.mkdir(`${dir}/data`, { recursive: true });
    const lines = [
      `tickTime=${tickTime}`,
      `dataDir=${dir}/data`,
      `clientPort=${p.client}`,
      "clientPortAddress=127.0.0.1",
      "admin.enableServer=false",
      "minSessionTimeout=1000",
      "maxSessionTimeout=60000",
      "4lw.commands.whitelist=ruok,srvr,mntr,cons",
      "autopurge.purgeInterval=0",
    ];
    if (size > 1) {
      lines.push("initLimit=20", "syncLimit=5");
      ports.forEach((q, j) =>
        lines.push(`server.${j + 1}=127.0.0.1:${q.peer}:${q.election}`)
      );
      await Deno.writeTextFile(`${dir}/data/myid`, `${i + 1}\n`);
    }
    await Deno.writeTextFile(`${dir}/zoo.cfg`, lines.join("\n") + "\n");
    const main = size > 1
      ? "org.apache.zookeeper.server.quorum.QuorumPeerMain"
      : "org.apache.zookeeper.server.ZooKeeperServerMain";
    const proc: RestartableProcess = restartableProcess("java", [
      "-Xmx256m",
      "-XX:+UseSerialGC",
      "-XX:TieredStopAtLevel=1",
      "-Dzookeeper.jmx.log4j.disable=true",
      "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
      `-Dorg.slf4j.simpleLogger.logFile=${dir}/server.log`,
      "-Dorg.slf4j.simpleLogger.showDateTime=true",
      "-cp",
      ZOOKEEPER_CLASSPATH,
      main,
      `${dir}/zoo.cfg`,
    ], { cwd: dir });
    const address = `127.0.0.1:${p.client}`;
    const member: ZooKeeperMember & {
      spawn(): void;
      serving(): Promise<void>;
    } = {
      name,
      address,
      get running() {
        return proc.running;
      },
      get pid() {
        return proc.pid;
      },
      signal: (signal) => proc.signal(signal),
      kill: () => proc.kill(),
      async restart() {
        await proc.kill();
        proc.spawn();
        await waitServing(name, address, { proc, dir });
      },
      mode: () => modeOf(address),
      spawn: () => proc.spawn(),
      serving: () => waitServing(name, address, { proc, dir }),
    };
    return member;
  }));
  for (const member of members) member.spawn();
  const stop = async () => {
    await Promise.all(members.map((m) => m.kill()));
    // A server killed mid-write may leave a file being closed: try twice.
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await Deno.remove(root, { recursive: true });
        break;
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  };
  try {
    await Promise.all(members.map((m) => m.serving()));
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    members,
    connect: members.map((m) => m.address).join(","),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
