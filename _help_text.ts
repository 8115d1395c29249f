// Copyright the discover authors. BSD-3-Clause license.

/**
 * Wrapping of command-line help text, shared by `discoverd --help` and
 * `discover --help`.
 *
 * @module
 */

/** Width help text is wrapped to. */
export const HELP_WIDTH = 80;

/**
 * Splits `text` into lines that fit in {@linkcode HELP_WIDTH} columns once
 * indented by `indent`, breaking between words.
 *
 * @example Usage
 * ```ts
 * import { wrap } from "./_help_text.ts";
 * wrap("one two three", 74); // ["one", "two", "three"]
 * ```
 *
 * @param text The text.
 * @param indent Columns before each line.
 * @returns The lines.
 */
export function wrap(text: string, indent: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && indent + line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}
