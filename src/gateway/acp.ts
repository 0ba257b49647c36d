/**
 * The gateway's side of ACP (Agent Client Protocol): one connection per agent sandbox, spoken
 * over the sandbox's attached stdio with @agentclientprotocol/sdk's client app. Sessions of
 * several conversations share the connection; updates and permission requests are dispatched to
 * the turn that owns the session.
 *
 * Deliberately left out: the fs/* and terminal/* client capabilities. The agent works inside its
 * own sandbox; the gateway never reads or writes files or runs commands on the agent's behalf.
 */
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { AgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SandboxStdio } from '../sandbox/types.js';

export type PermissionDecision = { allow: true; optionId: string } | { allow: false; reason: string };

export interface TurnHooks {
  onUpdate(update: acp.SessionUpdate): void;
  /** Decides a permission request of this session. Must fail closed. */
  onPermission(request: acp.RequestPermissionRequest): Promise<PermissionDecision>;
}

export interface AgentConnection {
  readonly supportsLoad: boolean;
  /** Resolves when the connection ends (the agent exited, the sandbox stopped, or close()). */
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
  newSession(params: { cwd: string; mcpServers: acp.McpServer[] }): Promise<string>;
  loadSession(sessionId: string, params: { cwd: string; mcpServers: acp.McpServer[] }): Promise<void>;
  /** One turn: resolves with the stop reason; rejects if the connection drops first. */
  prompt(sessionId: string, prompt: acp.ContentBlock[], hooks: TurnHooks): Promise<acp.StopReason>;
  cancel(sessionId: string): Promise<void>;
  /**
   * Hangs up: detaches from the sandbox (the agent process keeps running). Requests still open
   * on the connection reject with the retryable `agent_detached`, not `agent_gone`. Idempotent.
   */
  close(): void;
}

const INIT_TIMEOUT_MS = 30_000;

export async function connectAgent(io: SandboxStdio, opts: { logger: Logger; clientName?: string; version?: string; initTimeoutMs?: number }): Promise<AgentConnection> {
  const hooks = new Map<string, TurnHooks>();
  const log = opts.logger;
  let closedFlag = false;
  /** We hung up ourselves: open requests are interruptions to retry, not a dead agent. */
  let hungUp = false;

  const app = acp
    .client({ name: opts.clientName ?? 'agent-vm' })
    .onNotification('session/update', ({ params }) => {
      const h = hooks.get(params.sessionId);
      if (h) h.onUpdate(params.update);
    })
    .onRequest('session/request_permission', async ({ params }) => {
      const h = hooks.get(params.sessionId);
      const decision: PermissionDecision = h ? await h.onPermission(params).catch((err: unknown) => ({ allow: false as const, reason: `policy error: ${String(err)}` })) : { allow: false, reason: 'no turn is running for this session' };
      if (decision.allow) return { outcome: { outcome: 'selected', optionId: decision.optionId } };
      // Fail closed: pick the agent's own reject option if it offered one, else cancel.
      const reject = params.options.find((o) => o.kind === 'reject_once') ?? params.options.find((o) => o.kind === 'reject_always');
      return reject ? { outcome: { outcome: 'selected', optionId: reject.optionId } } : { outcome: { outcome: 'cancelled' } };
    });

  const conn = app.connect(
    acp.ndJsonStream(Writable.toWeb(io.stdin as Writable) as WritableStream<Uint8Array>, Readable.toWeb(io.stdout as Readable) as ReadableStream<Uint8Array>),
  );
  const closed = Promise.race([conn.closed.catch(() => undefined), io.closed.catch(() => undefined)]).then(() => {
    closedFlag = true;
  });
  io.stderr.on('data', (d: Buffer) => log.debug({ stderr: d.toString().slice(0, 2000) }, 'agent stderr'));

  const dropped = () =>
    hungUp
      ? new AgentVmError('agent_detached', 'the gateway hung up on the agent during the turn (stop, restart or sleep); the turn runs again', { retryable: true })
      : new AgentVmError('agent_gone', 'the agent process ended during the turn', { retryable: false });
  // The SDK rejects pending requests itself when the stream ends ("ACP connection closed");
  // either way the caller sees one error that says the agent is gone.
  const orClosed = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await Promise.race([p, closed.then(() => Promise.reject(dropped()))]);
    } catch (err) {
      if (!closedFlag) await Promise.race([closed, new Promise((r) => setTimeout(r, 500))]);
      throw closedFlag ? dropped() : err;
    }
  };

  let init: acp.InitializeResponse;
  const initTimeoutMs = opts.initTimeoutMs ?? INIT_TIMEOUT_MS;
  let initTimedOut = false;
  const timer = setTimeout(() => {
    initTimedOut = true;
    conn.close(new Error('initialize timed out'));
  }, initTimeoutMs);
  try {
    init = await orClosed(
      conn.agent.request('initialize', {
        protocolVersion: acp.PROTOCOL_VERSION,
        clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
        clientInfo: { name: opts.clientName ?? 'agent-vm', version: opts.version ?? '0' },
      }),
    );
  } catch (cause) {
    conn.close();
    io.close();
    const why = initTimedOut ? `no answer to initialize within ${initTimeoutMs} ms` : closedFlag ? 'the agent process ended' : cause instanceof Error ? cause.message : String(cause);
    throw new AgentVmError('agent_init_failed', `the agent did not complete the ACP handshake: ${why}`, { cause });
  } finally {
    clearTimeout(timer);
  }

  return {
    supportsLoad: init.agentCapabilities?.loadSession === true,
    closed,
    get isClosed() {
      return closedFlag;
    },
    async newSession(params) {
      const req: Promise<acp.NewSessionResponse> = conn.agent.request('session/new', params);
      const r = await orClosed(req);
      return r.sessionId;
    },
    async loadSession(sessionId, params) {
      await orClosed(conn.agent.request('session/load', { sessionId, ...params }));
    },
    async prompt(sessionId, prompt, h) {
      hooks.set(sessionId, h);
      try {
        const r = await orClosed(conn.agent.request('session/prompt', { sessionId, prompt }));
        // Updates sent just before the response are dispatched on the next ticks.
        await new Promise((resolve) => setImmediate(resolve));
        return r.stopReason;
      } finally {
        if (hooks.get(sessionId) === h) hooks.delete(sessionId);
      }
    },
    async cancel(sessionId) {
      if (closedFlag) return;
      await conn.agent.notify('session/cancel', { sessionId }).catch(() => undefined);
    },
    close() {
      hungUp = true;
      conn.close();
      io.close();
    },
  };
}
