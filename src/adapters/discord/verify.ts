/**
 * Ed25519 verification of Discord HTTP interactions: Discord signs `X-Signature-Timestamp` +
 * the raw body with the application's key, and we verify with node:crypto alone.
 *
 * Deliberately left out: a timestamp window. Discord documents none, and a replayed
 * interaction carries the same interaction id, which the intake deduplicates.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { AgentVmError } from '../../errors.js';

/** DER prefix that turns a raw 32-byte Ed25519 public key into an SPKI structure. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const HEX_SIGNATURE = /^[0-9a-fA-F]{128}$/;

/** Parses the application's public key (64 hex characters) once, at startup. */
export function discordPublicKey(hex: string): KeyObject {
  if (!HEX_KEY.test(hex)) {
    throw new AgentVmError('config_invalid', 'DISCORD_PUBLIC_KEY must be 64 hex characters', { status: 400 });
  }
  return createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(hex, 'hex')]),
    format: 'der',
    type: 'spki',
  });
}

export type InteractionVerifier = (
  signature: string | undefined,
  timestamp: string | undefined,
  rawBody: Uint8Array,
) => boolean;

/** Returns a verifier that never throws: anything malformed is simply "not verified". */
export function createInteractionVerifier(publicKeyHex: string): InteractionVerifier {
  const key = discordPublicKey(publicKeyHex);
  return function verifyDiscordInteraction(signature, timestamp, rawBody) {
    if (!signature || !timestamp || !HEX_SIGNATURE.test(signature)) return false;
    try {
      const message = Buffer.concat([Buffer.from(timestamp, 'utf8'), Buffer.from(rawBody)]);
      return verify(null, message, key, Buffer.from(signature, 'hex'));
    } catch {
      return false;
    }
  };
}
