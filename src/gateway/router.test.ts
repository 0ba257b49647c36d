import { describe, expect, it } from 'vitest';
import { validateProfile, type Profile } from '../governance/profile.js';
import { createRouter, mentions, stripMention } from './router.js';

function profile(id: string, bindings: unknown[]): Profile {
  const r = validateProfile({ version: 1, id, name: id, agent: { command: ['x'] }, risk: 'L1', bindings }, `${id}.yaml`);
  if (!r.profile) throw new Error(JSON.stringify(r.issues));
  return r.profile;
}

const router = createRouter({
  profiles: [
    profile('wide', [{ platform: 'slack', team: 'T1' }]),
    profile('narrow', [{ platform: 'slack', team: 'T1', channels: ['C9'] }]),
    profile('cu-space', [{ platform: 'clickup', team: '9', space: '7', trigger: '@help' }]),
    profile('cu-list', [{ platform: 'clickup', team: '9', space: '7', list: '3', trigger: '@help' }]),
    profile('cu-ops', [{ platform: 'clickup', team: '9', trigger: '@ops' }]),
    profile('loc', [{ platform: 'local', channels: ['cli'] }]),
  ],
  invalid: [{ file: 'bad.yaml', id: 'bad', issues: [] }],
});
const route = (address: Parameters<typeof router.route>[0]['address'], text = 'hi') => router.route({ address, text });
const id = (r: ReturnType<typeof router.route>) => (r.ok ? r.profile.id : r.reason);

describe('router', () => {
  it('picks the most specific binding and never a default', () => {
    expect(id(route({ platform: 'slack', team: 'T1', channel: 'C9' }))).toBe('narrow');
    expect(id(route({ platform: 'slack', team: 'T1', channel: 'C1' }))).toBe('wide');
    expect(id(route({ platform: 'slack', team: 'T2', channel: 'C9' }))).toBe('unbound');
    expect(id(route({ platform: 'discord', guild: '1', channel: '2' }))).toBe('unbound');
  });

  it('routes ClickUp by scope and trigger; two triggers in one comment are ambiguous', () => {
    expect(id(route({ platform: 'clickup', team: '9', space: '7', list: '3' }, '@help please'))).toBe('cu-list');
    expect(id(route({ platform: 'clickup', team: '9', space: '7', list: '4' }, 'hey @HELP: do it'))).toBe('cu-space');
    expect(id(route({ platform: 'clickup', team: '9', space: '7', list: '3' }, 'no mention here'))).toBe('unbound');
    expect(id(route({ platform: 'clickup', team: '9', space: '8' }, 'mail me@help.com'))).toBe('unbound');
    const both = route({ platform: 'clickup', team: '9' }, '@ops and @ops2');
    expect(id(both)).toBe('cu-ops');
    const amb = createRouter({
      profiles: [profile('a', [{ platform: 'clickup', team: '9', trigger: '@a' }]), profile('b', [{ platform: 'clickup', team: '9', trigger: '@b' }])],
      invalid: [],
    }).route({ address: { platform: 'clickup', team: '9' }, text: '@a @b' });
    expect(amb).toMatchObject({ ok: false, reason: 'ambiguous' });
  });

  it('routes the local channel by profile name and bound channel, and names invalid manifests', () => {
    expect(id(route({ platform: 'local', profile: 'loc', channel: 'cli' }))).toBe('loc');
    expect(route({ platform: 'local', profile: 'loc', channel: 'api' })).toMatchObject({ ok: false, reason: 'unbound' });
    expect(route({ platform: 'local', profile: 'bad', channel: 'cli' })).toMatchObject({ ok: false, reason: 'profile_invalid' });
    expect(route({ platform: 'local', profile: 'ghost', channel: 'cli' })).toMatchObject({ ok: false, reason: 'unbound' });
  });

  it('matches and strips mentions as whole words', () => {
    expect(mentions('@help', '@help')).toBe(true);
    expect(mentions('@helper', '@help')).toBe(false);
    expect(mentions('x@help', '@help')).toBe(false);
    expect(stripMention('@Help: write a.md done', '@help')).toBe('write a.md done');
    expect(stripMention('please @help write it', '@help')).toBe('please write it');
  });
});
