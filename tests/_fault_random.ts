// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: a small seeded pseudo-random generator (mulberry32), so a
 * randomized test prints its seed and can be run again with the same
 * choices. Independent streams (one per actor) are forked by name, so what
 * one actor draws does not shift what another one draws.
 *
 * @module
 */

/** A seeded stream of pseudo-random numbers. */
export class Random {
  #state: number;

  /**
   * Creates a stream.
   *
   * @param seed Any 32-bit integer.
   */
  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /**
   * An integer in [lo, hi].
   *
   * @param lo The smallest value.
   * @param hi The largest value.
   * @returns The integer.
   */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /**
   * A number in [lo, hi).
   *
   * @param lo The smallest value.
   * @param hi The bound.
   * @returns The number.
   */
  between(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }

  /**
   * Whether an event of probability `p` happens.
   *
   * @param p The probability.
   * @returns `true` with probability `p`.
   */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /**
   * One element of `items`, or `undefined` when it is empty.
   *
   * @param items The choices.
   * @returns The element.
   */
  pick<T>(items: readonly T[]): T | undefined {
    return items.length === 0
      ? undefined
      : items[this.int(0, items.length - 1)];
  }

  /**
   * One of `choices`, each as likely as its weight.
   *
   * @param choices Pairs of a value and its weight.
   * @returns The value.
   */
  weighted<T>(choices: readonly (readonly [T, number])[]): T {
    const total = choices.reduce((sum, [, w]) => sum + w, 0);
    let x = this.next() * total;
    for (const [value, w] of choices) {
      if ((x -= w) < 0) return value;
    }
    return choices[choices.length - 1][0];
  }

  /**
   * An independent stream derived from this one's seed and `name`.
   *
   * @param name The stream's name.
   * @returns The stream.
   */
  fork(name: string): Random {
    let h = this.seed ^ 0x9e3779b9;
    for (let i = 0; i < name.length; i++) {
      h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
    }
    return new Random(h >>> 0);
  }
}
