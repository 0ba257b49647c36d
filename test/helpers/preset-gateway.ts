/**
 * Real preset agents (Claude Code, Codex, Gemini CLI) behind the real gateway: the three fake
 * provider APIs (the only fakes: no machine here reaches a model provider) with their real keys
 * handed to the gateway as AGENTVM_SECRET_<NAME>, the gateway pointed at them with
 * AGENTVM_<PROVIDER>_API_URL, manifests with `agent.preset`, `models` and `permissions`, and the
 * gateway's log captured in memory at debug level (so a test can prove what it never says).
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '../../src/log.js';
import type { ModelProvider } from '../../src/governance/model-relay/types.js';
import { PRESETS } from '../../src/governance/presets.js';
import { conversationPaths, type ConversationPaths } from '../../src/sandbox/layout.js';
import type { SandboxDriver } from '../../src/sandbox/types.js';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI, type FakeProvider, type FakeReply } from '../fakes/providers/index.js';

export type RealPreset = 'claude' | 'codex' | 'gemini';

/** Secret names the manifests use for each provider's key (AGENTVM_SECRET_<name> holds it). */
export const KEY_NAMES: Record<ModelProvider, string> = { anthropic: 'E2E_ANTHROPIC_KEY', openai: 'E2E_OPENAI_KEY', gemini: 'E2E_GEMINI_KEY' };

/** The model each preset is pointed at (first in its `allow`), as the presets' own test uses. */
export const MODELS: Record<RealPreset, string> = { claude: 'claude-sonnet-4-5-20250929', codex: 'gpt-5-codex', gemini: 'gemini-2.5-flash' };

export interface ProviderFakes {
  byProvider: Record<ModelProvider, FakeProvider>;
  of(preset: RealPreset): FakeProvider;
  /** The gateway's environment: upstream URLs and the real keys as secrets. */
  env(): Record<string, string>;
  /** Every real key (what must never be seen anywhere but the fakes). */
  keys(): string[];
  close(): Promise<void>;
}

export async function startProviderFakes(): Promise<ProviderFakes> {
  const [anthropic, openai, gemini] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeGemini()]);
  const byProvider = { anthropic, openai, gemini };
  return {
    byProvider,
    of: (preset) => byProvider[PRESETS[preset].provider!],
    env: () => ({
      AGENTVM_ANTHROPIC_API_URL: anthropic.url,
      AGENTVM_OPENAI_API_URL: openai.url,
      AGENTVM_GEMINI_API_URL: gemini.url,
      [`AGENTVM_SECRET_${KEY_NAMES.anthropic}`]: anthropic.apiKey,
      [`AGENTVM_SECRET_${KEY_NAMES.openai}`]: openai.apiKey,
      [`AGENTVM_SECRET_${KEY_NAMES.gemini}`]: gemini.apiKey,
    }),
    keys: () => [anthropic.apiKey, openai.apiKey, gemini.apiKey],
    close: async () => {
      await Promise.all([anthropic.close(), openai.close(), gemini.close()]);
    },
  };
}

/**
 * A manifest for a preset agent: runsc, L2 (so `edit` may be allowed without a person), the
 * preset's provider with its key by reference and `allow: [MODELS[preset]]`, a memory limit the
 * agent was measured to need, bound to the local channel unless `extra` says otherwise.
 */
export function presetManifest(id: string, preset: RealPreset, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const provider = PRESETS[preset].provider!;
  return {
    version: 1,
    id,
    name: `E2E ${preset} ${id}`,
    agent: { preset },
    runtime: 'runsc',
    limits: { cpus: 1, memoryMiB: 1536, pids: 512 },
    risk: 'L2',
    turn: { timeoutSeconds: 180 },
    bindings: [{ platform: 'local', channels: ['*'] }],
    models: [{ provider, key: `secret://${KEY_NAMES[provider]}`, allow: [MODELS[preset]] }],
    permissions: { allow: ['read', 'search', 'think', 'edit'], ask: [], deny: [] },
    ...extra,
  };
}

export const REPORT = '# Report\n\nWritten by a preset agent inside a gVisor sandbox, through the gateway.\n';

/** The model's call of the preset's own file-writing tool, writing `report.md` to the conversation's outbox. */
export function writeReport(preset: RealPreset, paths: ConversationPaths, content = REPORT): FakeReply {
  if (preset === 'claude') return { toolCall: { name: 'Write', args: { file_path: `${paths.outboxPath}/report.md`, content } } };
  if (preset === 'gemini') return { toolCall: { name: 'write_file', args: { file_path: `${paths.outboxPath}/report.md`, content } } };
  // Codex: a model without built-in metadata gets the shell tools, where apply_patch is intercepted.
  const lines = content.replace(/\n$/, '').split('\n').map((l) => `+${l}`).join('\n');
  return { toolCall: { name: 'exec_command', args: { cmd: `apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: outbox/report.md\n${lines}\n*** End Patch\nEOF\n`, workdir: paths.cwd } } };
}

export { conversationPaths };

/** The gateway's log lines, kept in memory. */
export interface CapturedLog {
  logger: Logger;
  text(): string;
  lines(): number;
}

/**
 * A debug-level logger that keeps every line. It has no key-based redaction at all (unlike
 * src/log.ts), so a secret found absent here was never handed to the logger in the first place.
 */
export function captureLog(): CapturedLog {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = pino({ level: 'debug', base: { svc: 'agent-vm' } }, sink);
  return { logger, text: () => chunks.join(''), lines: () => chunks.length };
}

/** The sandbox's relay variables per provider: base URL and token. */
const RELAY_VARS: Record<ModelProvider, { base: string; token: string }> = {
  anthropic: { base: 'ANTHROPIC_BASE_URL', token: 'ANTHROPIC_API_KEY' },
  openai: { base: 'OPENAI_BASE_URL', token: 'OPENAI_API_KEY' },
  gemini: { base: 'GOOGLE_GEMINI_BASE_URL', token: 'GEMINI_API_KEY' },
};

/**
 * Everything a process in the sandbox could read that might hold a key: every process's
 * environment and command line, and every file under /workspace (HOME), /tmp and /etc, as one
 * text (read from outside, so the key is never sent in).
 */
export async function sandboxReadable(driver: SandboxDriver, agentId: string): Promise<string> {
  const r = await driver.exec(
    agentId,
    ['sh', '-c', 'for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done | tr "\\0" "\\n"; find /workspace /tmp /etc -xdev -type f -size -8M -exec cat {} + 2>/dev/null; true'],
    { timeoutMs: 60_000, maxOutputBytes: 128 * 1024 * 1024 },
  );
  if (r.exitCode !== 0 || r.truncated) throw new Error(`reading the sandbox failed: exit ${r.exitCode}, truncated ${r.truncated}: ${r.stderr.slice(0, 500)}`);
  return r.stdout;
}

/**
 * From inside the sandbox, one model call to the relay with the sandbox's own base URL and token
 * (node's fetch, as the agent's client would); returns the HTTP status and body.
 */
export async function callRelayFromInside(driver: SandboxDriver, agentId: string, provider: ModelProvider, model: string): Promise<{ status: number; body: string }> {
  const v = RELAY_VARS[provider];
  const call = {
    anthropic: { path: '/anthropic/v1/messages', headers: { 'anthropic-version': '2023-06-01' }, auth: 'x-api-key', body: { model, max_tokens: 8, messages: [{ role: 'user', content: 'replayed' }] } },
    openai: { path: '/openai/v1/responses', headers: {}, auth: 'authorization', body: { model, input: 'replayed' } },
    gemini: { path: `/gemini/v1beta/models/${model}:generateContent`, headers: {}, auth: 'x-goog-api-key', body: { contents: [{ role: 'user', parts: [{ text: 'replayed' }] }] } },
  }[provider];
  const script = `
    const c = ${JSON.stringify(call)};
    const token = process.env[${JSON.stringify(v.token)}];
    const origin = new URL(process.env[${JSON.stringify(v.base)}]).origin;
    const headers = { 'content-type': 'application/json', ...c.headers, [c.auth]: c.auth === 'authorization' ? 'Bearer ' + token : token };
    fetch(origin + c.path, { method: 'POST', headers, body: JSON.stringify(c.body) })
      .then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))
      .catch((e) => console.log(JSON.stringify({ status: 0, body: String(e) })));`;
  const r = await driver.exec(agentId, ['node', '-e', script], { timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new Error(`the call from inside failed: exit ${r.exitCode}: ${r.stderr.slice(0, 500)}`);
  return JSON.parse(r.stdout.trim()) as { status: number; body: string };
}

/** The relay token in the sandbox's environment for `provider` (what the agent authenticates with). */
export function relayTokenIn(env: readonly string[], provider: ModelProvider): string | undefined {
  const prefix = `${RELAY_VARS[provider].token}=`;
  return env.find((e) => e.startsWith(prefix))?.slice(prefix.length);
}
