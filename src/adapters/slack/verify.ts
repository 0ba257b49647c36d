/**
 * Slack request signing (v0): `X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + ts + ":" + rawBody))`
 * with `X-Slack-Request-Timestamp` inside a 5-minute window. The body must be the exact bytes
 * Slack sent: verify before parsing, never re-serialize.
 *
 * Deliberately left out: the legacy verification token (deprecated by Slack, weaker than signing).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Slack's replay window: requests older (or newer) than this are refused. */
export const SIGNATURE_WINDOW_SECONDS = 5 * 60;

export type VerifyResult = { ok: true } | { ok: false; reason: string };

export function signSlackRequest(signingSecret: string, timestamp: string | number, body: string): string {
  const mac = createHmac('sha256', signingSecret).update(`v0:${timestamp}:${body}`).digest('hex');
  return `v0=${mac}`;
}

export function verifySlackSignature(args: {
  signingSecret: string;
  timestamp: string | undefined | null;
  signature: string | undefined | null;
  body: string;
  /** Milliseconds since the epoch; injectable so Slack's published test vector can be checked. */
  nowMs: number;
}): VerifyResult {
  const { signingSecret, timestamp, signature, body, nowMs } = args;
  // An empty secret would let anyone sign: with no secret, nothing verifies (Socket Mode only).
  if (!signingSecret) return { ok: false, reason: 'no signing secret configured' };
  if (!timestamp || !signature) return { ok: false, reason: 'missing signature headers' };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'malformed timestamp' };
  const age = Math.abs(Math.floor(nowMs / 1000) - Number(timestamp));
  if (age > SIGNATURE_WINDOW_SECONDS) return { ok: false, reason: 'stale timestamp' };
  if (!/^v0=[0-9a-f]{64}$/.test(signature)) return { ok: false, reason: 'malformed signature' };
  const expected = Buffer.from(signSlackRequest(signingSecret, timestamp, body), 'utf8');
  const given = Buffer.from(signature, 'utf8');
  // Lengths are equal here (format checked above); timingSafeEqual throws otherwise.
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
    return { ok: false, reason: 'signature mismatch' };
  }
  return { ok: true };
}
