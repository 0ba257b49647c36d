/** Helpers shared by the CLI's command modules. */
import { loadConfig, type Config } from '../config.js';
import { openContext, type Context } from '../context.js';
import { createLogger } from '../log.js';

export function out(line: string): void {
  process.stdout.write(`${line}\n`);
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

