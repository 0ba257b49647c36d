/** Helpers shared by the CLI's command modules. */
import { loadConfig, type Config } from '../config.js';
import { openContext, type Context } from '../context.js';
import type { HeldBackFile } from '../adapters/types.js';
import { createLogger } from '../log.js';
import { printable } from '../text.js';

export function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

/**
 * Multi-line text from an agent or a platform (a reply, a transcript entry) as it may reach a
 * terminal: each line escaped like `printable` (no terminal escape sequences, no carriage return
 * rewriting the line), and every line after the first starts with `indent`, so the text can
 * never pose as a line of the CLI's own (`file: …`, a transcript timestamp).
 */
export function printableLines(text: string, indent = ''): string {
  return text
    .split('\n')
    .map((line, i) => `${i === 0 ? '' : indent}${printable(line, 100_000)}`)
    .join('\n');
}

/** One-shot commands print their result; routine info logs would only be noise around it. */
export function cliLogger(config: Config) {
  return createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
}

export async function withContext<T>(fn: (ctx: Context) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const ctx = await openContext(config, cliLogger(config));
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}


/**
 * What `agent-vm send` prints for a reply: the text on stdout; one line per file written, per
 * file held back, and the conversation on stderr. Every agent-chosen string is escaped, so a
 * held-back name such as `x\nfile: invoice.pdf (2048 bytes)` stays on its own line, shown as
 * `x\\nfile: invoice.pdf (2048 bytes)`, and cannot pose as a file that was written.
 */
export function replyReport(r: { text: string; written: Array<{ file: string; bytes: number }>; heldBack: HeldBackFile[]; conversation: string }): { stdout: string[]; stderr: string[] } {
  return {
    stdout: [printableLines(r.text)],
    stderr: [
      ...r.written.map((w) => `file: ${printable(w.file, 1100)} (${w.bytes} bytes)`),
      ...r.heldBack.map((h) => `held back: ${printable(h.name)}: ${printable(h.reason, 300)}`),
      `conversation: ${printable(r.conversation)}`,
    ],
  };
}
