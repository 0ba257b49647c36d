import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isAgentVmError } from '../errors.js';
import { formatPath, validateProfile, type Profile } from './profile.js';
import { findBindingConflicts, loadProfiles } from './profiles.js';
import { TIERS, assertRuntimeAllowed, runtimeForTier, tierTableMarkdown } from './tiers.js';

const FULL = `version: 1
id: support
name: Support Agent
agent:
  command: ["node", "/opt/agent-vm/agents/reference/agent.mjs"]
  env: { LOG_LEVEL: info }
image: agent-vm/agent:latest
runtime: auto
limits: { cpus: 2, memoryMiB: 1024 }
turn: { timeoutSeconds: 120 }
idle: { sleepAfterSeconds: 900 }
risk: L1
bindings:
  - platform: local
    channels: ["*"]
  - platform: slack
    team: T0123
    channels: ["C0456"]
  - platform: discord
    guild: "123456789012345678"
    channels: ["234567890123456789"]
    command: ask
  - platform: clickup
    team: "9012345"
    space: "77"
    trigger: "@support"
tools:
  servers:
    - name: github
      url: https://mcp.example.com/mcp
      headers: { Authorization: "Bearer secret://github-token" }
    - name: files
      command: ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/workspace"]
  allow: ["github.search_issues", "github.create_issue", "files.read_file"]
  approval: ["github.create_issue"]
egress:
  allow: ["api.github.com:443"]
secrets:
  github-token: secret://github-token
`;

/** A minimal valid manifest as an object, for schema-level tests. */
function minimal(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    id: 'a',
    name: 'A',
    agent: { command: ['node', 'agent.mjs'] },
    risk: 'L1',
    bindings: [{ platform: 'local', channels: ['general'] }],
    ...over,
  };
}

function issuesOf(data: unknown) {
  return validateProfile(data, 'a.yaml').issues.map(({ path: p, message }) => ({ path: p, message }));
}

describe('profile schema', () => {
  it('applies defaults for every optional section', () => {
    const r = validateProfile(minimal(), 'a.yaml');
    expect(r.issues).toEqual([]);
    expect(r.profile).toMatchObject({
      limits: { cpus: 1, memoryMiB: 512, pids: 256 },
      turn: { timeoutSeconds: 300 },
      idle: { sleepAfterSeconds: 600 },
      egress: { allow: [] },
      secrets: {},
      tools: { servers: [], allow: [], approval: [] },
      agent: { env: {} },
    });
    expect(r.profile?.image).toBeUndefined();
    expect(r.profile?.runtime).toBeUndefined();
  });

  it('fills only the missing limit fields', () => {
    expect(validateProfile(minimal({ limits: { memoryMiB: 1024 } }), 'a.yaml').profile?.limits).toEqual({ cpus: 1, memoryMiB: 1024, pids: 256 });
  });

  it('refuses unknown versions, fail closed', () => {
    expect(issuesOf(minimal({ version: 2 }))).toEqual([{ path: 'version', message: 'unsupported manifest version 2; this agent-vm reads version 1' }]);
    expect(issuesOf(minimal({ version: undefined }))).toEqual([{ path: 'version', message: 'required' }]);
  });

  it('reports each unknown key at its own path', () => {
    expect(issuesOf(minimal({ colour: 'red', limits: { cpus: 1, gpus: 1 } }))).toEqual([
      { path: 'limits.gpus', message: 'unknown key "gpus"' },
      { path: 'colour', message: 'unknown key "colour"' },
    ]);
    expect(issuesOf(minimal({ bindings: [{ platform: 'local', channels: ['x'] }, { platform: 'slack', team: 'T1', guild: '1' }] }))).toEqual([
      { path: 'bindings[1].guild', message: 'unknown key "guild"' },
    ]);
  });

  it('names required fields and bad values by path', () => {
    const issues = issuesOf({ version: 1, id: 'Bad_Id', agent: { command: [] }, risk: 'L9', bindings: [] });
    expect(issues).toEqual(
      expect.arrayContaining([
        { path: 'id', message: expect.stringMatching(/lowercase letters/) },
        { path: 'name', message: 'required' },
        { path: 'agent.command', message: expect.stringMatching(/must name the agent program/) },
        { path: 'risk', message: 'must be one of L0, L1, L2, L3, L4, L5' },
        { path: 'bindings', message: 'bind the profile to at least one channel' },
      ]),
    );
  });

  it('checks limits, turn and runtime ranges', () => {
    expect(issuesOf(minimal({ turn: { timeoutSeconds: 3601 } }))[0]?.path).toBe('turn.timeoutSeconds');
    expect(issuesOf(minimal({ turn: { timeoutSeconds: 0 } }))[0]?.path).toBe('turn.timeoutSeconds');
    expect(issuesOf(minimal({ limits: { pids: 1.5 } }))[0]).toEqual({ path: 'limits.pids', message: 'must be a whole number' });
    expect(issuesOf(minimal({ runtime: 'firecracker' }))).toEqual([{ path: 'runtime', message: 'must be one of kata, runsc, runc, auto' }]);
    expect(issuesOf(minimal({ risk: undefined }))).toEqual([{ path: 'risk', message: 'required' }]);
  });

  describe('bindings', () => {
    const b = (binding: Record<string, unknown>) => issuesOf(minimal({ bindings: [{ platform: 'local', channels: ['x'] }, binding] }));

    it('accepts every platform', () => {
      expect(b({ platform: 'slack', team: 'T0123' })).toEqual([]);
      expect(b({ platform: 'discord', guild: '1', channels: ['2'], command: 'ask' })).toEqual([]);
      expect(b({ platform: 'clickup', team: '9', list: '3', trigger: '@bot' })).toEqual([]);
    });

    it('rejects an unknown platform', () => {
      expect(b({ team: 'x' })).toEqual([{ path: 'bindings[1].platform', message: 'required' }]);
      expect(b({ platform: 'teams', team: 'x' })).toEqual([{ path: 'bindings[1].platform', message: 'unknown platform; expected one of local, slack, discord, clickup' }]);
    });

    it('requires the workspace of each platform', () => {
      expect(b({ platform: 'slack', channels: ['C1'] })).toEqual([{ path: 'bindings[1].team', message: 'required' }]);
      expect(b({ platform: 'discord' })).toEqual([{ path: 'bindings[1].guild', message: 'required' }]);
      expect(b({ platform: 'clickup', team: '9' })).toEqual([{ path: 'bindings[1].trigger', message: 'required' }]);
    });

    it('allows "*" only for local', () => {
      expect(b({ platform: 'slack', team: 'T1', channels: ['*'] })[0]?.path).toBe('bindings[1].channels[0]');
      expect(b({ platform: 'discord', guild: '1', channels: ['*'] })[0]?.path).toBe('bindings[1].channels[0]');
      expect(b({ platform: 'clickup', team: '*', trigger: '@x' })[0]).toEqual({ path: 'bindings[1].team', message: expect.stringMatching(/"\*" is allowed only in local/) });
    });

    it('wants Discord ids as strings (numbers lose precision)', () => {
      expect(b({ platform: 'discord', guild: 123456789012345678 })[0]).toEqual({ path: 'bindings[1].guild', message: expect.stringMatching(/expected string/) });
    });

    it('rejects an empty channel list (omit it for a team-wide binding)', () => {
      expect(b({ platform: 'slack', team: 'T1', channels: [] })).toEqual([{ path: 'bindings[1].channels', message: 'omit channels for a team-wide binding' }]);
    });
  });

  describe('tools and secrets', () => {
    const tools = (t: Record<string, unknown>, secrets: Record<string, string> = {}) => issuesOf(minimal({ tools: t, secrets }));
    const gh = { name: 'gh', url: 'https://mcp.example.com/mcp' };

    it('requires exactly one of url and command', () => {
      expect(tools({ servers: [{ name: 'x' }] })).toEqual([{ path: 'tools.servers[0]', message: 'set exactly one of url (remote MCP over http) or command (local stdio)' }]);
      expect(tools({ servers: [{ name: 'x', url: 'https://a/', command: ['a'] }] })[0]?.path).toBe('tools.servers[0]');
      expect(tools({ servers: [{ name: 'x', url: 'ftp://a/' }] })).toEqual([{ path: 'tools.servers[0].url', message: 'must be an http:// or https:// URL' }]);
    });

    it('requires allowed tools to name a declared server', () => {
      expect(tools({ servers: [gh], allow: ['gh.search', 'slack.post'] })).toEqual([
        { path: 'tools.allow[1]', message: 'tool "slack.post" names server "slack", which is not declared in tools.servers' },
      ]);
      expect(tools({ servers: [gh], allow: ['search'] })).toEqual([{ path: 'tools.allow[0]', message: 'must be <server>.<tool>' }]);
    });

    it('requires approval tools to be allowed', () => {
      expect(tools({ servers: [gh], allow: ['gh.search'], approval: ['gh.create_issue'] })).toEqual([
        { path: 'tools.approval[0]', message: 'tool "gh.create_issue" needs approval but is not in tools.allow' },
      ]);
    });

    it('rejects duplicate server names', () => {
      expect(tools({ servers: [gh, gh] })).toEqual([{ path: 'tools.servers[1].name', message: 'duplicate server name "gh"' }]);
    });

    it('requires secret references in headers to be declared', () => {
      const s = { ...gh, headers: { Authorization: 'Bearer secret://gh-token' } };
      expect(tools({ servers: [s] })).toEqual([{ path: 'tools.servers[0].headers.Authorization', message: 'secret "gh-token" is not declared in secrets' }]);
      expect(tools({ servers: [s] }, { 'gh-token': 'secret://vault-gh' })).toEqual([]);
    });

    it('accepts only secret:// references as secret values', () => {
      expect(issuesOf(minimal({ secrets: { token: 'ghp_abcdef123' } }))).toEqual([
        { path: 'secrets.token', message: 'must be a secret://<name> reference; secret values never go in a manifest' },
      ]);
    });

    it('keeps secret references out of the agent environment', () => {
      expect(issuesOf(minimal({ agent: { command: ['a'], env: { TOKEN: 'secret://x' } }, secrets: { x: 'secret://x' } }))).toEqual([
        { path: 'agent.env.TOKEN', message: expect.stringMatching(/never receives secrets/) },
      ]);
    });
  });

  it('checks egress entries as host:port', () => {
    expect(issuesOf(minimal({ egress: { allow: ['api.github.com:443', 'api.github.com', 'x:99999'] } })).map((i) => i.path)).toEqual([
      'egress.allow[1]',
      'egress.allow[2]',
    ]);
  });

  describe('risk tiers', () => {
    const tier = (risk: string, over: Record<string, unknown> = {}) => issuesOf(minimal({ risk, ...over }));

    it('refuses runc from L2 up, and anything but kata at L4-L5', () => {
      expect(tier('L1', { runtime: 'runc' })).toEqual([]);
      expect(tier('L2', { runtime: 'runc' })).toEqual([{ path: 'runtime', message: 'runtime runc is not allowed at risk L2; allowed: kata, runsc, auto' }]);
      expect(tier('L3', { runtime: 'auto' })).toEqual([]);
      expect(tier('L4', { runtime: 'runsc' })).toEqual([{ path: 'runtime', message: 'runtime runsc is not allowed at risk L4; allowed: kata' }]);
      expect(tier('L4', { runtime: 'auto' })[0]?.path).toBe('runtime');
      expect(tier('L5', { runtime: 'kata' })).toEqual([]);
    });

    it('makes L4-L5 name kata, since the gateway default may pick another runtime', () => {
      expect(tier('L5')).toEqual([{ path: 'runtime', message: expect.stringMatching(/^risk L5 needs runtime: kata in the manifest/) }]);
      expect(tier('L2')).toEqual([]);
    });

    it('caps limits per tier', () => {
      expect(tier('L1', { limits: { cpus: 3, memoryMiB: 4096 } })).toEqual([
        { path: 'limits.cpus', message: 'cpus 3 is more than risk L1 allows (at most 2)' },
        { path: 'limits.memoryMiB', message: 'memoryMiB 4096 is more than risk L1 allows (at most 2048)' },
      ]);
      expect(tier('L2', { limits: { cpus: 3, memoryMiB: 4096 } })).toEqual([]);
      expect(tier('L0', { limits: { pids: 1024 } })).toEqual([{ path: 'limits.pids', message: 'pids 1024 is more than risk L0 allows (at most 512)' }]);
    });

    it('keeps L0 without egress and secrets', () => {
      expect(tier('L0', { egress: { allow: ['api.github.com:443'] }, secrets: { t: 'secret://t' } })).toEqual([
        { path: 'egress.allow', message: 'risk L0 may not open egress; remove egress.allow or raise risk to L1 or above' },
        { path: 'secrets', message: 'risk L0 may not use secrets; remove them or raise risk to L1 or above' },
      ]);
    });

    it('checks the runtime again at wake, and renders the table', () => {
      expect(() => assertRuntimeAllowed('L2', 'runc')).toThrow(/risk L2 does not allow runtime runc/);
      expect(() => assertRuntimeAllowed('L4', 'runsc')).toThrow(expect.objectContaining({ code: 'tier_runtime_refused' }));
      expect(() => assertRuntimeAllowed('L4', 'kata')).not.toThrow();
      expect(runtimeForTier('L1', undefined, 'auto')).toBe('auto');
      expect(() => runtimeForTier('L3', undefined, 'runc')).toThrow(/does not allow runtime runc/);
      expect(runtimeForTier('L5', 'kata', 'runc')).toBe('kata');
      const md = tierTableMarkdown();
      expect(md.trimEnd().split('\n')).toHaveLength(2 + Object.keys(TIERS).length);
      expect(md).toContain('| L4 | kata | allowlist | yes | 16 / 16384 / 4096 | every tool call |');
    });

    it('rejects server names containing "__" (the exposed-name separator) and accepts tools.deny', () => {
      expect(issuesOf(minimal({ tools: { servers: [{ name: 'a__b', url: 'https://x/' }] } }))).toEqual([
        { path: 'tools.servers[0].name', message: 'must not contain "__" (it separates server and tool in exposed tool names)' },
      ]);
      expect(issuesOf(minimal({ tools: { servers: [{ name: 'gh', url: 'https://x/' }], allow: ['gh.a'], deny: ['gh.a', 'x.b'] } }))).toEqual([
        { path: 'tools.deny[1]', message: 'tool "x.b" names server "x", which is not declared in tools.servers' },
      ]);
    });
  });

  it('formats paths dotted and indexed', () => {
    expect(formatPath(['bindings', 1, 'team'])).toBe('bindings[1].team');
    expect(formatPath([])).toBe('');
  });
});

describe('findBindingConflicts', () => {
  const p = (id: string, bindings: unknown[]) => validateProfile(minimal({ id, bindings }), `${id}.yaml`).profile as Profile;

  it('reports both sides of an identical binding', () => {
    const c = findBindingConflicts([
      p('a', [{ platform: 'slack', team: 'T1', channels: ['C1', 'C2'] }]),
      p('b', [{ platform: 'local', channels: ['x'] }, { platform: 'slack', team: 'T1', channels: ['C2'] }]),
    ]);
    expect(c.map(({ id, path: at, otherId }) => ({ id, at, otherId }))).toEqual([
      { id: 'a', at: 'bindings[0].channels[1]', otherId: 'b' },
      { id: 'b', at: 'bindings[1].channels[0]', otherId: 'a' },
    ]);
    expect(c[0]?.message).toBe('binding "slack team T1 channel C2" is also claimed by profile "b"; an event must match exactly one profile');
  });

  it('treats two team-wide bindings on one team as a conflict, but not team-wide vs a channel', () => {
    expect(findBindingConflicts([p('a', [{ platform: 'slack', team: 'T1' }]), p('b', [{ platform: 'slack', team: 'T1' }])]).map((c) => c.path)).toEqual([
      'bindings[0].team',
      'bindings[0].team',
    ]);
    expect(findBindingConflicts([p('a', [{ platform: 'slack', team: 'T1' }]), p('b', [{ platform: 'slack', team: 'T1', channels: ['C1'] }])])).toEqual([]);
    expect(findBindingConflicts([p('a', [{ platform: 'slack', team: 'T1' }]), p('b', [{ platform: 'slack', team: 'T2' }])])).toEqual([]);
  });

  it('keys ClickUp bindings by scope and trigger; local bindings never conflict', () => {
    const cu = (trigger: string, list?: string) => ({ platform: 'clickup', team: '9', trigger, ...(list ? { list } : {}) });
    expect(findBindingConflicts([p('a', [cu('@a')]), p('b', [cu('@b')])])).toEqual([]);
    expect(findBindingConflicts([p('a', [cu('@bot')]), p('b', [cu('@Bot')])])).toHaveLength(2);
    expect(findBindingConflicts([p('a', [cu('@bot', '1')]), p('b', [cu('@bot')])])).toEqual([]);
    // Local events name their profile, so two profiles may both take any local channel.
    expect(findBindingConflicts([p('a', [{ platform: 'local', channels: ['*'] }]), p('b', [{ platform: 'local', channels: ['*'] }])])).toEqual([]);
    expect(findBindingConflicts([p('a', [{ platform: 'local', channels: ['*'] }]), p('b', [{ platform: 'local', channels: ['dev'] }])])).toEqual([]);
  });
});

describe('loadProfiles', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
  });

  async function dirWith(files: Record<string, string>): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-profiles-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) await fs.writeFile(path.join(dir, name), text);
    return dir;
  }
  const manifest = (id: string, extra = '', binding = `  - platform: local\n    channels: ["${id}"]\n`) =>
    `version: 1\nid: ${id}\nname: ${id}\nagent:\n  command: ["node", "agent.mjs"]\nrisk: L0\nbindings:\n${binding}${extra}`;

  it('loads a full manifest', async () => {
    const r = await loadProfiles(await dirWith({ 'support.yaml': FULL }));
    expect(r.invalid).toEqual([]);
    expect(r.files).toEqual({ support: 'support.yaml' });
    expect(r.profiles[0]).toMatchObject({ id: 'support', limits: { cpus: 2, memoryMiB: 1024, pids: 256 }, tools: { approval: ['github.create_issue'] } });
    expect(r.profiles[0]?.bindings.map((b) => b.platform)).toEqual(['local', 'slack', 'discord', 'clickup']);
  });

  it('reports each bad file with its issues and still loads the valid ones', async () => {
    const dir = await dirWith({
      'alpha.yaml': manifest('alpha'),
      'bad-yaml.yaml': 'version: 1\nid: [unclosed\n',
      'beta.yml': manifest('beta'),
      'future.yaml': manifest('future').replace('version: 1', 'version: 2'),
      'extra.yaml': manifest('extra', 'colour: red\n'),
      'wrong.yaml': manifest('right'),
      'dup.yaml': manifest('dup'),
      'dup.yml': manifest('dup'),
      'clash-a.yaml': manifest('clash-a', '', '  - platform: slack\n    team: T1\n'),
      'clash-b.yaml': manifest('clash-b', '', '  - platform: local\n    channels: ["z"]\n  - platform: slack\n    team: T1\n'),
      'secret.yaml': manifest('secret', 'tools:\n  servers:\n    - name: gh\n      url: https://mcp.example.com/\n      headers: { Authorization: "Bearer secret://gh" }\n'),
      'approve.yaml': manifest('approve', 'tools:\n  servers:\n    - name: gh\n      command: ["gh-mcp"]\n  allow: ["gh.read"]\n  approval: ["gh.write"]\n'),
      'empty.yaml': '',
      'notes.txt': 'not a manifest',
      '.hidden.yaml': 'garbage: [',
    });
    await fs.mkdir(path.join(dir, 'sub.yaml'));
    const r = await loadProfiles(dir);
    expect(r.profiles.map((p) => p.id)).toEqual(['alpha', 'beta']);
    expect(r.files).toEqual({ alpha: 'alpha.yaml', beta: 'beta.yml' });
    const byFile = Object.fromEntries(r.invalid.map((i) => [i.file, i.issues.map(({ path: p, message }) => ({ path: p, message }))]));
    expect(Object.keys(byFile).sort()).toEqual(
      ['approve.yaml', 'bad-yaml.yaml', 'clash-a.yaml', 'clash-b.yaml', 'dup.yaml', 'dup.yml', 'empty.yaml', 'extra.yaml', 'future.yaml', 'secret.yaml', 'wrong.yaml'].sort(),
    );
    expect(byFile['bad-yaml.yaml']).toEqual([{ path: '', message: expect.stringMatching(/^YAML syntax error at line \d+, column \d+: /) }]);
    expect(byFile['future.yaml']).toEqual([{ path: 'version', message: 'unsupported manifest version 2; this agent-vm reads version 1' }]);
    expect(byFile['extra.yaml']).toEqual([{ path: 'colour', message: 'unknown key "colour"' }]);
    expect(byFile['wrong.yaml']).toEqual([{ path: 'id', message: 'id "right" does not match the file name; rename the file to right.yaml or set id: wrong' }]);
    expect(byFile['dup.yaml']).toEqual([{ path: 'id', message: 'duplicate id "dup": also claimed by dup.yml' }]);
    expect(byFile['dup.yml']).toEqual([{ path: 'id', message: 'duplicate id "dup": also claimed by dup.yaml' }]);
    expect(byFile['clash-a.yaml']).toEqual([
      { path: 'bindings[0].team', message: 'binding "slack team T1 (team-wide)" is also claimed by profile "clash-b" (clash-b.yaml); an event must match exactly one profile' },
    ]);
    expect(byFile['clash-b.yaml']).toEqual([{ path: 'bindings[1].team', message: expect.stringContaining('profile "clash-a" (clash-a.yaml)') }]);
    expect(byFile['secret.yaml']).toEqual([{ path: 'tools.servers[0].headers.Authorization', message: 'secret "gh" is not declared in secrets' }]);
    expect(byFile['approve.yaml']).toEqual([{ path: 'tools.approval[0]', message: 'tool "gh.write" needs approval but is not in tools.allow' }]);
    expect(byFile['empty.yaml']).toEqual([{ path: '', message: 'the file is empty' }]);
    expect(r.invalid.find((i) => i.file === 'wrong.yaml')?.id).toBe('right');
    expect(r.invalid.find((i) => i.file === 'bad-yaml.yaml')?.id).toBeUndefined();
  });

  it('invalidates a file that copies another profile id, and the original', async () => {
    const r = await loadProfiles(await dirWith({ 'a.yaml': manifest('a'), 'copy.yaml': manifest('a') }));
    expect(r.profiles).toEqual([]);
    expect(r.invalid.find((i) => i.file === 'a.yaml')?.issues).toEqual([{ file: 'a.yaml', path: 'id', message: 'duplicate id "a": also claimed by copy.yaml' }]);
    expect(r.invalid.find((i) => i.file === 'copy.yaml')?.issues.map((i) => i.path)).toEqual(['id', 'id']);
  });

  it('refuses duplicate YAML keys', async () => {
    const r = await loadProfiles(await dirWith({ 'a.yaml': manifest('a', 'risk: L5\n') }));
    expect(r.invalid[0]?.issues[0]?.message).toMatch(/^YAML syntax error .*unique/i);
  });

  it('returns nothing for an empty directory', async () => {
    expect(await loadProfiles(await dirWith({}))).toEqual({ profiles: [], invalid: [], files: {} });
  });

  it('fails with profiles_dir_missing for a missing directory', async () => {
    const missing = path.join(os.tmpdir(), 'agentvm-no-such-profiles-dir');
    const err = await loadProfiles(missing).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'profiles_dir_missing')).toBe(true);
    expect((err as Error).message).toBe(`profiles directory ${missing} does not exist; set AGENTVM_PROFILES_DIR`);
    expect((err as { status: number }).status).toBe(400);
  });

  it('loads the shipped example', async () => {
    const r = await loadProfiles(path.resolve(import.meta.dirname, '../../profiles'));
    expect(r.invalid).toEqual([]);
    expect(r.profiles.find((p) => p.id === 'example')?.bindings).toEqual([{ platform: 'local', channels: ['*'] }]);
  });
});
