/**
 * ClickUp webhook signatures: `X-Signature` is the hex HMAC-SHA256 of the raw request body,
 * keyed with the secret ClickUp returned when the webhook was created. There is no timestamp
 * in the signature, so replays of a genuine delivery verify; the gateway's dedupe by history
 * item id is what makes a replay harmless.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export function signClickUpBody(body: Uint8Array | string, secret: string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

/** Constant-time check of `X-Signature`. Anything that is not 64 hex digits fails. */
export function verifyClickUpSignature(body: Uint8Array, signature: string | undefined | null, secret: string): boolean {
  if (!signature || secret === '' || !/^[0-9a-fA-F]{64}$/.test(signature.trim())) return false;
  const expected = createHmac('sha256', secret).update(body).digest();
  const given = Buffer.from(signature.trim(), 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
