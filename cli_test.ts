// Copyright the discover authors. BSD-3-Clause license.

/**
 * The command line of `discover` without an agent: how arguments are read
 * and refused, and what is printed. `tests/cli_test.ts` runs the program
 * against real agents.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  AGENT_ENV,
  type Command,
  DEFAULT_AGENT,
  helpText,
  parseCheck,
  parseCommandLine,
  parseHealth,
  parsePairs,
  parseTarget,
  UsageError,
} from "./cli/_args.ts";
import {
  formatAge,
  formatAttrs,
  formatHealth,
  formatInstances,
  formatServices,
  formatStatus,
  formatTable,
  formatUpdate,
} from "./cli/_format.ts";
import type { Instance, InstanceOwner, StatusResult } from "./mod.ts";

const noEnv = { env: () => undefined };

function parse(...args: string[]): Command {
  return parseCommandLine(args, noEnv);
}

/** The usage error `args` gives: its message and help pointer. */
function refused(args: string[], env?: Record<string, string>) {
  try {
    parseCommandLine(args, { env: (name) => env?.[name] });
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return { message: error.message, help: error.help };
  }
  assert.fail(`accepted: ${JSON.stringify(args)}`);
}

Deno.test("each command reads its arguments and flags", () => {
  assert.deepEqual(parse("services"), {
    name: "services",
    agent: DEFAULT_AGENT,
    json: false,
  });
  assert.deepEqual(parse("status", "--json"), {
    name: "status",
    agent: DEFAULT_AGENT,
    json: true,
  });
  assert.deepEqual(parse("ls", "cache", "--filter", "zone=b", "--filter=a=1"), {
    name: "ls",
    agent: DEFAULT_AGENT,
    json: false,
    service: "cache",
    filter: { zone: "b", a: "1" },
    health: "passing",
  });
  assert.deepEqual(parse("watch", "cache"), {
    name: "watch",
    agent: DEFAULT_AGENT,
    json: false,
    service: "cache",
    filter: {},
    health: "passing",
  });
  assert.deepEqual(parse("unregister", "cache", "Cache-1.Example:6379"), {
    name: "unregister",
    agent: DEFAULT_AGENT,
    json: false,
    service: "cache",
    target: "cache-1.example:6379",
  });
  assert.deepEqual(
    parse("register", "web", "8080", "--attr", "zone=b", "--attr", "e="),
    {
      name: "register",
      agent: DEFAULT_AGENT,
      json: false,
      service: "web",
      target: 8080,
      attrs: { zone: "b", e: "" },
    },
  );
});

Deno.test("--health of ls and watch: passing by default, or any", () => {
  for (const name of ["ls", "watch"]) {
    const health = (...flags: string[]) =>
      (parse(name, "web", ...flags) as { health: string }).health;
    assert.equal(health(), "passing");
    assert.equal(health("--health", "passing"), "passing");
    assert.equal(health("--health", "any"), "any");
    assert.equal(health("--health=any"), "any");
    const bad = refused([name, "web", "--health", "critical"]);
    assert.equal(
      bad.message,
      `--health must be "passing" or "any": got "critical"`,
    );
    assert.equal(bad.help, `discover ${name} --help`);
    assert.match(
      refused([name, "web", "--health"]).message,
      /^--health needs a value: --health passing\|any$/,
    );
  }
  assert.equal(parseHealth(undefined), "passing");
  assert.throws(() => parseHealth("ANY"), /^UsageError: --health must be/);
  // Only ls and watch read by health.
  assert.match(
    refused(["services", "--health", "any"]).message,
    /^unknown flag '--health': it is a flag of 'discover ls'$/,
  );
});

Deno.test("register: --check-http or --check-tcp, with --check-interval and --check-timeout", () => {
  const base = {
    name: "register",
    agent: DEFAULT_AGENT,
    json: false,
    service: "web",
    target: 8080,
    attrs: {},
  };
  assert.deepEqual(
    parse("register", "web", "8080", "--check-http", "http://127.0.0.1:8080/h"),
    { ...base, check: { http: "http://127.0.0.1:8080/h" } },
  );
  assert.deepEqual(
    parse(
      "register",
      "web",
      "8080",
      "--check-tcp",
      "LocalHost:8080",
      "--check-interval",
      "0.5",
      "--check-timeout=.2",
      "--",
      "./server",
    ),
    {
      ...base,
      check: { tcp: "localhost:8080", interval: 0.5, timeout: 0.2 },
      run: ["./server"],
    },
  );
  // Without a check flag there is no check.
  assert.ok(!("check" in parse("register", "web", "8080")));
  assert.equal(parseCheck({}), undefined);
  // The URL as the agent will see it.
  assert.deepEqual(parseCheck({ http: "HTTP://Example.COM:80/h?x" }), {
    http: "http://example.com/h?x",
  });
});

Deno.test("register: a wrong check is a usage error with the protocol's rule", () => {
  const url = ["--check-http", "http://127.0.0.1:8080/h"];
  const cases: [string[], RegExp][] = [
    [
      [...url, "--check-tcp", "127.0.0.1:8080"],
      /^give one check, --check-http URL or --check-tcp HOST:PORT: got both \(--check-http 'http:\/\/127\.0\.0\.1:8080\/h' and --check-tcp '127\.0\.0\.1:8080'\)$/,
    ],
    [
      ["--check-interval", "5"],
      /^--check-interval is only for a health check: give --check-http URL or --check-tcp HOST:PORT too$/,
    ],
    [
      ["--check-timeout", "1"],
      /^--check-timeout is only for a health check: give --check-http URL or --check-tcp HOST:PORT too$/,
    ],
    [
      [...url, "--check-interval", "5s"],
      /^--check-interval must be a number of seconds from 0\.1 to 86400: got "5s"$/,
    ],
    [
      [...url, "--check-interval", "0"],
      /^--check-interval must be a number of seconds from 0\.1 to 86400: got '0'$/,
    ],
    [
      [...url, "--check-interval=-1"],
      /^--check-interval must be a number of seconds from 0\.1 to 86400: got '-1'$/,
    ],
    [
      [...url, "--check-interval", "100000"],
      /^--check-interval must be a number of seconds from 0\.1 to 86400/,
    ],
    [
      [...url, "--check-timeout", "9"],
      /^--check-timeout must be above 0 and below --check-interval \(5 s\): got '9'$/,
    ],
    [
      [...url, "--check-interval", "1", "--check-timeout", "1"],
      /^--check-timeout must be above 0 and below --check-interval \(1 s\): got '1'$/,
    ],
    [
      ["--check-http", "ftp://127.0.0.1/h"],
      /^--check-http must be an http:\/\/ or https:\/\/ URL of at most 2048 characters: got "ftp:\/\/127\.0\.0\.1\/h"$/,
    ],
    [["--check-http", "not a url"], /^--check-http must be an http:\/\//],
    [["--check-tcp", "8080"], /^--check-tcp must be host:port .*: got "8080"$/],
    [[...url, "--check-interval"], /^--check-interval needs a value/],
  ];
  for (const [flags, message] of cases) {
    const error = refused(["register", "web", "8080", ...flags]);
    assert.match(error.message, message, flags.join(" "));
    assert.equal(error.help, "discover register --help");
  }
  // Only register takes a check.
  assert.match(
    refused(["ls", "web", ...url]).message,
    /^unknown flag '--check-http': it is a flag of 'discover register'$/,
  );
});

Deno.test("register takes the command to run after '--', flags and all", () => {
  const command = parse(
    "register",
    "web",
    "[::1]:8080",
    "--json",
    "--",
    "./server",
    "--port",
    "8080",
    "--",
    "x",
  );
  assert.equal(command.name, "register");
  assert.ok(command.name === "register");
  assert.equal(command.target, "[::1]:8080");
  assert.equal(command.json, true);
  assert.deepEqual(command.run, ["./server", "--port", "8080", "--", "x"]);
  // Without '--' nothing runs.
  assert.ok(!("run" in parse("register", "web", "8080")));
});

Deno.test("global flags go before or after the command; a leading '--' is skipped", () => {
  const expected = {
    name: "services",
    agent: "ws://10.0.0.1:1111",
    json: true,
  };
  assert.deepEqual(
    parse("--agent", "ws://10.0.0.1:1111", "--json", "services"),
    expected,
  );
  assert.deepEqual(
    parse("services", "--agent=ws://10.0.0.1:1111", "--json"),
    expected,
  );
  // `deno task cli -- services ...` passes the '--' on.
  assert.deepEqual(
    parse("--", "services", "--json", "--agent", "ws://10.0.0.1:1111"),
    expected,
  );
});

Deno.test("the agent comes from --agent, else DISCOVER_AGENT, else the default", () => {
  const env = (value: string) => ({
    env: (name: string) => name === AGENT_ENV ? value : undefined,
  });
  const agent = (args: string[], options = {}) =>
    (parseCommandLine(args, options) as { agent: string }).agent;
  assert.equal(agent(["status"]), "ws://127.0.0.1:1111");
  assert.equal(agent(["status"], env("wss://a.example/")), "wss://a.example/");
  assert.equal(agent(["status"], env("")), "ws://127.0.0.1:1111");
  assert.equal(
    agent(["status", "--agent", "ws://b:2"], env("ws://a:1")),
    "ws://b:2",
  );
  // The message names where the bad URL came from.
  assert.match(
    refused(["status"], { [AGENT_ENV]: "http://a:1" }).message,
    /^\$DISCOVER_AGENT must be a ws:\/\/ or wss:\/\/ URL .*: got 'http:\/\/a:1'$/,
  );
  assert.match(
    refused(["status", "--agent", "127.0.0.1:1111"]).message,
    /^--agent must be a ws:\/\/ or wss:\/\/ URL .*: got '127.0.0.1:1111'$/,
  );
  assert.match(
    refused(["status", "--agent", "ws://a:1/#x"]).message,
    /--agent must not have a fragment/,
  );
});

Deno.test("help: at the top, per command, and as 'help COMMAND'", () => {
  const top = parse("--help");
  assert.equal(top.name, "help");
  assert.ok(top.name === "help");
  for (
    const name of [
      "services",
      "ls",
      "watch",
      "status",
      "register",
      "unregister",
    ]
  ) {
    assert.match(top.text, new RegExp(`^  ${name}\\b`, "m"));
    const own = parse(name, "-h");
    assert.ok(own.name === "help");
    assert.match(own.text, new RegExp(`^Usage: discover ${name}\\b`));
    assert.match(own.text, /--agent URL/);
    assert.match(own.text, /Exit codes: 0 done; 1 failure .* 2 usage error/s);
    assert.deepEqual(parse("help", name), own);
  }
  assert.match(helpText("ls"), /--filter KEY=VALUE/);
  assert.match(helpText("register"), /--attr KEY=VALUE/);
  assert.match(helpText("register"), /128 plus the signal number/);
  assert.match(helpText("register"), /--check-http URL/);
  assert.match(helpText("register"), /--check-tcp HOST:PORT/);
  assert.match(helpText("register"), /starts\s+critical/);
  assert.match(helpText("register"), /The agent runs the check, not discover/);
  assert.match(helpText("register"), /sidecar/);
  assert.match(helpText("ls"), /--health passing\|any/);
  assert.match(helpText("ls"), /ADDR<TAB>ATTRS<TAB>HEALTH<TAB>NOTE/);
  assert.match(
    helpText("watch"),
    /KIND<TAB>ADDR<TAB>ATTRS<TAB>HEALTH<TAB>NOTE/,
  );
  assert.doesNotMatch(helpText("ls"), /--attr/);
  // Help wins over what else is wrong, as long as the flags are known.
  assert.equal(parse("ls", "--help").name, "help");
  assert.equal(parse("register", "web", "--help").name, "help");
});

Deno.test("a wrong command, flag or argument is a usage error naming it", () => {
  const cases: [string[], RegExp, string][] = [
    [[], /^a command is needed: one of services, ls, watch/, "discover"],
    [
      ["lst"],
      /^unknown command 'lst': the commands are services, ls/,
      "discover",
    ],
    [
      ["ls", "web", "--verbose"],
      /^unknown flag '--verbose': the flags of 'discover ls' are --filter, --health, --agent, --json, --help$/,
      "discover ls",
    ],
    [
      ["ls", "web", "--attr", "a=1"],
      /^unknown flag '--attr': it is a flag of 'discover register'$/,
      "discover ls",
    ],
    [["ls", "web", "-x"], /^unknown flag '-x'/, "discover ls"],
    [["status", "--json=yes"], /^--json takes no value$/, "discover status"],
    [
      ["status", "--agent"],
      /^--agent needs a value: --agent URL$/,
      "discover status",
    ],
    [
      ["ls", "web", "--filter", "-a=1"],
      /^the value of --filter starts with '-': write it as --filter=VALUE$/,
      "discover ls",
    ],
    [["ls"], /^ls needs SERVICE; usage: discover ls SERVICE/, "discover ls"],
    [
      ["register", "web"],
      /^register needs PORT\|HOST:PORT; usage: discover register/,
      "discover register",
    ],
    [
      ["ls", "web", "api"],
      /^unexpected argument 'api' for ls; usage: discover ls SERVICE/,
      "discover ls",
    ],
    [
      ["register", "web", "80", "./server", "8080"],
      /^unexpected argument '\.\/server' for register; to run a command, put it after '--': discover register web 80 -- \.\/server 8080$/,
      "discover register",
    ],
    [
      ["register", "web", "80", "./server", "-v"],
      /^unknown flag '-v': .*; a flag of the command to run goes after '--': discover register SERVICE PORT -- COMMAND -v$/,
      "discover register",
    ],
    [
      ["register", "web", "80", "--"],
      /^'--' must be followed by the command to run/,
      "discover register",
    ],
    [
      ["status", "--", "x"],
      /^unexpected argument 'x' for status/,
      "discover status",
    ],
    [
      ["ls", "no/slash"],
      /^'SERVICE' must be 1 to 63 characters of A-Z a-z 0-9 \. _ - starting with a letter or digit: got "no\/slash"$/,
      "discover ls",
    ],
    [
      ["ls", "web", "--filter", "zone"],
      /^--filter must be KEY=VALUE \(e\.g\. --filter zone=b\): got 'zone'$/,
      "discover ls",
    ],
    [
      ["watch", "web", "--filter", "=b"],
      /^--filter must be KEY=VALUE .*: got '=b'$/,
      "discover watch",
    ],
    [["help", "lst"], /^unknown command 'lst'/, "discover"],
  ];
  for (const [args, message, help] of cases) {
    const error = refused(args);
    assert.match(error.message, message, JSON.stringify(args));
    assert.equal(error.help, `${help} --help`, JSON.stringify(args));
  }
});

Deno.test("KEY=VALUE pairs: the value may hold '=', keys follow the protocol, once each", () => {
  assert.deepEqual(parsePairs("attr", ["url=http://a/?b=c", "k="]), {
    url: "http://a/?b=c",
    k: "",
  });
  assert.throws(
    () => parsePairs("attr", ["bad key=1"]),
    /^UsageError: --attr key 'bad key' must be 1 to 64 characters of A-Z a-z 0-9 \. _ - : starting with a letter or digit \(in 'bad key=1'\)$/,
  );
  assert.throws(
    () => parsePairs("attr", ["zone=a", "zone=b"]),
    /--attr gives key 'zone' twice \('zone=a' and 'zone=b'\): give each key once/,
  );
  assert.throws(
    () => parsePairs("attr", [`big=${"x".repeat(1025)}`]),
    /'--attr\.big' must be at most 1024 characters/,
  );
  const many = Array.from({ length: 65 }, (_, i) => `k${i}=v`);
  assert.throws(() => parsePairs("filter", many), /at most 64 keys: got 65/);
});

Deno.test("PORT|HOST:PORT: a port, or a canonical address", () => {
  assert.equal(parseTarget("1"), 1);
  assert.equal(parseTarget("65535"), 65535);
  assert.equal(parseTarget("010.0.0.7:80"), "10.0.0.7:80");
  assert.equal(parseTarget("[0:0::1]:80"), "[::1]:80");
  for (const bad of ["0", "65536", "99999999999999999999"]) {
    assert.throws(
      () => parseTarget(bad),
      new RegExp(`^UsageError: PORT must be from 1 to 65535: got '${bad}'$`),
    );
  }
  for (const bad of ["web", "host:0", "host:", ":80", "-1", "1.5", "a b:80"]) {
    assert.throws(
      () => parseTarget(bad),
      /^UsageError: PORT\|HOST:PORT must be a port from 1 to 65535, or HOST:PORT .*: got '/,
      bad,
    );
  }
});

Deno.test("attributes print as KEY=VALUE, odd values as JSON strings", () => {
  assert.equal(formatAttrs({}), "");
  assert.equal(
    formatAttrs({ zone: "b", url: "http://a:1/x", v: "1.2.3+build,x@y%z" }),
    "zone=b url=http://a:1/x v=1.2.3+build,x@y%z",
  );
  assert.equal(
    formatAttrs({ note: "two words", tab: "a\tb", empty: "", q: '"' }),
    'note="two words" tab="a\\tb" empty="" q="\\""',
  );
  // One line whatever the values hold, and no terminal escapes.
  const odd = formatAttrs({
    nl: "a\nb",
    esc: "\x1b[31m",
    csi: "\x9b31m",
    rtl: "\u202eab",
  });
  assert.equal(
    odd,
    'nl="a\\nb" esc="\\u001b[31m" csi="\\u009b31m" rtl="\\u202eab"',
  );
  // JSON.parse reads each value back.
  assert.equal(JSON.parse('"\\u009b31m"'), "\x9b31m");
});

Deno.test("ages in their largest whole unit", () => {
  assert.equal(formatAge(-5), "0s");
  assert.equal(formatAge(59_999), "59s");
  assert.equal(formatAge(60_000), "1m");
  assert.equal(formatAge(3_599_999), "59m");
  assert.equal(formatAge(3_600_000), "1h");
  assert.equal(formatAge(86_400_000 * 3), "3d");
});

Deno.test("tables: aligned with a header on a terminal, tab-separated otherwise", () => {
  const rows = [["cache", "12"], ["a-long-name", "1"]];
  assert.deepEqual(formatTable(["SERVICE", "INSTANCES"], rows, { tty: true }), [
    "SERVICE      INSTANCES",
    "cache        12",
    "a-long-name  1",
  ]);
  assert.deepEqual(
    formatTable(["SERVICE", "INSTANCES"], rows, { tty: false }),
    [
      "cache\t12",
      "a-long-name\t1",
    ],
  );
});

const catalog = {
  revision: 9,
  services: [
    { service: "api", instances: 1 },
    { service: "web", instances: 12 },
  ],
};

Deno.test("services: JSON array, table, or lines", () => {
  assert.deepEqual(
    JSON.parse(formatServices(catalog, { tty: false, json: true })[0]),
    catalog.services,
  );
  assert.deepEqual(formatServices(catalog, { tty: false, json: false }), [
    "api\t1",
    "web\t12",
  ]);
  assert.deepEqual(formatServices(catalog, { tty: true, json: false }), [
    "SERVICE  INSTANCES",
    "api      1",
    "web      12",
  ]);
  const none = { revision: 0, services: [] };
  assert.deepEqual(formatServices(none, { tty: true, json: false }), [
    "(no services)",
  ]);
  assert.deepEqual(formatServices(none, { tty: false, json: false }), []);
  assert.deepEqual(formatServices(none, { tty: false, json: true }), ["[]"]);
});

function instance(addr: string, attrs = {}, registeredAt = 0): Instance {
  return {
    id: `web/${addr}`,
    service: "web",
    addr,
    attrs,
    revision: 3,
    registeredAt,
    created: 3,
    health: "passing",
  };
}

Deno.test("ls: instances in address order, ports as numbers", () => {
  const now = 200_000;
  const list = [
    instance("10.0.0.2:80", {}, now - 5_000),
    instance("10.0.0.1:8080", { zone: "b" }, now - 120_000),
    instance("10.0.0.1:443", { note: "a b" }, now),
  ];
  assert.deepEqual(formatInstances(list, { tty: false, json: false, now }), [
    '10.0.0.1:443\tnote="a b"\tpassing\t\t\t',
    "10.0.0.1:8080\tzone=b\tpassing\t\t\t",
    "10.0.0.2:80\t\tpassing\t\t\t",
  ]);
  assert.deepEqual(formatInstances(list, { tty: true, json: false, now }), [
    "ADDR           HEALTH   AGE  OWNER  CLIENT  ATTRS",
    '10.0.0.1:443   passing  0s   -      -       note="a b"',
    "10.0.0.1:8080  passing  2m   -      -       zone=b",
    "10.0.0.2:80    passing  5s   -      -",
  ]);
  const json = JSON.parse(
    formatInstances(list, { tty: false, json: true, now })[0],
  );
  assert.deepEqual(json.map((i: Instance) => i.addr), [
    "10.0.0.1:443",
    "10.0.0.1:8080",
    "10.0.0.2:80",
  ]);
  assert.deepEqual(json[1], list[1]);
  assert.deepEqual(formatInstances([], { tty: true, json: false, now }), [
    "(no instances)",
  ]);
  assert.deepEqual(formatInstances([], { tty: false, json: true, now }), [
    "[]",
  ]);
});

Deno.test("ls: a critical instance shows its note", () => {
  const now = 60_000;
  const sick: Instance = {
    ...instance("10.0.0.1:80", { zone: "b" }, 0),
    health: "critical",
    note: "HTTP 500",
  };
  const list = [sick, instance("10.0.0.1:81", {}, now)];
  assert.deepEqual(formatInstances(list, { tty: false, json: false, now }), [
    "10.0.0.1:80\tzone=b\tcritical\tHTTP 500\t\t",
    "10.0.0.1:81\t\tpassing\t\t\t",
  ]);
  assert.deepEqual(formatInstances(list, { tty: true, json: false, now }), [
    "ADDR         HEALTH               AGE  OWNER  CLIENT  ATTRS",
    "10.0.0.1:80  critical (HTTP 500)  1m   -      -       zone=b",
    "10.0.0.1:81  passing              0s   -      -",
  ]);
  const json = JSON.parse(
    formatInstances(list, { tty: false, json: true, now })[0],
  );
  assert.deepEqual([json[0].health, json[0].note], ["critical", "HTTP 500"]);
  // A note stays one field of one line, and shows no terminal escapes.
  assert.deepEqual(
    formatHealth({ health: "critical", note: "a\tb\nc\x1b[31m" }),
    ["critical", '"a\\tb\\nc\\u001b[31m"'],
  );
  assert.deepEqual(formatHealth({ health: "critical", note: 'say "hi"' }), [
    "critical",
    '"say \\"hi\\""',
  ]);
  assert.deepEqual(formatHealth({ health: "critical" }), ["critical", ""]);
  assert.deepEqual(formatHealth({ health: "passing" }), ["passing", ""]);
});

Deno.test("ls: the owner of each instance, and its client's connection", () => {
  const now = 1_000_000;
  const list = [
    instance("10.0.0.1:80", { zone: "b" }, now - 3_000),
    instance("10.0.0.1:81", {}, now),
    instance("10.0.0.1:82", {}, now),
    instance("10.0.0.1:83", {}, now),
  ];
  const owners = new Map<string, InstanceOwner>([
    ["10.0.0.1:80", {
      addr: "10.0.0.1:80",
      owner: "c:Q2hhbmdl",
      client: "connected",
      token: "deployer",
    }],
    ["10.0.0.1:81", {
      addr: "10.0.0.1:81",
      owner: "c:AbCdEfGh",
      client: "lost",
      expires: now + 12_400,
    }],
    ["10.0.0.1:82", {
      addr: "10.0.0.1:82",
      owner: "s:a1b2c3:7",
      client: "elsewhere",
    }],
  ]);
  const options = { json: false, now, owners };
  // 10.0.0.1:83 left the set between the two reads: its owner is unknown.
  assert.deepEqual(formatInstances(list, { ...options, tty: false }), [
    "10.0.0.1:80\tzone=b\tpassing\t\tc:Q2hhbmdl\tconnected",
    "10.0.0.1:81\t\tpassing\t\tc:AbCdEfGh\tlost",
    "10.0.0.1:82\t\tpassing\t\ts:a1b2c3:7\telsewhere",
    "10.0.0.1:83\t\tpassing\t\t\t",
  ]);
  assert.deepEqual(formatInstances(list, { ...options, tty: true }), [
    "ADDR         HEALTH   AGE  OWNER                  CLIENT              ATTRS",
    "10.0.0.1:80  passing  3s   c:Q2hhbmdl (deployer)  connected           zone=b",
    "10.0.0.1:81  passing  0s   c:AbCdEfGh             lost (goes in 12s)",
    "10.0.0.1:82  passing  0s   s:a1b2c3:7             elsewhere",
    "10.0.0.1:83  passing  0s   -                      -",
  ]);
  const json = JSON.parse(
    formatInstances(list, { ...options, tty: false, json: true })[0],
  );
  assert.deepEqual(json[0], {
    ...list[0],
    owner: "c:Q2hhbmdl",
    client: "connected",
    token: "deployer",
  });
  assert.deepEqual(json[1], {
    ...list[1],
    owner: "c:AbCdEfGh",
    client: "lost",
    expires: now + 12_400,
  });
  assert.deepEqual(json[3], list[3]);
});

Deno.test("watch: one line per update", () => {
  const update = {
    kind: "update" as const,
    instance: instance("10.0.0.1:80", { zone: "b" }),
    revision: 7,
  };
  const now = new Date(2026, 0, 2, 3, 4, 5);
  assert.equal(
    formatUpdate(update, { tty: false, json: false, now }),
    "update\t10.0.0.1:80\tzone=b\tpassing\t",
  );
  assert.equal(
    formatUpdate(update, { tty: true, json: false, now }),
    "03:04:05  update  10.0.0.1:80  passing  zone=b",
  );
  assert.equal(
    formatUpdate({ ...update, kind: "up" }, { tty: true, json: false, now }),
    "03:04:05  up      10.0.0.1:80  passing  zone=b",
  );
  // A change of health (watch --health any), with its note.
  const critical = {
    ...update,
    instance: {
      ...update.instance,
      health: "critical" as const,
      note: "timeout",
    },
  };
  assert.equal(
    formatUpdate(critical, { tty: false, json: false, now }),
    "update\t10.0.0.1:80\tzone=b\tcritical\ttimeout",
  );
  assert.equal(
    formatUpdate(critical, { tty: true, json: false, now }),
    "03:04:05  update  10.0.0.1:80  critical (timeout)  zone=b",
  );
  assert.deepEqual(
    JSON.parse(formatUpdate(update, { tty: true, json: true, now })),
    update,
  );
});

Deno.test("watch: a change of leader, in the same style", () => {
  const leader = {
    kind: "leader" as const,
    instance: instance("10.0.0.1:80", { zone: "b" }),
    revision: 9,
  };
  const now = new Date(2026, 0, 2, 3, 4, 5);
  assert.equal(
    formatUpdate(leader, { tty: false, json: false, now }),
    "leader\t10.0.0.1:80\tzone=b\tpassing\t",
  );
  assert.equal(
    formatUpdate(leader, { tty: true, json: false, now }),
    "03:04:05  leader  10.0.0.1:80  passing  zone=b",
  );
  assert.deepEqual(
    JSON.parse(formatUpdate(leader, { tty: false, json: true, now })),
    leader,
  );
  // The set is empty: no leader.
  const none = { kind: "leader" as const, instance: undefined, revision: 10 };
  assert.equal(
    formatUpdate(none, { tty: false, json: false, now }),
    "leader\t\t\t\t",
  );
  assert.equal(
    formatUpdate(none, { tty: true, json: false, now }),
    "03:04:05  leader  (none)",
  );
  assert.deepEqual(
    JSON.parse(formatUpdate(none, { tty: false, json: true, now })),
    { kind: "leader", revision: 10, instance: null },
  );
});

Deno.test("status: one field a line, nested fields named with a dot", () => {
  const status: StatusResult = {
    version: "0.1.0",
    backend: "memory",
    connected: true,
    revision: 4,
    epoch: "e1",
    advertiseHost: "192.0.2.10",
    ttl: 10,
    limits: {
      maxFrameBytes: 1,
      maxBatch: 2,
      maxRegistrations: 3,
      maxSubscriptions: 4,
      maxSessions: 5,
      maxQueueBytes: 6,
    },
    instances: { registered: 2, passing: 1, critical: 1, checks: 1 },
  };
  const plain = formatStatus(status, { tty: false, json: false });
  assert.equal(plain[0], "version\t0.1.0");
  assert.ok(plain.includes("connected\ttrue"));
  assert.ok(plain.includes("limits.maxQueueBytes\t6"));
  assert.ok(plain.includes("instances.critical\t1"));
  assert.equal(plain.length, 17);
  const tty = formatStatus(status, { tty: true, json: false });
  assert.equal(tty[0], "version                  0.1.0");
  assert.equal(tty[12], "limits.maxQueueBytes     6");
  assert.deepEqual(
    JSON.parse(formatStatus(status, { tty: false, json: true })[0]),
    status,
  );
});
