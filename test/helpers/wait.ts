/** The one polling helper: waits until `fn` returns something other than undefined, or fails naming `what`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, o: { timeoutMs?: number; everyMs?: number } = {}): Promise<T> {
  const end = Date.now() + (o.timeoutMs ?? 20_000);
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, o.everyMs ?? 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last instanceof Error ? last.message : String(last)})` : ''}`);
}
