// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  defaultAdvertiseHost,
  type HostAddress,
  joinHostPort,
  pickAdvertiseHost,
} from "./advertise.ts";

const v4 = (address: string): HostAddress => ({ family: "IPv4", address });
const v6 = (address: string): HostAddress => ({ family: "IPv6", address });

const LOOPBACK = [v4("127.0.0.1"), v4("127.1.2.3"), v6("::1")];
const LINK_LOCAL = [v4("169.254.10.20"), v6("fe80::1"), v6("FEBF::2")];
const UNIQUE_LOCAL = v6("fd12:3456::1");
const PRIVATE_V4 = v4("192.168.1.10");
const GLOBAL_V6 = v6("2001:db8::10");
const PUBLIC_V4 = v4("203.0.113.7");

Deno.test("pickAdvertiseHost() falls back to 127.0.0.1 when there is no address", () => {
  assert.equal(pickAdvertiseHost([]), "127.0.0.1");
});

Deno.test("pickAdvertiseHost() never picks a loopback or unspecified address", () => {
  assert.equal(pickAdvertiseHost(LOOPBACK), "127.0.0.1");
  assert.equal(pickAdvertiseHost([v6("::1")]), "127.0.0.1");
  assert.equal(pickAdvertiseHost([v4("0.0.0.0"), v6("::")]), "127.0.0.1");
  assert.equal(pickAdvertiseHost([...LOOPBACK, PRIVATE_V4]), "192.168.1.10");
});

Deno.test("pickAdvertiseHost() never picks a link-local address", () => {
  for (const address of LINK_LOCAL) {
    assert.equal(pickAdvertiseHost([address]), "127.0.0.1", address.address);
  }
  assert.equal(pickAdvertiseHost([...LOOPBACK, ...LINK_LOCAL]), "127.0.0.1");
  assert.equal(
    pickAdvertiseHost([...LINK_LOCAL, UNIQUE_LOCAL]),
    "fd12:3456::1",
  );
});

Deno.test("pickAdvertiseHost() ranks public IPv4 > global IPv6 > private IPv4 > unique-local IPv6", () => {
  const ranked = [PUBLIC_V4, GLOBAL_V6, PRIVATE_V4, UNIQUE_LOCAL];
  for (let best = 0; best < ranked.length; best++) {
    const candidates = [...LOOPBACK, ...LINK_LOCAL, ...ranked.slice(best)];
    const expected = ranked[best].address;
    // The order of the list does not matter.
    assert.equal(pickAdvertiseHost(candidates), expected);
    assert.equal(pickAdvertiseHost([...candidates].reverse()), expected);
  }
});

Deno.test("pickAdvertiseHost() treats RFC 1918 and carrier-grade NAT ranges as private", () => {
  for (
    const address of [
      "10.0.0.1",
      "10.255.255.254",
      "172.16.0.1",
      "172.31.255.254",
      "192.168.0.1",
      "100.64.0.1",
      "100.127.255.254",
    ]
  ) {
    // A private address loses to a global IPv6 one.
    assert.equal(
      pickAdvertiseHost([v4(address), GLOBAL_V6]),
      GLOBAL_V6.address,
      address,
    );
    // ... and beats a unique-local IPv6 one.
    assert.equal(pickAdvertiseHost([UNIQUE_LOCAL, v4(address)]), address);
  }
  for (
    const address of [
      "172.15.0.1",
      "172.32.0.1",
      "192.169.0.1",
      "100.63.0.1",
      "100.128.0.1",
      "11.0.0.1",
    ]
  ) {
    // Just outside those ranges: public, so it beats a global IPv6 address.
    assert.equal(pickAdvertiseHost([GLOBAL_V6, v4(address)]), address);
  }
});

Deno.test("pickAdvertiseHost() recognises IPv6 classes in any letter case", () => {
  assert.equal(
    pickAdvertiseHost([v6("FD00::1"), PRIVATE_V4]),
    PRIVATE_V4.address,
  );
  assert.equal(pickAdvertiseHost([v6("FC00::1"), v6("FE80::1")]), "FC00::1");
  // Upper-case link-local is still link-local: it loses to unique-local.
  assert.equal(pickAdvertiseHost([v6("FE80::1"), v6("FD00::1")]), "FD00::1");
});

Deno.test("pickAdvertiseHost() keeps the first of equally ranked addresses", () => {
  assert.equal(
    pickAdvertiseHost([v4("10.0.0.1"), v4("10.0.0.2")]),
    "10.0.0.1",
  );
  assert.equal(
    pickAdvertiseHost([v4("10.0.0.2"), v4("10.0.0.1")]),
    "10.0.0.2",
  );
});

Deno.test("defaultAdvertiseHost() picks from this host's interfaces", () => {
  assert.equal(
    defaultAdvertiseHost(),
    pickAdvertiseHost(Deno.networkInterfaces()),
  );
});

Deno.test("joinHostPort() brackets IPv6 hosts only", () => {
  assert.equal(joinHostPort("10.0.0.1", 80), "10.0.0.1:80");
  assert.equal(joinHostPort("cache.example", 6379), "cache.example:6379");
  assert.equal(joinHostPort("::1", 80), "[::1]:80");
  assert.equal(joinHostPort("2001:db8::7", 6379), "[2001:db8::7]:6379");
  assert.equal(joinHostPort("[::1]", 80), "[::1]:80");
});
