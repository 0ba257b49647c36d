/**
 * A unit's egress endpoint: the governance egress relay for a profile with `egress.allow`,
 * listening on the host's address on the agent's internal network at a fixed port (the sandbox's
 * HTTP(S)_PROXY). Created when the sandbox wakes; rebound if that address changes. A profile
 * without `egress.allow` gets no relay, and its sandbox no proxy: nothing leaves.
 */
import type { AuditLog } from '../governance/audit.js';
import { createEgressRelay, type EgressRelay } from '../governance/egress.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

/** The relay's port on each agent's network (each network has its own host address). */
export const EGRESS_PORT = 3128;

export const usesEgress = (p: Profile) => p.egress.allow.length > 0;

export interface EgressEndpoint {
  bind(hostAddress: string): Promise<void>;
  close(): Promise<void>;
}

export function createEgressEndpoint(profile: Profile, d: { audit: AuditLog; logger: Logger; port?: number; metrics?: Metrics }): EgressEndpoint {
  let relay: EgressRelay | undefined;
  let boundTo: string | undefined;
  return {
    async bind(hostAddress) {
      if (!usesEgress(profile) || (relay && boundTo === hostAddress)) return;
      await relay?.close().catch(() => undefined);
      relay = undefined;
      relay = await createEgressRelay({
        profile: profile.id,
        allow: profile.egress.allow,
        listen: { host: hostAddress, port: d.port ?? EGRESS_PORT },
        record: async (e) => {
          await d.audit.record(e);
        },
        logger: d.logger,
        ...(d.metrics ? { metrics: d.metrics } : {}),
      });
      boundTo = hostAddress;
    },
    async close() {
      await relay?.close();
      relay = undefined;
      boundTo = undefined;
    },
  };
}
