// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  crc32,
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameBuffer,
  MAX_PAYLOAD_BYTES,
  nextFrame,
  readFrame,
} from "./_durable_frame.ts";

Deno.test("crc32: the IEEE check value, in one call or in pieces", () => {
  const bytes = new TextEncoder().encode("123456789");
  assert.equal(crc32(bytes), 0xcbf43926);
  const random = crypto.getRandomValues(new Uint8Array(1000));
  assert.equal(
    crc32(random.subarray(300), crc32(random.subarray(0, 300))),
    crc32(random),
  );
});

Deno.test("a frame reads back as the object it holds, and holds it as TextEncoder writes it, whatever the text", () => {
  const texts = [
    "Zürich 東京",
    "emoji 🦕 and ß",
    "\u{10ffff}",
    "lone \ud800 and \udc00 surrogates",
    "x".repeat(1000),
  ];
  for (const text of texts) {
    const value = { t: "put", rev: 7, rec: { attrs: { text } } };
    const frame = encodeFrame(value);
    const read = readFrame(frame, 0);
    assert.equal(read.kind, "frame");
    if (read.kind === "frame") {
      assert.deepEqual(
        read.value,
        JSON.parse(new TextDecoder().decode(
          new TextEncoder().encode(JSON.stringify(value)),
        )),
      );
      assert.equal(read.end, frame.length);
    }
    assert.deepEqual(
      frame.subarray(FRAME_HEADER_BYTES),
      new TextEncoder().encode(JSON.stringify(value)),
      text,
    );
  }
});

Deno.test("a frame cut short anywhere is torn, never read", () => {
  const frame = encodeFrame({ t: "del", rev: 1, service: "s", addr: "h:1" });
  for (let length = 0; length < frame.length; length++) {
    assert.equal(
      readFrame(frame.subarray(0, length), 0).kind,
      "torn",
      `${length}`,
    );
  }
});

Deno.test("any changed byte of a frame is found: never read as another entry", () => {
  const frame = encodeFrame({ t: "del", rev: 1, service: "s", addr: "h:1" });
  for (let i = 0; i < frame.length; i++) {
    for (const flip of [0x01, 0x80, 0xff]) {
      const bad = frame.slice();
      bad[i] ^= flip;
      const read = readFrame(bad, 0);
      // A larger length runs past the end: torn, not an entry either.
      assert.notEqual(read.kind, "frame", `byte ${i} ^ ${flip}`);
    }
  }
  // A length of 0 is damage, unless every byte after it is zero too.
  const zero = new Uint8Array(FRAME_HEADER_BYTES + 4);
  zero[FRAME_HEADER_BYTES] = 1;
  const read = readFrame(zero, 0);
  assert.equal(read.kind, "corrupt");
  if (read.kind === "corrupt") assert.match(read.reason, /length of 0 bytes/);
});

Deno.test("zeros from a frame's start to the end are torn (writes that never reached the disk); zeros followed by anything else are damage", () => {
  const a = encodeFrame({ t: "a" });
  for (const zeros of [1, FRAME_HEADER_BYTES, 64, 4096]) {
    const bytes = new Uint8Array(a.length + zeros);
    bytes.set(a);
    assert.equal(readFrame(bytes, 0).kind, "frame");
    assert.equal(readFrame(bytes, a.length).kind, "torn", `${zeros} zeros`);
    assert.equal(nextFrame(bytes, a.length), undefined);
  }
  const zeros = 64;
  for (let i = 4; i < zeros; i++) {
    const bytes = new Uint8Array(a.length + zeros);
    bytes.set(a);
    bytes[a.length + i] = 1;
    assert.equal(readFrame(bytes, a.length).kind, "corrupt", `byte ${i}`);
  }
});

Deno.test("nextFrame finds the next whole frame after damage, and nothing in a torn tail", () => {
  const a = encodeFrame({ t: "a" }), b = encodeFrame({ t: "b" });
  const bytes = new Uint8Array([...a, 9, 9, 9, ...b]);
  assert.equal(nextFrame(bytes, 1), a.length + 3);
  assert.equal(nextFrame(bytes, 0), 0);
  const torn = new Uint8Array([...a, ...b.subarray(0, b.length - 1)]);
  assert.equal(nextFrame(torn, 1), undefined);
});

Deno.test("a frame buffer holds its frames one after another as encodeFrame writes them, grows for large ones and is used again once cleared", () => {
  const values = [
    { t: "del", rev: 1, service: "s", addr: "h:1" },
    { t: "put", rev: 2, rec: { attrs: { text: "Zürich 東京 🦕" } } },
    { t: "put", rev: 3, rec: { attrs: { text: "x".repeat(5000) } } },
  ];
  const frames = new FrameBuffer(16);
  for (let round = 0; round < 2; round++) {
    for (const value of values) frames.add(JSON.stringify(value));
    const expected = values.flatMap((value) => [...encodeFrame(value)]);
    assert.equal(frames.length, expected.length);
    assert.deepEqual([...frames.bytes()], expected);
    let offset = 0;
    for (const value of values) {
      const read = readFrame(frames.bytes(), offset);
      assert.equal(read.kind, "frame");
      if (read.kind !== "frame") break;
      assert.deepEqual(read.value, value);
      offset = read.end;
    }
    frames.clear();
    assert.equal(frames.length, 0);
    assert.equal(frames.bytes().length, 0);
  }
});

Deno.test("a frame buffer refuses a payload larger than an entry may be, and keeps the frames before it", () => {
  const frames = new FrameBuffer();
  frames.add('{"t":"a"}');
  const kept = frames.bytes().slice();
  // Too many UTF-16 units, and few enough units but too many UTF-8 bytes.
  for (
    const text of [
      "x".repeat(MAX_PAYLOAD_BYTES + 1),
      "é".repeat(MAX_PAYLOAD_BYTES / 2 + 1),
    ]
  ) {
    assert.throws(
      () => frames.add(JSON.stringify({ t: "put", text })),
      (error) =>
        error instanceof RangeError &&
        error.message.includes(`at most ${MAX_PAYLOAD_BYTES} bytes`),
    );
    assert.deepEqual(frames.bytes(), kept);
  }
  frames.add('{"t":"b"}');
  assert.equal(nextFrame(frames.bytes(), 1), kept.length);
});

Deno.test("a frame's checksum is the CRC-32 of its length bytes and payload, whichever bytes of the length are set", () => {
  for (const size of [8, 255, 256, 300, 65_536, 70_000, MAX_PAYLOAD_BYTES]) {
    const json = JSON.stringify({ t: "x".repeat(size - 8) });
    assert.equal(json.length, size);
    const frame = encodeFrame(JSON.parse(json));
    const view = new DataView(frame.buffer, frame.byteOffset);
    assert.equal(view.getUint32(0, true), size);
    const covered = new Uint8Array(4 + size);
    covered.set(frame.subarray(0, 4));
    covered.set(frame.subarray(FRAME_HEADER_BYTES), 4);
    assert.equal(view.getUint32(4, true), crc32(covered), `${size} bytes`);
    assert.equal(readFrame(frame, 0).kind, "frame");
  }
});
