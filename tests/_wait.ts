// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: waiting for updates with a deadline, so that a missing event
 * fails the test with a clear message instead of hanging it.
 *
 * @module
 */

import type { ServiceUpdate } from "../mod.ts";

/**
 * Resolves with the next value of `iterator`, or rejects after `ms`.
 *
 * @param iterator The iterator.
 * @param ms Milliseconds to wait.
 * @returns The next value.
 */
export async function nextWithin<T>(
  iterator: AsyncIterator<T>,
  ms = 5000,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const result = await Promise.race([
      iterator.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no update within ${ms} ms`)),
          ms,
        );
      }),
    ]);
    if (result.done) throw new Error("the iterator ended");
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Collects updates until `count` arrived, or rejects after `ms`.
 *
 * @param iterator The iterator.
 * @param count How many.
 * @param ms Milliseconds to wait in all.
 * @returns The updates as `kind addr` strings.
 */
export async function collect(
  iterator: AsyncIterator<ServiceUpdate>,
  count: number,
  ms = 5000,
): Promise<string[]> {
  const out: string[] = [];
  const deadline = Date.now() + ms;
  while (out.length < count) {
    const u = await nextWithin(iterator, Math.max(1, deadline - Date.now()));
    out.push(`${u.kind} ${u.instance.addr}`);
  }
  return out;
}
