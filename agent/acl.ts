// Copyright the discover authors. BSD-3-Clause license.

/**
 * Tokens and rules: who may read and change which services. The agent
 * loads them from the JSON file given with `--acl FILE` and loads it again
 * on `SIGHUP`, without dropping sessions.
 *
 * ## The file
 *
 * ```json
 * {
 *   "default": "read",
 *   "tokens": [
 *     {
 *       "name": "billing",
 *       "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
 *       "rules": [
 *         { "service": "billing", "access": "write" },
 *         { "service": "db-*", "access": "read" }
 *       ]
 *     },
 *     { "name": "ops@example", "sha256": "...", "rules": [{ "service": "*", "access": "admin" }] }
 *   ]
 * }
 * ```
 *
 * - `default` (`"deny"`, `"read"` or `"write"`; `"deny"` when absent): the
 *   access of a session without a token, and the least access of every
 *   token.
 * - `tokens` (empty when absent): each with a `name` (1 to 64 characters of
 *   `A-Z a-z 0-9 _ . @ -`, unique; sessions and logs show it), the `sha256`
 *   of the token (64 lowercase hex digits, unique), and `rules` (empty when
 *   absent): a `service` glob and an `access`.
 * - A key the format does not know, or a key repeated in one object, is an
 *   error: a misspelt `"acess"` would otherwise grant nothing without a word.
 *
 * The file holds only hashes, never tokens. Make a token and its hash with:
 *
 * ```sh
 * TOKEN=$(openssl rand -hex 32)
 * printf %s "$TOKEN" | sha256sum   # the "sha256" value (without the " -")
 * ```
 *
 * (`printf %s`, not `echo`: `echo` adds a newline, which would be hashed
 * too.)
 *
 * ## Access levels
 *
 * Ordered `none` < `read` < `write` < `admin`; each implies the ones below
 * it ({@linkcode allows}):
 *
 * - `read`: `discover.services`, `discover.subscribe`, `discover.catalog`,
 *   `discover.leader`;
 * - `write`: `discover.register`, `discover.unregister`, `discover.setHealth`
 *   (of the session's own instances);
 * - `admin`: also force-deregister any instance of the service, whoever
 *   owns it.
 *
 * ## A token's access to a service
 *
 * {@linkcode Acl.access}: the highest of the default (`"deny"` counts as
 * `none`) and the `access` of every rule of the token whose glob matches the
 * service ({@linkcode globMatch}: `*` any run of characters, `?` one
 * character). Rules only add: a token never has less than the default, and
 * the order of rules does not matter. A session without a token has the
 * default. Access to `"*"` means access to every service at once: only a
 * rule whose glob matches every service name, such as `*`, gives it
 * ({@linkcode Acl.access}). The agent itself filters a `"*"` subscription
 * and the catalog service by service, so they show a session what it may
 * read.
 *
 * ## Checking a token
 *
 * {@linkcode Acl.authenticate} hashes the token once (SHA-256, Web Crypto)
 * and compares the digest with every stored hash, all 32 bytes of each and
 * every hash whatever matched before, so the time it takes does not tell
 * how much of a guess was right, nor which token it was close to. Tokens
 * longer than {@linkcode MAX_TOKEN_LENGTH} characters are refused without
 * hashing.
 *
 * ## Guessing
 *
 * {@linkcode AuthLimiter} slows down guessing from one remote address: a
 * token bucket per address (5 failures at once, then 1 per second, by
 * default). Its memory is bounded: it remembers at most `maxAddresses`
 * addresses (10 000 by default), forgetting the one whose last failure is
 * oldest first, and forgets an address as soon as its bucket is full again.
 *
 * @module
 */

import { findDuplicateKey } from "../protocol/_json_keys.ts";
import { KeyedSerial } from "../protocol/keyed_serial.ts";
import { describeValue } from "../protocol/errors.ts";
import { ALL_SERVICES } from "../protocol/types.ts";
import { MAX_TOKEN_LENGTH } from "../protocol/validate.ts";

/** An access level, ordered `none` < `read` < `write` < `admin`. */
export type Access = "none" | "read" | "write" | "admin";

/** One rule of a token: the access it grants to the services its glob matches. */
export interface AclRule {
  /** A glob over service names ({@linkcode globMatch}). */
  service: string;
  /** The access granted. */
  access: Exclude<Access, "none">;
}

/** A token as the ACL shows it: its name and rules (its hash stays inside). */
export interface AclToken {
  /** The token's name. */
  name: string;
  /** Its rules, in file order. */
  rules: AclRule[];
}

/** Options of {@linkcode Acl.has}. */
export interface AclHasOptions {
  /**
   * The ACL the session authenticated against: the name must also stand for
   * the same token (the same hash) there, so a token replaced under the
   * same name at a reload does not carry its sessions over.
   */
  since?: Acl;
}

export { MAX_TOKEN_LENGTH } from "../protocol/validate.ts";

/** Longest glob in a rule. */
const MAX_GLOB_LENGTH = 128;
const NAME_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;
const GLOB_PATTERN = /^[A-Za-z0-9._*?-]+$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const LEVEL: Readonly<Record<Access, number>> = {
  none: 0,
  read: 1,
  write: 2,
  admin: 3,
};
const DEFAULTS = ["deny", "read", "write"] as const;
const RULE_ACCESS = ["read", "write", "admin"] as const;

/**
 * An ACL file (or text) that breaks a rule of the format, or that cannot be
 * read.
 *
 * @example Usage
 * ```ts
 * import { Acl, AclError } from "./acl.ts";
 * try {
 *   Acl.parse('{"default": "allow"}', "/etc/discover/acl.json");
 * } catch (error) {
 *   if (error instanceof AclError) console.error(error.message, error.path);
 *   // /etc/discover/acl.json: 'default' must be "deny", "read" or "write": got "allow"
 * }
 * ```
 */
export class AclError extends Error {
  /** The file (or the name given to {@linkcode Acl.parse}). */
  readonly source: string;
  /** The JSON path of the bad value (`tokens[0].rules[1].access`); `""` for the whole text. */
  readonly path: string;

  /**
   * Creates the error; the message is prefixed with `source`.
   *
   * @param message What is wrong and the rule it breaks.
   * @param options Where: the source and the JSON path.
   */
  constructor(
    message: string,
    options: { source: string; path: string; cause?: unknown },
  ) {
    super(
      `${options.source}: ${message}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "AclError";
    this.source = options.source;
    this.path = options.path;
  }
}

/** A rule with its glob compiled. */
interface CompiledRule extends AclRule {
  regexp: RegExp;
  /** The glob matches every service name (and so stands for `"*"`). */
  all: boolean;
}

interface Entry {
  name: string;
  hash: Uint8Array;
  rules: CompiledRule[];
}

/**
 * A parsed ACL: the default access, and tokens (by the SHA-256 of their
 * text) with rules. Immutable: a reload makes a new one.
 *
 * @example Usage
 * ```ts
 * import { Acl, allows } from "./acl.ts";
 * const acl = Acl.parse(JSON.stringify({
 *   default: "deny",
 *   tokens: [{
 *     name: "billing",
 *     // printf %s test | sha256sum
 *     sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
 *     rules: [{ service: "billing-*", access: "write" }],
 *   }],
 * }));
 * const name = await acl.authenticate("test"); // "billing"
 * allows(acl.access(name, "billing-eu"), "write"); // true
 * acl.access(undefined, "billing-eu"); // "none"
 * ```
 */
export class Acl {
  /** Access of sessions without a token, and the least of every token. */
  readonly default: "deny" | "read" | "write";
  /** The tokens' names, in file order. */
  readonly names: string[];
  /** The tokens' names and rules, in file order. */
  readonly tokens: AclToken[];
  readonly #entries: Entry[];
  readonly #byName: Map<string, Entry>;

  private constructor(
    fallback: "deny" | "read" | "write",
    entries: Entry[],
  ) {
    this.default = fallback;
    this.#entries = entries;
    this.#byName = new Map(entries.map((e) => [e.name, e]));
    this.names = entries.map((e) => e.name);
    this.tokens = entries.map((e) => ({
      name: e.name,
      rules: e.rules.map(({ service, access }) => ({ service, access })),
    }));
  }

  /**
   * Parses and checks an ACL text (the format is in the module doc). Globs
   * are compiled here, once.
   *
   * @example Usage
   * ```ts
   * import { Acl } from "./acl.ts";
   * const acl = Acl.parse('{"default": "read"}', "acl.json");
   * acl.access(undefined, "cache"); // "read"
   * try {
   *   Acl.parse('{"default": "read", "token": []}', "acl.json");
   * } catch (error) {
   *   console.error((error as Error).message);
   *   // acl.json: 'token' is not a known key; allowed: default, tokens
   * }
   * ```
   *
   * @param text The JSON text.
   * @param source What to call the text in errors (the file's path);
   *   `"the ACL"` when absent.
   * @returns The ACL.
   * @throws {AclError} When the text is not JSON or breaks a rule of the
   *   format; the message names `source`, the JSON path and the rule.
   */
  static parse(text: string, source = "the ACL"): Acl {
    const fail = (path: string, rule: string, cause?: unknown): never => {
      throw new AclError(rule, { source, path, cause });
    };
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (error) {
      fail("", `is not valid JSON: ${(error as Error).message}`, error);
    }
    const duplicate = findDuplicateKey(text);
    if (duplicate) {
      const path = join(duplicate.path, duplicate.key);
      fail(
        path,
        `'${path}' appears twice in one object: keep one (JSON readers disagree on which one counts)`,
      );
    }
    const top = object(data, "", fail);
    onlyKeys(top, "", ["default", "tokens"], fail);
    const fallback = top.default === undefined ? "deny" : top.default;
    if (!(DEFAULTS as readonly unknown[]).includes(fallback)) {
      fail(
        "default",
        `'default' must be "deny", "read" or "write": got ${
          describeValue(fallback)
        }`,
      );
    }
    const tokens = top.tokens === undefined ? [] : top.tokens;
    if (!Array.isArray(tokens)) {
      fail("tokens", `'tokens' must be an array: got ${describeValue(tokens)}`);
    }
    const entries: Entry[] = [];
    const names = new Map<string, string>();
    const hashes = new Map<string, string>();
    (tokens as unknown[]).forEach((value, i) => {
      const at = `tokens[${i}]`;
      const token = object(value, at, fail);
      onlyKeys(token, at, ["name", "sha256", "rules"], fail);
      const { name, sha256 } = token;
      if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
        fail(
          `${at}.name`,
          `'${at}.name' must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -: got ${
            describeValue(name)
          }`,
        );
      }
      const twin = names.get(name as string);
      if (twin !== undefined) {
        fail(
          `${at}.name`,
          `'${at}.name' must be unique: ${
            describeValue(name)
          } is also the name of ${twin}`,
        );
      }
      names.set(name as string, at);
      if (typeof sha256 !== "string" || !SHA256_PATTERN.test(sha256)) {
        // The value is not shown: it may be the token itself, put there by
        // mistake.
        fail(
          `${at}.sha256`,
          `'${at}.sha256' must be the SHA-256 of the token as 64 lowercase hex digits (printf %s TOKEN | sha256sum): got ${
            typeof sha256 === "string"
              ? `a string of ${sha256.length} characters`
              : describeValue(sha256)
          }`,
        );
      }
      const same = hashes.get(sha256 as string);
      if (same !== undefined) {
        fail(
          `${at}.sha256`,
          `'${at}.sha256' must be unique: ${same} has the same hash, so one token would stand for two names`,
        );
      }
      hashes.set(sha256 as string, at);
      const rules = token.rules === undefined ? [] : token.rules;
      if (!Array.isArray(rules)) {
        fail(
          `${at}.rules`,
          `'${at}.rules' must be an array of {"service", "access"}: got ${
            describeValue(rules)
          }`,
        );
      }
      entries.push({
        name: name as string,
        hash: fromHex(sha256 as string),
        rules: (rules as unknown[]).map((r, j) =>
          compileRule(r, `${at}.rules[${j}]`, fail)
        ),
      });
    });
    return new Acl(fallback as "deny" | "read" | "write", entries);
  }

  /**
   * Reads and parses an ACL file ({@linkcode Acl.parse}).
   *
   * @example Usage
   * ```ts ignore
   * import { Acl } from "./acl.ts";
   * let acl = await Acl.load("/etc/discover/acl.json");
   * Deno.addSignalListener("SIGHUP", async () => {
   *   try {
   *     acl = await Acl.load("/etc/discover/acl.json");
   *   } catch (error) {
   *     console.error(`kept the previous ACL: ${(error as Error).message}`);
   *   }
   * });
   * ```
   *
   * @param path The file's path.
   * @returns The ACL.
   * @throws {AclError} When the file cannot be read, or breaks a rule of
   *   the format; the message names the path.
   */
  static async load(path: string): Promise<Acl> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new AclError(`cannot read the ACL file: ${readReason(error)}`, {
        source: path,
        path: "",
        cause: error,
      });
    }
    return Acl.parse(text, path);
  }

  /**
   * Finds the token: hashes it (SHA-256) and compares the digest with every
   * stored hash in constant time, all of them whatever matched.
   *
   * @example Usage
   * ```ts
   * import { Acl } from "./acl.ts";
   * const acl = Acl.parse(JSON.stringify({
   *   tokens: [{
   *     name: "billing",
   *     sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
   *   }],
   * }));
   * await acl.authenticate("test"); // "billing"
   * await acl.authenticate("guess"); // undefined
   * ```
   *
   * @param token The token the client sent.
   * @returns The token's name, or `undefined` when no token matches (an
   *   empty token, or one longer than {@linkcode MAX_TOKEN_LENGTH}
   *   characters, is refused without hashing).
   */
  async authenticate(token: string): Promise<string | undefined> {
    if (
      typeof token !== "string" || token.length === 0 ||
      token.length > MAX_TOKEN_LENGTH
    ) {
      return undefined;
    }
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)),
    );
    let found: string | undefined;
    for (const entry of this.#entries) {
      if (sameBytes(digest, entry.hash)) found = entry.name;
    }
    return found;
  }

  /**
   * The access `name` has to `service`: the highest of the default
   * (`"deny"` is `none`) and of the `access` of the token's rules whose
   * glob matches `service`. Without a name, or with a name this ACL does not
   * hold, the default. For `service` `"*"` (every service at once), only
   * rules whose glob matches every service name count
   * (`*`, `**`, `?*`, ...): a rule on `db-*` does not open every service.
   *
   * @example Usage
   * ```ts
   * import { Acl } from "./acl.ts";
   * const acl = Acl.parse(JSON.stringify({
   *   default: "read",
   *   tokens: [{
   *     name: "ops",
   *     sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
   *     rules: [
   *       { service: "db-*", access: "admin" },
   *       { service: "db-eu", access: "write" },
   *     ],
   *   }],
   * }));
   * acl.access("ops", "db-eu"); // "admin"
   * acl.access("ops", "cache"); // "read" (the default)
   * acl.access(undefined, "db-eu"); // "read"
   * acl.access("ops", "*"); // "read": no rule covers every service
   * ```
   *
   * @param name The session's token name (from {@linkcode Acl.authenticate}),
   *   or `undefined` for a session without a token.
   * @param service A service name, or `"*"` for every service.
   * @returns The access.
   */
  access(name: string | undefined, service: string): Access {
    let best: Access = this.default === "deny" ? "none" : this.default;
    const entry = name === undefined ? undefined : this.#byName.get(name);
    if (!entry) return best;
    for (const rule of entry.rules) {
      if (LEVEL[rule.access] <= LEVEL[best]) continue;
      const matches = service === ALL_SERVICES
        ? rule.all
        : rule.regexp.test(service);
      if (matches) best = rule.access;
    }
    return best;
  }

  /**
   * Whether a token named `name` is in this ACL; with `since`, also that it
   * is the same token (the same hash) as in that ACL. After a reload, a
   * session keeps its token's rights only while this holds: pass the ACL it
   * authenticated against as `since`, so that a token replaced under the
   * same name ends the rights of the sessions that used the old one.
   *
   * @example Usage
   * ```ts
   * import { Acl } from "./acl.ts";
   * const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
   * const before = Acl.parse(JSON.stringify({ tokens: [{ name: "a", sha256: hash }] }));
   * const after = Acl.parse(JSON.stringify({ tokens: [{ name: "a", sha256: "0".repeat(64) }] }));
   * after.has("a"); // true
   * after.has("a", { since: before }); // false: the token was replaced
   * after.has("b"); // false
   * ```
   *
   * @param name The session's token name.
   * @param options The ACL the session authenticated against.
   * @returns Whether the name (and, with `since`, its token) is still here.
   */
  has(name: string, options: AclHasOptions = {}): boolean {
    const entry = this.#byName.get(name);
    if (!entry) return false;
    if (options.since === undefined) return true;
    const earlier = options.since.#byName.get(name);
    return earlier !== undefined && sameBytes(entry.hash, earlier.hash);
  }
}

/**
 * Whether `access` is at least `needed` (`none` < `read` < `write` <
 * `admin`).
 *
 * @example Usage
 * ```ts
 * import { allows } from "./acl.ts";
 * allows("write", "read"); // true
 * allows("read", "write"); // false
 * allows("none", "read"); // false
 * ```
 *
 * @param access The access a session has.
 * @param needed The access a method needs.
 * @returns Whether the method is allowed.
 */
export function allows(
  access: Access,
  needed: Exclude<Access, "none">,
): boolean {
  return LEVEL[access] >= LEVEL[needed];
}

/**
 * Whether a service name matches a glob: `*` matches any run of characters
 * (none included), `?` exactly one, every other character itself (`.` is a
 * dot, case counts). The whole name must match. A glob is 1 to 128
 * characters of `A-Z a-z 0-9 . _ -` and `*` `?`; {@linkcode Acl.parse}
 * refuses others. Matching takes time linear in the lengths of the glob
 * and the name times the number of `*` at most, whatever the glob.
 *
 * @example Usage
 * ```ts
 * import { globMatch } from "./acl.ts";
 * globMatch("db-*", "db-eu"); // true
 * globMatch("db-*", "db"); // false
 * globMatch("cache-?", "cache-1"); // true
 * globMatch("a.b", "axb"); // false: `.` is a dot
 * ```
 *
 * @param glob The glob.
 * @param service The service name.
 * @returns Whether it matches.
 * @throws {TypeError} When `glob` breaks the glob syntax.
 */
export function globMatch(glob: string, service: string): boolean {
  const problem = globProblem(glob);
  if (problem) {
    throw new TypeError(`'glob' ${problem}: got ${describeValue(glob)}`);
  }
  return compileGlob(glob).test(service);
}

/** Options of {@linkcode AuthLimiter}. */
export interface AuthLimiterOptions {
  /** Failures an address may make at once. @default {5} */
  burst?: number;
  /** Failures per second an address may make after its burst. @default {1} */
  perSecond?: number;
  /**
   * Addresses remembered at most; past it, the one whose last failure is
   * oldest is forgotten first. @default {10_000}
   */
  maxAddresses?: number;
  /** The clock, in milliseconds. @default {() => performance.now()} */
  now?: () => number;
}

interface Bucket {
  /** Failures the address may still make, fractional. */
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

/**
 * Failed `discover.authenticate` attempts per remote address: a token
 * bucket per address holds `burst` failures, refilled at `perSecond`. An
 * address with an empty bucket must wait before its next attempt. Memory
 * is bounded by `maxAddresses`; an address whose bucket is full again is
 * forgotten (it is as if it had never failed).
 *
 * @example Usage
 * ```ts
 * import { AuthLimiter } from "./acl.ts";
 * let clock = 0;
 * const limiter = new AuthLimiter({ burst: 2, perSecond: 1, now: () => clock });
 * limiter.failed("192.0.2.1");
 * limiter.failed("192.0.2.1");
 * limiter.delay("192.0.2.1"); // 1000: wait a second
 * limiter.delay("192.0.2.2"); // 0
 * clock += 1000;
 * limiter.delay("192.0.2.1"); // 0
 * ```
 */
export class AuthLimiter {
  readonly #burst: number;
  readonly #perSecond: number;
  readonly #maxAddresses: number;
  readonly #now: () => number;
  /** By address, the one whose last failure is oldest first. */
  readonly #buckets = new Map<string, Bucket>();
  /** The attempts of each address, one at a time. */
  readonly #attempts = new KeyedSerial();

  /**
   * Creates a limiter that remembers no address yet.
   *
   * @param options Burst, rate, memory bound and clock.
   * @throws {TypeError} When `options` has an unknown key.
   * @throws {RangeError} When a bound is not a number in its range.
   */
  constructor(options: AuthLimiterOptions = {}) {
    const known = ["burst", "perSecond", "maxAddresses", "now"];
    for (const key of Object.keys(options)) {
      if (!known.includes(key)) {
        throw new TypeError(
          `'${key}' is not an option of AuthLimiter: its options are ${
            known.join(", ")
          }`,
        );
      }
    }
    this.#burst = options.burst ?? 5;
    this.#perSecond = options.perSecond ?? 1;
    this.#maxAddresses = options.maxAddresses ?? 10_000;
    this.#now = options.now ?? (() => performance.now());
    if (!Number.isInteger(this.#burst) || this.#burst < 1) {
      throw new RangeError(
        `'burst' must be an integer, at least 1: current value is ${this.#burst}`,
      );
    }
    if (!Number.isFinite(this.#perSecond) || this.#perSecond <= 0) {
      throw new RangeError(
        `'perSecond' must be a number above 0: current value is ${this.#perSecond}`,
      );
    }
    if (!Number.isInteger(this.#maxAddresses) || this.#maxAddresses < 1) {
      throw new RangeError(
        `'maxAddresses' must be an integer, at least 1: current value is ${this.#maxAddresses}`,
      );
    }
    if (typeof this.#now !== "function") {
      throw new TypeError("'now' must be a function returning milliseconds");
    }
  }

  /** Addresses remembered now (at most `maxAddresses`). */
  get size(): number {
    return this.#buckets.size;
  }

  /**
   * Milliseconds the caller must wait before this address may try again.
   *
   * @example Usage
   * ```ts
   * import { AuthLimiter } from "./acl.ts";
   * const limiter = new AuthLimiter();
   * limiter.delay("192.0.2.1"); // 0: may try now
   * ```
   *
   * @param address The remote address.
   * @returns The wait, in milliseconds; 0: may try now.
   */
  delay(address: string): number {
    const bucket = this.#refill(address);
    if (!bucket || bucket.tokens >= 1) return 0;
    const wait = (1 - bucket.tokens) / this.#perSecond * 1000;
    // Rounded to the microsecond first, so that float error does not add
    // a millisecond.
    return Math.ceil(Math.round(wait * 1000) / 1000);
  }

  /**
   * Records a failure of this address (takes one from its bucket).
   *
   * @example Usage
   * ```ts
   * import { AuthLimiter } from "./acl.ts";
   * const limiter = new AuthLimiter({ burst: 1 });
   * limiter.failed("192.0.2.1");
   * limiter.delay("192.0.2.1"); // about 1000
   * ```
   *
   * @param address The remote address.
   */
  failed(address: string): void {
    const bucket = this.#refill(address) ??
      { tokens: this.#burst, at: this.#now() };
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    // Moves the address to the end: the newest failure.
    this.#buckets.delete(address);
    this.#buckets.set(address, bucket);
    for (const oldest of this.#buckets.keys()) {
      if (this.#buckets.size <= this.#maxAddresses) break;
      this.#buckets.delete(oldest);
    }
  }

  /**
   * Runs the attempts of one address one at a time, each once the one
   * before has its outcome: a caller checks {@linkcode AuthLimiter.delay}
   * and records a failure inside `attempt`, so that attempts sent together
   * (a batch) are counted like attempts sent one by one, and right tokens
   * sent together all pass.
   *
   * @example Usage
   * ```ts
   * import { AuthLimiter } from "./acl.ts";
   * const limiter = new AuthLimiter();
   * const ok = await limiter.serially("192.0.2.1", async () => {
   *   if (limiter.delay("192.0.2.1") > 0) return false;
   *   return true; // a right token
   * });
   * ```
   *
   * @param address The remote address.
   * @param attempt Checks the address's wait, then the token.
   * @returns What `attempt` returns.
   */
  serially<T>(address: string, attempt: () => Promise<T>): Promise<T> {
    return this.#attempts.run(address, attempt);
  }

  /** The address's bucket brought up to now; forgotten once full. */
  #refill(address: string): Bucket | undefined {
    const bucket = this.#buckets.get(address);
    if (!bucket) return undefined;
    const now = this.#now();
    const elapsed = Math.max(0, now - bucket.at) / 1000;
    bucket.tokens = Math.min(
      this.#burst,
      bucket.tokens + elapsed * this.#perSecond,
    );
    bucket.at = now;
    if (bucket.tokens >= this.#burst) {
      this.#buckets.delete(address);
      return undefined;
    }
    return bucket;
  }
}

type Fail = (path: string, rule: string) => never;

function compileRule(value: unknown, at: string, fail: Fail): CompiledRule {
  const rule = object(value, at, fail);
  onlyKeys(rule, at, ["service", "access"], fail);
  const { service, access } = rule;
  const problem = globProblem(service);
  if (problem) {
    fail(
      `${at}.service`,
      `'${at}.service' ${problem}: got ${describeValue(service)}`,
    );
  }
  if (!(RULE_ACCESS as readonly unknown[]).includes(access)) {
    fail(
      `${at}.access`,
      `'${at}.access' must be "read", "write" or "admin" (to deny, leave the service out of the rules): got ${
        describeValue(access)
      }`,
    );
  }
  const glob = service as string;
  return {
    service: glob,
    access: access as AclRule["access"],
    regexp: compileGlob(glob),
    all: /^[*?]*$/.test(glob) && glob.includes("*") &&
      glob.split("?").length <= 2,
  };
}

/** Why a value is not a glob, or `undefined` when it is one. */
function globProblem(glob: unknown): string | undefined {
  if (
    typeof glob !== "string" || glob.length > MAX_GLOB_LENGTH ||
    !GLOB_PATTERN.test(glob)
  ) {
    return `must be a glob of 1 to ${MAX_GLOB_LENGTH} characters of A-Z a-z 0-9 . _ - and the wildcards * (any run of characters) and ? (one character)`;
  }
  return undefined;
}

/**
 * A glob as a RegExp that cannot backtrack out of bounds. Between its first
 * and last `*`, each literal part is matched at its leftmost place inside
 * a lookahead, which is atomic in JavaScript: the leftmost place is always
 * a right one (what follows a `*` matches in any longer rest of the name),
 * so giving it up could never help, and a glob such as `*a*a*a*b` costs
 * linear time per part instead of trying every split of the name.
 */
function compileGlob(glob: string): RegExp {
  const parts = glob.split("*").map((part) =>
    part.replaceAll(".", "\\.").replaceAll("?", "[^]")
  );
  if (parts.length === 1) return new RegExp(`^${parts[0]}$`, "u");
  const middle = parts.slice(1, -1).filter((part) => part !== "");
  const atoms = middle.map((part, i) => `(?=([^]*?${part}))\\${i + 1}`);
  return new RegExp(
    `^${parts[0]}${atoms.join("")}[^]*${parts[parts.length - 1]}$`,
    "u",
  );
}

function object(
  value: unknown,
  at: string,
  fail: Fail,
): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    fail(
      at,
      `${at === "" ? "the top level" : `'${at}'`} must be an object: got ${
        describeValue(value)
      }`,
    );
  }
  return value as Record<string, unknown>;
}

function onlyKeys(
  value: Record<string, unknown>,
  at: string,
  allowed: string[],
  fail: Fail,
): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      const path = join(at, key);
      fail(
        path,
        `'${path}' is not a known key; allowed: ${allowed.join(", ")}`,
      );
    }
  }
}

function join(at: string, key: string): string {
  const shown = key.length > 40 ? `${key.slice(0, 40)}...` : key;
  return at === "" ? shown : `${at}.${shown}`;
}

function fromHex(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

/** Compares two 32-byte digests in time independent of their contents. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ (b[i] ?? 0);
  return diff === 0;
}

function readReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) {
    return "permission denied";
  }
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  return (error as Error)?.message ?? String(error);
}
