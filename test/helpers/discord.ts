/**
 * Discord interactions as Discord sends them: Ed25519-signed, posted to `/discord/interactions`.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import type { Hono } from 'hono';

/** The application's key pair: the adapter is given the public half, the tests sign with the private one. */
export const keys = generateKeyPairSync('ed25519');
export const PUBLIC_KEY_HEX = keys.publicKey.export({ format: 'der', type: 'spki' }).subarray(12).toString('hex');

/** The headers of a signed interaction: an Ed25519 signature over timestamp + body. */
export function signed(body: string, key = keys.privateKey): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  return {
    'content-type': 'application/json',
    'x-signature-ed25519': sign(null, Buffer.from(timestamp + body), key).toString('hex'),
    'x-signature-timestamp': timestamp,
  };
}

/** POSTs an interaction, with `headers` or else signed. */
export async function postInteraction(app: Hono, payload: unknown, headers?: Record<string, string>): Promise<Response> {
  const body = JSON.stringify(payload);
  return app.request('/discord/interactions', { method: 'POST', body, headers: headers ?? signed(body) });
}

/** Where a slash command is used, and by whom. */
export interface CommandPlace {
  applicationId: string;
  guild: string;
  channel: string;
  user: string;
}

/** A `/ask prompt:<prompt>` slash command interaction (type 2) with fresh id and token. */
export function slashCommand(at: CommandPlace, prompt: string, over: Record<string, unknown> = {}) {
  return {
    id: String(BigInt('1000000000000000000') + BigInt(randomBytes(4).readUInt32BE())),
    application_id: at.applicationId,
    type: 2,
    token: `tok-${randomBytes(8).toString('hex')}`,
    version: 1,
    guild_id: at.guild,
    channel_id: at.channel,
    channel: { id: at.channel, type: 0 },
    member: { user: { id: at.user, username: 'ada', global_name: 'Ada' }, nick: null },
    data: { id: '1', name: 'ask', type: 1, options: [{ name: 'prompt', type: 3, value: prompt }] },
    ...over,
  };
}
