/**
 * Agent presets as data: the manifest schema (preset xor command), what a preset fills in at
 * wake, the pinned versions file, the build recipes, and the agreement between each preset's
 * expected relay variables and what the model relay actually issues. No Docker here; the
 * agents themselves run in presets-agents.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { PROVIDERS } from '../src/governance/model-relay/providers.js';
import { PRESET_DATA_DIR, PRESET_NAMES, PRESETS, presetImageRecipe, readPresetPins, reservedEnv, resolvePresetAgent, type PresetName } from '../src/governance/presets.js';
import { validateProfile } from '../src/governance/profile.js';
import { verifyInstalled } from '../src/sandbox/docker/preset-image.js';
import { tempDir } from './helpers/env.js';

const base = { version: 1, id: 'p', name: 'P', risk: 'L1', bindings: [{ platform: 'local', channels: ['*'] }] };
/** Every provider's models entry, so a preset's own `models` requirement is met and only the agent part is judged. */
const models = [
  { provider: 'anthropic', key: 'secret://ANTHROPIC', allow: ['claude-sonnet-4-5'] },
  { provider: 'openai', key: 'secret://OPENAI', allow: ['gpt-5'] },
  { provider: 'gemini', key: 'secret://GEMINI', allow: ['gemini-2.5-pro'] },
];
const issues = (agent: unknown) => validateProfile({ ...base, agent, models }, 'p.yaml').issues.map((i) => `${i.path}: ${i.message}`);
const relayEnvFor = (name: PresetName) => {
  const p = PRESETS[name];
  return p.provider ? PROVIDERS[p.provider].env('http://172.30.0.1:3130', 'tok-123') : {};
};

describe('agent presets in a manifest', () => {
  it('takes exactly one of preset and command', () => {
    for (const preset of PRESET_NAMES) expect(issues({ preset })).toEqual([]);
    expect(issues({ command: ['node', 'agent.mjs'] })).toEqual([]);
    const one = 'agent: set exactly one of preset (claude, codex, gemini, reference) or command (any ACP program on stdio)';
    expect(issues({})).toEqual([one]);
    expect(issues({ preset: 'claude', command: ['node', 'x.mjs'] })).toEqual([one]);
    expect(issues({ preset: 'cursor' })).toEqual(['agent.preset: must be one of claude, codex, gemini, reference']);
  });

  it("refuses agent.env that would change a preset's own or relay variables, and still refuses secrets", () => {
    expect(issues({ preset: 'claude', env: { ANTHROPIC_BASE_URL: 'http://elsewhere', ANTHROPIC_DEFAULT_SONNET_MODEL: 'claude-sonnet-4-5-20250929' } })).toEqual([
      'agent.env.ANTHROPIC_BASE_URL: set by preset claude; a manifest cannot change it',
    ]);
    expect(issues({ preset: 'gemini', env: { GEMINI_CLI_TRUST_WORKSPACE: 'false' } })).toEqual(['agent.env.GEMINI_CLI_TRUST_WORKSPACE: set by preset gemini; a manifest cannot change it']);
    expect(issues({ preset: 'codex', env: { OPENAI_API_KEY: 'secret://OPENAI' } })).toEqual(
      expect.arrayContaining(['agent.env.OPENAI_API_KEY: set by preset codex; a manifest cannot change it']),
    );
    expect(issues({ preset: 'codex', env: { NOTE: 'secret://X' } })).toEqual([expect.stringMatching(/^agent\.env\.NOTE: the agent never receives secrets/)]);
  });
});

describe('what a preset fills in at wake', () => {
  it("expects exactly the variables the model relay issues for the preset's provider", () => {
    for (const name of PRESET_NAMES) {
      const p = PRESETS[name];
      expect(Object.keys(relayEnvFor(name)).sort(), name).toEqual([...p.relayEnv].sort());
    }
  });

  it('gives image, command and env, with the relay env and the manifest env merged', () => {
    const r = resolvePresetAgent({ preset: 'claude', env: { ANTHROPIC_DEFAULT_SONNET_MODEL: 'claude-sonnet-4-5-20250929' } }, { defaultImage: 'agent-vm/agent:latest', relayEnv: relayEnvFor('claude') });
    expect(r).toEqual({
      image: 'agent-vm/agent-claude:latest',
      command: ['node', '/opt/agent-vm/presets/claude/node_modules/@zed-industries/claude-agent-acp/dist/index.js'],
      env: {
        ANTHROPIC_DEFAULT_SONNET_MODEL: 'claude-sonnet-4-5-20250929',
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
        DISABLE_AUTOUPDATER: '1',
        DISABLE_TELEMETRY: '1',
        DISABLE_ERROR_REPORTING: '1',
        ANTHROPIC_BASE_URL: 'http://172.30.0.1:3130/anthropic',
        ANTHROPIC_API_KEY: 'tok-123',
      },
    });
    expect(resolvePresetAgent({ preset: 'codex', env: {} }, { defaultImage: 'x', relayEnv: relayEnvFor('codex') }).env).toEqual({ OPENAI_BASE_URL: 'http://172.30.0.1:3130/openai/v1', OPENAI_API_KEY: 'tok-123' });
    // The reference agent is in the agent image itself and talks to no model.
    expect(resolvePresetAgent({ preset: 'reference', env: {} }, { defaultImage: 'agent-vm/agent:latest' })).toEqual({ image: 'agent-vm/agent:latest', command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'], env: {} });
    // A manifest's own image wins; a command manifest runs its command.
    expect(resolvePresetAgent({ preset: 'gemini', env: {} }, { defaultImage: 'x', image: 'registry.example/gemini:1', relayEnv: relayEnvFor('gemini') }).image).toBe('registry.example/gemini:1');
    expect(resolvePresetAgent({ command: ['my-agent', '--acp'], env: { A: '1' } }, { defaultImage: 'agent-vm/agent:latest' })).toEqual({ image: 'agent-vm/agent:latest', command: ['my-agent', '--acp'], env: { A: '1' } });
  });

  it('fails closed without the relay environment, and on a reserved variable', () => {
    expect(() => resolvePresetAgent({ preset: 'gemini', env: {} }, { defaultImage: 'x', relayEnv: { GEMINI_API_KEY: 't' } })).toThrow(/preset gemini needs GOOGLE_GEMINI_BASE_URL from the model relay/);
    expect(() => resolvePresetAgent({ preset: 'claude', env: {} }, { defaultImage: 'x' })).toThrow(/needs ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY/);
    expect(() => resolvePresetAgent({ preset: 'claude', env: { DISABLE_TELEMETRY: '0' } }, { defaultImage: 'x', relayEnv: relayEnvFor('claude') })).toThrow(/may not set DISABLE_TELEMETRY/);
    expect(reservedEnv('claude')).toEqual(expect.arrayContaining(['ANTHROPIC_BASE_URL', 'ANTHROPIC_API_KEY', 'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC']));
  });
});

describe('pinned versions (agents/presets/versions.json)', () => {
  const pins = readPresetPins();

  it('pins every built preset with exact versions and sha512 integrity', () => {
    expect(pins.claude?.packages['@zed-industries/claude-agent-acp']?.version).toBe('0.23.1');
    expect(pins.codex?.packages['@zed-industries/codex-acp']?.version).toBe('0.16.0');
    expect(pins.codex?.packages['@zed-industries/codex-acp-linux-x64']?.version).toBe('0.16.0');
    expect(pins.gemini?.packages['@google/gemini-cli']?.version).toBe('0.61.0');
    for (const name of PRESET_NAMES) {
      const r = presetImageRecipe(name, pins);
      if (name === 'reference') {
        expect(r).toBeUndefined();
        continue;
      }
      expect(r!.image).toBe(`agent-vm/agent-${name}:latest`);
      expect(r!.installDir).toBe(`/opt/agent-vm/presets/${name}`);
      for (const src of Object.values(r!.files)) expect(fs.existsSync(src), src).toBe(true);
    }
    // The wrapper is the codex preset's command: it must stay executable in the repository.
    expect(fs.statSync(path.join(PRESET_DATA_DIR, 'codex', 'agent.sh')).mode & 0o111).not.toBe(0);
  });

  it('refuses a malformed versions file', () => {
    const dir = tempDir('pins');
    fs.mkdirSync(dir, { recursive: true });
    const write = (v: unknown) => {
      fs.writeFileSync(path.join(dir, 'v.json'), JSON.stringify(v));
      return () => readPresetPins(path.join(dir, 'v.json'));
    };
    const good = { version: '1.2.3', integrity: `sha512-${'A'.repeat(86)}==` };
    expect(write({ x: { install: ['a'], packages: { a: good } } })()).toEqual({ x: { install: ['a'], packages: { a: good } } });
    expect(write({ x: { install: ['a'], packages: { a: { ...good, version: '^1.2.3' } } } })).toThrow(/version must be exact/);
    expect(write({ x: { install: ['a'], packages: { a: { ...good, integrity: 'sha1-abc' } } } })).toThrow(/integrity must be/);
    expect(write({ x: { install: ['b'], packages: { a: good } } })).toThrow(/installs b, which has no entry/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('accepts an install only when every package matches its pin', () => {
    const r = { name: 'claude', install: pins.claude!.install, packages: pins.claude!.packages };
    const lock = { packages: Object.fromEntries(Object.entries(r.packages).filter(([n]) => !n.includes('arm64')).map(([n, p]) => [`node_modules/${n}`, { ...p }])) };
    expect(() => verifyInstalled(r, lock)).not.toThrow();
    const drifted = structuredClone(lock);
    drifted.packages['node_modules/zod']!.version = '4.9.9';
    expect(() => verifyInstalled(r, drifted)).toThrow(/zod@4.9.9 .* does not match the pin/);
    const extra = structuredClone(lock);
    extra.packages['node_modules/left-pad'] = { version: '1.3.0', integrity: 'sha512-x' };
    expect(() => verifyInstalled(r, extra)).toThrow(/installed left-pad@1.3.0, which is not pinned/);
    const tampered = structuredClone(lock);
    tampered.packages['node_modules/@zed-industries/claude-agent-acp']!.integrity = `sha512-${'B'.repeat(86)}==`;
    expect(() => verifyInstalled(r, tampered)).toThrow(/claude-agent-acp@0.23.1 .* does not match the pin/);
    const missing = structuredClone(lock);
    delete missing.packages['node_modules/@zed-industries/claude-agent-acp'];
    expect(() => verifyInstalled(r, missing)).toThrow(/@zed-industries\/claude-agent-acp was not installed/);
  });
});

describe('agent-vm image build --agents', () => {
  it('names an unknown preset before building anything', async () => {
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(['image', 'build', '--agents', 'claude,cursor'])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(err.join('')).toMatch(/--agents: unknown preset "cursor"; expected a comma-separated list of claude, codex, gemini, reference/);
  });
});
