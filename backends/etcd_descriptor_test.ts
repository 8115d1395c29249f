// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { BackendContext, FlagValues } from "./descriptor.ts";
import { FlagError } from "./descriptor.ts";
import { ETCD_PASSWORD_ENV, etcdDescriptor } from "./etcd_descriptor.ts";
import { EtcdBackend } from "./etcd.ts";

/** Flag values with the descriptor's defaults, as the agent passes them. */
function values(given: Record<string, string> = {}): FlagValues {
  return Object.fromEntries(
    etcdDescriptor.flags.map((f) => [f.name, given[f.name] ?? f.default]),
  );
}

function context(
  files: Record<string, string> = {},
  env: Record<string, string> = {},
): BackendContext {
  return {
    log: { info() {}, warn() {} },
    env: (name) => env[name],
    readFile(flag, path) {
      if (path in files) {
        return Promise.resolve(new TextEncoder().encode(files[path]));
      }
      return Promise.reject(
        new FlagError(`--${flag}: cannot read '${path}': not found`),
      );
    },
  };
}

Deno.test("etcd descriptor: every flag is named etcd-*, with help", () => {
  assert.equal(etcdDescriptor.name, "etcd");
  for (const flag of etcdDescriptor.flags) {
    assert.match(flag.name, /^etcd-[a-z-]+$/);
    assert.ok(flag.help.length > 10, flag.name);
  }
});

Deno.test("etcd descriptor: the defaults build a backend without connecting", async () => {
  const backend = await etcdDescriptor.create(values(), context());
  assert.ok(backend instanceof EtcdBackend);
  assert.equal(backend.name, "etcd");
  await backend.close();
});

Deno.test("etcd descriptor: TLS files, user and fractional timeout are accepted", async () => {
  const backend = await etcdDescriptor.create(
    values({
      "etcd-endpoints": "https://a:2379, https://b:2379/",
      "etcd-ca": "/ca.pem",
      "etcd-cert": "/cert.pem",
      "etcd-key": "/key.pem",
      "etcd-username": "root",
      "etcd-timeout": "0.5",
    }),
    context(
      { "/ca.pem": "ca", "/cert.pem": "cert", "/key.pem": "key" },
      { [ETCD_PASSWORD_ENV]: "secret" },
    ),
  );
  assert.ok(backend instanceof EtcdBackend);
});

Deno.test("etcd descriptor: bad values are flag errors naming the flag", async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ "etcd-endpoints": "nope" }, /--etcd-endpoints must be .*'nope'/],
    [{ "etcd-endpoints": " , " }, /--etcd-endpoints must list at least one/],
    [
      { "etcd-endpoints": "https://127.0.0.1:2379" },
      /an https endpoint must name its host by DNS name.*'https:\/\/127\.0\.0\.1:2379'/,
    ],
    [
      { "etcd-endpoints": "https://[::1]:2379" },
      /an https endpoint must name its host by DNS name/,
    ],
    [{ "etcd-prefix": "discover" }, /--etcd-prefix must start and end/],
    [
      { "etcd-lease-ttl": "1" },
      /--etcd-lease-ttl must be a whole number of seconds, at least 2/,
    ],
    [{ "etcd-lease-ttl": "2.5" }, /--etcd-lease-ttl/],
    [{ "etcd-timeout": "0" }, /--etcd-timeout must be a number of seconds/],
    [{ "etcd-ca": "/missing.pem" }, /--etcd-ca: cannot read '\/missing.pem'/],
    [{ "etcd-cert": "/ca.pem" }, /--etcd-cert and --etcd-key go together/],
    [
      { "etcd-cert": "/ca.pem", "etcd-key": "/ca.pem" },
      /--etcd-cert needs --etcd-ca/,
    ],
    [{ "etcd-username": "root" }, new RegExp(ETCD_PASSWORD_ENV)],
  ];
  for (const [given, message] of cases) {
    await assert.rejects(
      etcdDescriptor.create(values(given), context({ "/ca.pem": "ca" })),
      (error: Error) =>
        error instanceof FlagError && message.test(error.message),
      JSON.stringify(given),
    );
  }
});
