/** Webhooks agent-vm registered on a platform, with the secret it verifies their deliveries with. */
import { and, eq } from 'drizzle-orm';
import type { Db } from './index.js';
import { webhooks } from './schema.js';

export interface WebhookRepo {
  /** The secret of a webhook agent-vm registered on a platform. */
  webhookSecret(platform: string, id: string): Promise<string | undefined>;
  putWebhook(w: { id: string; platform: string; scope: string; endpoint: string; secret: string }): Promise<void>;
}

export function webhookRepo(db: Db): WebhookRepo {
  return {
    async webhookSecret(platform, id) {
      const [row] = await db.select({ secret: webhooks.secret }).from(webhooks).where(and(eq(webhooks.platform, platform), eq(webhooks.id, id)));
      return row?.secret;
    },
    async putWebhook(w) {
      await db.insert(webhooks).values(w).onConflictDoUpdate({ target: webhooks.id, set: { secret: w.secret, endpoint: w.endpoint, scope: w.scope } });
    },
  };
}
