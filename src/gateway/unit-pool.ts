/**
 * A unit's side of the warm pool: the sandbox the pool prepared for this agent ahead of its first
 * message, and the ACP connection attached and initialized ahead, until a turn takes them (a hit)
 * or a wake finds something else (the pool prepares the next agent). Nothing is carried over from
 * anything: the prepared sandbox is this agent's own, with its own spec, identity and workspace.
 */
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { SandboxDriver, SandboxSpec } from '../sandbox/types.js';
import { describeError } from '../errors.js';
import { connectAgent, type AgentConnection } from './acp.js';
import type { createAgentLink } from './link.js';
import type { SandboxService } from './sandboxes.js';

export interface UnitPool {
  /** What the agent link asks on a wake (link.ts). */
  readonly link: NonNullable<Parameters<typeof createAgentLink>[0]['pool']>;
  /** True while a prepared sandbox waits for its first turn. */
  readonly prepared: boolean;
  /** Wakes the agent's sandbox and connects to it ahead of its first message. */
  prepare(): Promise<void>;
  /** Closes a connection made ahead (the unit stops). */
  drop(): void;
}

export function createUnitPool(o: {
  profile: Profile;
  enabled: boolean;
  onClaimed?: () => void;
  driver: SandboxDriver;
  sandboxes: SandboxService;
  audit: AuditLog;
  logger: Logger;
  initTimeoutMs?: number;
  spec: () => Promise<SandboxSpec>;
  stopped: () => boolean;
}): UnitPool {
  const log = o.logger;
  let prepared: string | undefined;
  let preparedConn: AgentConnection | undefined;
  let connectingAhead: Promise<unknown> | undefined;
  const drop = () => {
    preparedConn?.close();
    preparedConn = undefined;
  };
  return {
    link: {
      enabled: o.enabled,
      isPrepared: (containerId: string) => prepared === containerId,
      /** Waits for an initialize still under way (a message right after the sandbox started). */
      async take(containerId: string) {
        await connectingAhead;
        if (prepared !== containerId || !preparedConn) return undefined;
        const c = preparedConn;
        preparedConn = undefined;
        return c.isClosed ? undefined : c;
      },
      claim(_containerId: string) {
        drop(); // not taken: the wake found something else
        if (prepared === undefined) return;
        prepared = undefined;
        o.onClaimed?.();
      },
    },
    get prepared() {
      return prepared !== undefined;
    },
    drop,
    async prepare() {
      const { profile } = o;
      const started = performance.now();
      const h = await o.sandboxes.wake(await o.spec(), profile.id);
      prepared = h.containerId;
      // Attach and initialize ahead too, so a hit starts at session/new. Failing here is no
      // failure: the first wake attaches itself (and heals what it finds).
      const ahead = (async () => {
        const c = await connectAgent(await o.driver.attach(profile.id), { logger: log, ...(o.initTimeoutMs ? { initTimeoutMs: o.initTimeoutMs } : {}) });
        if (prepared === h.containerId && !o.stopped()) preparedConn = c;
        else c.close();
      })().catch((err: unknown) => log.warn({ err: describeError(err) }, 'warm pool: the prepared agent did not initialize; its first wake connects afresh'));
      connectingAhead = ahead;
      await ahead;
      if (connectingAhead === ahead) connectingAhead = undefined;
      await o.audit.record({ profile: profile.id, action: 'pool.prepare', decision: 'ok', subject: profile.id, data: { action: h.action, initialized: preparedConn !== undefined, ms: Math.round(performance.now() - started) } });
      log.info({ action: h.action }, 'warm pool: sandbox prepared ahead of the first message');
    },
  };
}
