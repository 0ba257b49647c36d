/**
 * Runs one real preset agent (Claude Code, Codex, Gemini CLI) in a runsc sandbox the way the
 * gateway will: its image from `agent-vm image build --agents …`, an internal network whose only
 * open host port is the model relay's, the relay on that network's host address in front of a
 * fake provider API, the relay's environment filled in by `resolvePresetAgent`, and the gateway's
 * own ACP client (src/gateway/acp.ts) with a per-conversation cwd. Records timings and what the
 * agent asked for.
 */
import type * as acp from '@agentclientprotocol/sdk';
import { connectAgent, type AgentConnection } from '../../src/gateway/acp.js';
import { createModelRelay, type ModelProvider, type ModelRelay, type ModelRelayEvent } from '../../src/governance/model-relay/index.js';
import { PRESETS, resolvePresetAgent, type PresetName } from '../../src/governance/presets.js';
import { createSecretResolver } from '../../src/governance/secrets.js';
import { createLogger } from '../../src/log.js';
import { conversationPaths, MODEL_RELAY_PORT, type ConversationPaths } from '../../src/sandbox/layout.js';
import type { OutboxEntry, SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI, type FakeProvider, type FakeReply } from '../fakes/providers/index.js';
import { agentId as newAgentId, TEST_IMAGE } from './env.js';
import { makeDriver, sh } from './sandbox.js';

export interface PresetRunTimings {
  /** ensure (container create + start) of the agent's sandbox. */
  ensureMs: number;
  /** attach + ACP initialize answered. */
  initializeMs: number;
  sessionNewMs: number;
  /** From session/prompt sent to the first session/update. */
  firstUpdateMs: number;
  promptMs: number;
  /** From ensure to the prompt's answer. */
  totalMs: number;
}

export interface PresetRun {
  agentId: string;
  preset: PresetName;
  paths: ConversationPaths;
  fake: FakeProvider;
  relay: ModelRelay;
  relayEvents: ModelRelayEvent[];
  conn: AgentConnection;
  sessionId: string;
  /** Wall-clock time (ms) just before session/new was sent. */
  sessionStartedAt: number;
  init: { loadSession: boolean };
  updates: acp.SessionUpdate[];
  permissions: acp.RequestPermissionRequest[];
  stopReason: acp.StopReason;
  timings: PresetRunTimings;
  /** Resident memory of every process in the sandbox after the turn, in MiB (from /proc). */
  rssMiB: number;
  outbox(): Promise<OutboxEntry[]>;
  /**
   * Stops the sandbox and re-creates it (its container is replaced; the workspace volume stays),
   * reconnects, and tries `session/load` of the same session; when it loads, runs `prompt` with
   * `replies` queued. `error` is the agent's answer when the load was refused.
   */
  resume(prompt: string, replies: FakeReply[], session?: string): Promise<{ loaded: boolean; error?: string; loadMs: number; stopReason?: acp.StopReason; updates: acp.SessionUpdate[] }>;
  stderr(): string;
  close(): Promise<void>;
}

const PROVIDER_FAKES: Record<ModelProvider, () => Promise<FakeProvider>> = {
  anthropic: () => startFakeAnthropic(),
  openai: () => startFakeOpenAI(),
  gemini: () => startFakeGemini(),
};

/** Rejects with `what` once `ms` pass: a stuck agent fails the test with its stderr, never hangs it. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export interface PresetRunOptions {
  preset: Exclude<PresetName, 'reference'>;
  /** Model ids the relay allows (the agent must be told to use one of them through `env`). */
  models: string[];
  /** Extra agent.env (e.g. the model to use). */
  env?: Record<string, string>;
  /** Replies of the fake provider, in order; built once the conversation's paths are known. */
  script(paths: ConversationPaths): FakeReply[];
  prompt: string;
  memoryMiB?: number;
  driver?: SandboxDriver;
}

/**
 * One turn of a preset agent, start to finish. Every permission request is answered with the
 * agent's allow-once option (and recorded). The caller closes the run (sandbox destroyed).
 */
export async function runPresetTurn(o: PresetRunOptions): Promise<PresetRun> {
  const preset = PRESETS[o.preset];
  const provider = preset.provider!;
  const driver = o.driver ?? makeDriver();
  const id = newAgentId(o.preset);
  const fake = await PROVIDER_FAKES[provider]();
  fake.enqueue(...o.script(conversationPaths('local:presets:demo')));
  const network = { mode: 'internal' as const, hostPorts: [MODEL_RELAY_PORT] };
  const limits = { cpus: 1, memoryMiB: o.memoryMiB ?? Math.max(1536, preset.minMemoryMiB), pids: 512 };
  let relay: ModelRelay | undefined;
  let conn: AgentConnection | undefined;
  let stderr = '';
  const cleanup = async () => {
    conn?.close();
    await relay?.close().catch(() => undefined);
    await fake.close().catch(() => undefined);
    await driver.destroy(id).catch(() => undefined);
    if (!o.driver) await driver.close();
  };
  try {
    // The relay's address is the agent network's host address, which exists once the network
    // does: a first, idle sandbox makes it (the gateway will learn it the same way, or from the
    // driver before it creates the container).
    const idle = await driver.ensure({ agentId: id, image: TEST_IMAGE, limits, network });
    const host = idle.hostAddress!;
    const relayEvents: ModelRelayEvent[] = [];
    relay = await createModelRelay({
      listen: { host, port: MODEL_RELAY_PORT },
      upstreams: { anthropic: fake.url, openai: fake.url, gemini: fake.url },
      secrets: createSecretResolver({ env: { REAL_KEY: fake.apiKey } }),
      logger: createLogger('silent'),
      onEvent: (e) => void relayEvents.push(e),
    });
    const issued = relay.issueToken({ profile: id, provider, key: 'secret://REAL_KEY', allow: o.models });
    relay.beginTurn({ profile: id, turnId: 'turn-1' });

    const agent = resolvePresetAgent({ preset: o.preset, env: o.env ?? {} }, { defaultImage: TEST_IMAGE, relayEnv: issued.env });
    const spec: SandboxSpec = { agentId: id, image: agent.image, command: agent.command, env: agent.env, limits, network, stdin: true };
    const paths = conversationPaths('local:presets:demo');

    const t0 = performance.now();
    await driver.ensure(spec);
    const ensureMs = performance.now() - t0;
    const io = await driver.attach(id);
    io.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-20_000);
    });
    const tInit = performance.now();
    conn = await connectAgent(io, { logger: createLogger('silent') });
    const initializeMs = performance.now() - tInit;
    // The conversation's directory, as the gateway makes it before the session starts.
    const mk = await sh(driver, id, `mkdir -p ${paths.outboxPath} ${paths.inboxPath}`);
    if (mk.exitCode !== 0) throw new Error(`mkdir in the sandbox failed: ${mk.stderr}`);

    const sessionStartedAt = Date.now();
    const tNew = performance.now();
    const sessionId = await within(60_000, 'session/new', conn.newSession({ cwd: paths.cwd, mcpServers: [] }));
    const sessionNewMs = performance.now() - tNew;

    const updates: acp.SessionUpdate[] = [];
    const permissions: acp.RequestPermissionRequest[] = [];
    let firstUpdateAt: number | undefined;
    const tPrompt = performance.now();
    const stopReason = await within(120_000, 'session/prompt', conn.prompt(sessionId, [{ type: 'text', text: o.prompt }], {
      onUpdate(u) {
        firstUpdateAt ??= performance.now();
        updates.push(u);
      },
      async onPermission(req) {
        permissions.push(req);
        const allow = req.options.find((x) => x.kind === 'allow_once') ?? req.options.find((x) => x.kind === 'allow_always');
        return allow ? { allow: true, optionId: allow.optionId } : { allow: false, reason: 'no allow option offered' };
      },
    }));
    const tEnd = performance.now();
    const rss = await sh(driver, id, `cat /proc/[0-9]*/status 2>/dev/null | awk '/^VmRSS:/ {s += $2} END {print s}'`);
    const c = conn;
    const r = relay;
    return {
      agentId: id,
      preset: o.preset,
      paths,
      fake,
      relay: r,
      relayEvents,
      conn: c,
      sessionId,
      sessionStartedAt,
      init: { loadSession: c.supportsLoad },
      updates,
      permissions,
      stopReason,
      timings: {
        ensureMs: Math.round(ensureMs),
        initializeMs: Math.round(initializeMs),
        sessionNewMs: Math.round(sessionNewMs),
        firstUpdateMs: Math.round((firstUpdateAt ?? tEnd) - tPrompt),
        promptMs: Math.round(tEnd - tPrompt),
        totalMs: Math.round(tEnd - t0),
      },
      rssMiB: Math.round(Number(rss.stdout.trim() || 0) / 1024),
      async outbox() {
        const out: OutboxEntry[] = [];
        for await (const e of driver.readOutbox(id, paths.outbox)) out.push(e);
        return out;
      },
      async resume(prompt, replies, session = sessionId) {
        conn?.close();
        await driver.sleep(id);
        const h = await driver.ensure({ ...spec, env: { ...spec.env, AGENTVM_TEST_GENERATION: '2' } });
        if (h.action !== 'recreated') throw new Error(`expected a re-created sandbox, got ${h.action}`);
        const io2 = await driver.attach(id);
        io2.stderr.on('data', (d: Buffer) => {
          stderr = (stderr + d.toString()).slice(-20_000);
        });
        conn = await connectAgent(io2, { logger: createLogger('silent') });
        const c2 = conn;
        const tLoad = performance.now();
        try {
          await within(60_000, 'session/load', c2.loadSession(session, { cwd: paths.cwd, mcpServers: [] }));
        } catch (err) {
          const data = (err as { data?: unknown }).data;
          const error = `${err instanceof Error ? err.message : String(err)}${data === undefined ? '' : ` ${JSON.stringify(data).slice(0, 500)}`}`;
          return { loaded: false, error, loadMs: Math.round(performance.now() - tLoad), updates: [] };
        }
        const loadMs = Math.round(performance.now() - tLoad);
        fake.enqueue(...replies);
        const more: acp.SessionUpdate[] = [];
        const stop = await within(120_000, 'session/prompt', c2.prompt(session, [{ type: 'text', text: prompt }], {
          onUpdate: (u) => void more.push(u),
          onPermission: async () => ({ allow: false, reason: 'not expected' }),
        }));
        return { loaded: true, loadMs, stopReason: stop, updates: more };
      },
      stderr: () => stderr,
      close: cleanup,
    };
  } catch (err) {
    const tail = stderr.trim().split('\n').slice(-15).join('\n');
    await cleanup();
    if (tail && err instanceof Error) err.message += `\n--- agent stderr (tail) ---\n${tail}`;
    throw err;
  }
}

/** The text the agent streamed as its answer. */
export function answerText(updates: acp.SessionUpdate[]): string {
  return updates
    .filter((u): u is Extract<acp.SessionUpdate, { sessionUpdate: 'agent_message_chunk' }> => u.sessionUpdate === 'agent_message_chunk')
    .map((u) => (u.content.type === 'text' ? u.content.text : ''))
    .join('');
}
