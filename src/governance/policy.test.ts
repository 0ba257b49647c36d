import { describe, expect, it } from 'vitest';
import { compilePolicy, policyFromProfile, type ToolPolicy } from './policy.js';
import { validateProfile, type Profile } from './profile.js';

function profile(tools: Record<string, unknown>, extra: Record<string, unknown> = {}): Profile {
  const r = validateProfile(
    { version: 1, id: 'p', name: 'P', agent: { command: ['a'] }, risk: 'L1', bindings: [{ platform: 'local', channels: ['x'] }], tools, ...extra },
    'p.yaml',
  );
  if (!r.profile) throw new Error(JSON.stringify(r.issues));
  return r.profile;
}

const servers = [
  { name: 'gh', url: 'https://gh.example/mcp', headers: { Authorization: 'Bearer secret://t' } },
  { name: 'files', command: ['files-mcp'] },
];

describe('tool policy', () => {
  it('exposes allowed, not denied tools as <server>__<tool>, exact and case-sensitive', () => {
    const c = compilePolicy(policyFromProfile(profile({ servers, allow: ['gh.search', 'gh.Create', 'files.read'], deny: ['files.read'] }, { secrets: { t: 'secret://t' } })));
    expect([...c.tools.keys()].sort()).toEqual(['gh__Create', 'gh__search']);
    expect(c.lookup('gh__search')).toMatchObject({ ref: 'gh.search', server: 'gh', tool: 'search', needsApproval: false });
    expect(c.lookup('gh__create')).toBeUndefined();
    expect(c.lookup('gh.search')).toBeUndefined();
    expect(c.lookup('files__read')).toBeUndefined();
    expect(c.byUpstream('gh', 'search')?.exposed).toBe('gh__search');
    expect([...c.servers]).toEqual(['gh']);
  });

  it('hashes the canonical policy: order does not matter, content does', () => {
    const a = compilePolicy(policyFromProfile(profile({ servers, allow: ['gh.a', 'gh.b'] }, { secrets: { t: 'secret://t' } })));
    const b = compilePolicy(policyFromProfile(profile({ servers: [...servers].reverse(), allow: ['gh.b', 'gh.a', 'gh.a'] }, { secrets: { t: 'secret://t' } })));
    const c = compilePolicy(policyFromProfile(profile({ servers, allow: ['gh.a'] }, { secrets: { t: 'secret://t' } })));
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(b.hash).toBe(a.hash);
    expect(c.hash).not.toBe(a.hash);
  });

  it('adds approvals by tier: listed (L1), credentialed servers (L3), every call (L4)', () => {
    const tools = { servers, allow: ['gh.a', 'files.b', 'files.c'], approval: ['files.c'] };
    const need = (p: Profile) => Object.fromEntries([...compilePolicy(policyFromProfile(p)).tools.values()].map((t) => [t.ref, t.needsApproval]));
    const secrets = { t: 'secret://t' };
    expect(need(profile(tools, { secrets }))).toEqual({ 'gh.a': false, 'files.b': false, 'files.c': true });
    expect(need(profile(tools, { secrets, risk: 'L3' }))).toEqual({ 'gh.a': true, 'files.b': false, 'files.c': true });
    expect(need(profile(tools, { secrets, risk: 'L4', runtime: 'kata' }))).toEqual({ 'gh.a': true, 'files.b': true, 'files.c': true });
  });

  it('fails closed on a missing, malformed or unknown-version document', () => {
    const doc = policyFromProfile(profile({ servers: [servers[1]], allow: ['files.read'] }));
    expect(() => compilePolicy(null)).toThrow('no tool policy');
    expect(() => compilePolicy({ ...doc, version: 2 })).toThrow(expect.objectContaining({ code: 'policy_invalid' }));
    expect(() => compilePolicy({ ...doc, allow: 'files.read' })).toThrow(/tool policy is malformed: allow/);
    expect(() => compilePolicy({ ...doc, extra: true })).toThrow(/malformed/);
    expect(() => compilePolicy({ ...doc, allow: ['files.Read*'] })).toThrow(/must be <server>.<tool>/);
    const clash: ToolPolicy = { ...doc, servers: [{ name: 'a', credentialed: false }, { name: 'a_', credentialed: false }], allow: ['a._b', 'a_.b'] };
    expect(() => compilePolicy(clash)).toThrow('tools a._b and a_.b would both be exposed as a___b');
    expect(() => policyFromProfile({ id: 'x' } as unknown as Profile)).toThrow('profile x has no readable tool policy');
  });
});
