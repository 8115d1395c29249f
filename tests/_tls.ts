// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test certificates made with `openssl` at test time in a temporary
 * directory: a private CA, and leaf certificates it signs for the loopback
 * host (`127.0.0.1`, `::1` and `localhost` as subject alternative names),
 * valid as TLS servers and as TLS clients.
 *
 * A CA plus a leaf, never one self-signed certificate: Deno (rustls)
 * refuses a certificate marked `CA:TRUE` as a server's
 * (`CaUsedAsEndEntity`).
 *
 * @module
 */

/** A certificate and its key, signed by the test CA. */
export interface Leaf {
  /** Path of the certificate (PEM). */
  readonly certFile: string;
  /** Path of the private key (PEM, PKCS#8). */
  readonly keyFile: string;
  /** The certificate (PEM). */
  readonly cert: string;
  /** The private key (PEM). */
  readonly key: string;
  /**
   * Base64 of the SHA-256 of the certificate's public key (its
   * SubjectPublicKeyInfo, DER): what Chromium's
   * `--ignore-certificate-errors-spki-list` takes.
   */
  readonly spki: string;
}

/** A private CA in a temporary directory. */
export interface TestCa extends AsyncDisposable {
  /** The directory holding every file. */
  readonly dir: string;
  /** Path of the CA certificate (PEM). */
  readonly caFile: string;
  /** The CA certificate (PEM). */
  readonly ca: string;
  /**
   * Makes a key and a certificate signed by the CA, for the loopback
   * host, valid for TLS servers and clients.
   *
   * @param name File names (`NAME.pem`, `NAME.key`) and the subject's
   *   common name (which etcd takes as the user of a client certificate).
   * @returns The certificate.
   */
  issue(name: string): Promise<Leaf>;
  /** Removes the directory. */
  remove(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<Uint8Array> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run openssl (${
        (error as Error).message
      }): the TLS tests make their certificates with it; install it (Debian/Ubuntu: apt-get install -y openssl)`,
    );
  }
  if (!output.success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${
        new TextDecoder().decode(output.stderr)
      }`,
    );
  }
  return output.stdout;
}

/** A new P-256 key, PKCS#8 PEM, without a pass phrase. */
const NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/** A random serial number, as `openssl -set_serial` takes it. */
function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  bytes[0] &= 0x7f; // positive
  return `0x${
    Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
}

/**
 * Makes a CA (one day valid) in a new temporary directory.
 *
 * @example Usage
 * ```ts ignore
 * import { createTestCa } from "./_tls.ts";
 * await using ca = await createTestCa();
 * const server = await ca.issue("server");
 * console.log(server.certFile, ca.caFile);
 * ```
 *
 * @returns The CA; dispose of it to remove its directory.
 */
export async function createTestCa(): Promise<TestCa> {
  const dir = await Deno.makeTempDir({ prefix: "discover-tls-" });
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    // `req -x509` gives the CA its extensions (CA:TRUE, key identifiers)
    // from openssl's default configuration.
    await openssl([
      "req",
      "-x509",
      "-new",
      ...NEW_KEY,
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=discover test CA",
    ], dir);
  } catch (error) {
    await remove();
    throw error;
  }
  return {
    dir,
    caFile: `${dir}/ca.pem`,
    ca: await Deno.readTextFile(`${dir}/ca.pem`),
    async issue(name) {
      if (!/^[a-z0-9-]+$/.test(name) || name === "ca") {
        throw new TypeError(
          `'name' must be lower-case letters, digits and '-', and not 'ca': current value is '${name}'`,
        );
      }
      await Deno.writeTextFile(
        `${dir}/${name}.ext`,
        [
          "basicConstraints = critical, CA:FALSE",
          "keyUsage = critical, digitalSignature",
          "extendedKeyUsage = serverAuth, clientAuth",
          "subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost",
          "subjectKeyIdentifier = hash",
          "authorityKeyIdentifier = keyid",
          "",
        ].join("\n"),
      );
      await openssl([
        "req",
        "-new",
        ...NEW_KEY,
        "-nodes",
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.csr`,
        "-subj",
        `/CN=${name}`,
      ], dir);
      await openssl([
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        serial(),
        "-days",
        "1",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ], dir);
      const spkiDer = await openssl([
        "pkey",
        "-in",
        `${name}.key`,
        "-pubout",
        "-outform",
        "DER",
      ], dir);
      const digest = new Uint8Array(
        await crypto.subtle.digest("SHA-256", new Uint8Array(spkiDer)),
      );
      return {
        certFile: `${dir}/${name}.pem`,
        keyFile: `${dir}/${name}.key`,
        cert: await Deno.readTextFile(`${dir}/${name}.pem`),
        key: await Deno.readTextFile(`${dir}/${name}.key`),
        spki: btoa(String.fromCharCode(...digest)),
      };
    },
    remove,
    [Symbol.asyncDispose]: remove,
  };
}
