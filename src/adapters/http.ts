/**
 * HTTP helpers shared by the platform adapters (not an adapter itself, so importing it keeps
 * adapters independent of each other).
 */

/**
 * Reads a response body, stopping as soon as it passes `maxBytes` whatever Content-Length
 * claimed. Returns the bytes, or 'too_large' (the rest of the body is cancelled). A failed read
 * rejects, as `reader.read()` does.
 */
export async function readBodyCapped(res: Response, maxBytes: number): Promise<Buffer | 'too_large'> {
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      return 'too_large';
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
