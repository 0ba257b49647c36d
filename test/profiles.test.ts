/**
 * `agent-vm profiles validate` and `profiles ls` as a user runs them (compiled: `npm test`
 * builds first). One line per valid profile, one line per issue, exit 2 when any file is bad.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/env.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin/agent-vm.js');
const tmp = tempDir('profiles-cli');

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { PATH: process.env.PATH, AGENTVM_DATA_DIR: tmp, ...env },
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const manifest = (id: string, body = 'bindings:\n  - platform: local\n    channels: ["' + id + '"]\n') =>
  `version: 1\nid: ${id}\nname: The ${id} agent\nagent:\n  command: ["node", "agent.mjs"]\nrisk: L2\n${body}`;

async function dirWith(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(tmp, name);
  await fs.mkdir(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) await fs.writeFile(path.join(dir, f), text);
  return dir;
}

beforeAll(() => fs.mkdir(tmp, { recursive: true }));
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

describe('agent-vm profiles', () => {
  it('validates the shipped profiles/ directory (default dir, and --dir)', () => {
    const viaDefault = cli(['profiles', 'validate']);
    expect(viaDefault.stderr).toBe('');
    expect(viaDefault.code).toBe(0);
    expect(viaDefault.stdout).toContain('ok  example.yaml  example\n');
    const viaDir = cli(['profiles', 'validate', '--dir', path.join(ROOT, 'profiles')]);
    expect(viaDir.code).toBe(0);
    expect(viaDir.stdout).toMatch(/^(ok {2}\S+\.ya?ml {2}[a-z0-9-]+\n)+$/);
  });

  it('prints one line per issue and exits 2 when any manifest is invalid', async () => {
    const dir = await dirWith('mixed', {
      'good.yaml': manifest('good'),
      'broken.yaml': 'version: 1\nid: [oops\n',
      'future.yaml': manifest('future').replace('version: 1', 'version: 3'),
      'misnamed.yaml': manifest('other'),
      'slack-a.yaml': manifest('slack-a', 'bindings:\n  - platform: slack\n    team: T9\n    channels: ["C1"]\n'),
      'slack-b.yaml': manifest('slack-b', 'bindings:\n  - platform: slack\n    team: T9\n    channels: ["C1"]\n'),
      'tools.yaml': manifest(
        'tools',
        'bindings:\n  - platform: local\n    channels: ["t"]\ntools:\n  servers:\n    - name: gh\n      url: https://mcp.example.com/\n      headers: { Authorization: "Bearer secret://nope" }\n  allow: ["gh.read"]\n  approval: ["gh.write"]\n',
      ),
    });
    const r = cli(['profiles', 'validate', '--dir', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`agent-vm: error: 6 of 7 profile manifests in ${dir} are invalid\n`);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('ok  good.yaml  good');
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^broken\.yaml: YAML syntax error at line \d+, column \d+: Flow sequence/),
        'future.yaml: version: unsupported manifest version 3; this agent-vm reads version 1',
        'misnamed.yaml: id: id "other" does not match the file name; rename the file to other.yaml or set id: misnamed',
        'slack-a.yaml: bindings[0].channels[0]: binding "slack team T9 channel C1" is also claimed by profile "slack-b" (slack-b.yaml); an event must match exactly one profile',
        'slack-b.yaml: bindings[0].channels[0]: binding "slack team T9 channel C1" is also claimed by profile "slack-a" (slack-a.yaml); an event must match exactly one profile',
        'tools.yaml: tools.servers[0].headers.Authorization: secret "nope" is not declared in secrets',
        'tools.yaml: tools.approval[0]: tool "gh.write" needs approval but is not in tools.allow',
      ]),
    );
    expect(lines).toHaveLength(8);
  });

  it('exits 2 naming the setting when the directory does not exist', () => {
    const missing = path.join(tmp, 'nope');
    const r = cli(['profiles', 'validate'], { AGENTVM_PROFILES_DIR: missing });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`agent-vm: error: profiles directory ${missing} does not exist; set AGENTVM_PROFILES_DIR\n`);
  });

  it('lists valid profiles with their bindings', async () => {
    const dir = await dirWith('ls', {
      'alpha.yaml': manifest('alpha', 'bindings:\n  - platform: local\n    channels: ["*"]\n  - platform: slack\n    team: T1\n'),
      'beta.yaml': manifest('beta', 'bindings:\n  - platform: discord\n    guild: "42"\n    channels: ["7"]\n    command: ask\n'),
      'bad.yaml': 'version: 9\n',
    });
    const r = cli(['profiles', 'ls', '--dir', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      ['PROFILE\tNAME\tRISK\tBINDINGS', 'alpha\tThe alpha agent\tL2\tlocal *; slack T1 (team-wide)', 'beta\tThe beta agent\tL2\tdiscord 42/7 /ask', ''].join('\n'),
    );
    expect(r.stderr).toMatch(/1 invalid manifest\(s\) not listed; run agent-vm profiles validate/);
  });

  it('warns about a secret it cannot resolve: the profile is served, that tool server will not start', async () => {
    const body =
      'bindings:\n  - platform: local\n    channels: ["t"]\ntools:\n  servers:\n    - name: gh\n      url: https://mcp.example.com/\n      headers: { Authorization: "Bearer secret://GH" }\n  allow: ["gh.read"]\nsecrets:\n  GH: secret://GH\n';
    const dir = await dirWith('secrets', { 'sec.yaml': manifest('sec', body) });
    const missing = cli(['profiles', 'validate', '--dir', dir]);
    expect(missing.code).toBe(0);
    expect(missing.stdout).toMatch(/^ok {2}sec\.yaml {2}sec\nwarning: sec\.yaml: secrets\.GH: secret "GH" cannot be resolved: .*tool servers using it will not start\n$/);
    const present = cli(['profiles', 'validate', '--dir', dir], { AGENTVM_SECRET_GH: 'ghp_1234567890abcdef' });
    expect(present.stdout).toBe('ok  sec.yaml  sec\n');
    expect(present.stdout + present.stderr).not.toContain('ghp_1234567890abcdef');
  });
});
