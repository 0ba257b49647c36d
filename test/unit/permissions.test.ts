/**
 * An agent's own permission requests follow the profile's `permissions` (issue 12 item 3):
 * allow, ask a person through the approval flow, or deny; default deny; the tier caps allow.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { validateProfile } from '../../src/governance/profile.js';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const open: FakeGateway[] = [];
afterEach(async () => {
  for (const g of open.splice(0)) await g.close().catch(() => undefined);
});
async function gateway(m: Record<string, unknown>) {
  const g = await startFakeGateway({ manifests: [m] });
  open.push(g);
  return g;
}

describe('permissions by tool kind', () => {
  it('denies by default, with a progress note saying why', async () => {
    const id = profileId('perm-deny');
    const g = await gateway(manifest(id));
    const r = await g.send({ profile: id, text: 'ask delete everything', conversation: 'd' });
    expect(replyText(r.outcome)).toBe('permission denied');
    expect(r.progress.join('\n')).toMatch(/permission denied: delete everything \(permissions do not allow "other" actions/);
  });

  it('allows a listed kind without a person', async () => {
    const id = profileId('perm-allow');
    const g = await gateway(manifest(id, { permissions: { allow: ['other'] } }));
    expect(replyText((await g.send({ profile: id, text: 'ask tidy up', conversation: 'a' })).outcome)).toBe('permission granted');
  });

  it('asks a person for an `ask` kind: approved → granted, denied → refused', async () => {
    const id = profileId('perm-ask');
    const g = await gateway(manifest(id, { permissions: { ask: ['other'] } }));
    for (const [decision, expected] of [['approved', 'permission granted'], ['denied', 'permission denied']] as const) {
      const ev = await g.post({ profile: id, text: 'ask deploy to production', conversation: `ask-${decision}` });
      const pending = await until('the approval request', async () => (await g.running.gateway.approvals.pending()).find((p) => p.profile === id));
      expect(pending.tool).toBe('permission.other');
      expect((await g.running.gateway.approvals.answer(pending.id, decision)).status).toBe('answered');
      expect(replyText(await g.outcome(ev.eventId))).toBe(expected);
    }
  });

  it('sandbox mode allows everything, and a tier caps what may be allowed', () => {
    const base = manifest('tiered', { permissions: 'sandbox' });
    expect(validateProfile(base, 'x.yaml').issues).toEqual([]);
    const l3 = validateProfile({ ...base, risk: 'L3', runtime: 'runsc' }, 'x.yaml').issues.map((i) => `${i.path}: ${i.message}`);
    expect(l3.join('\n')).toMatch(/^permissions: permissions: sandbox \(allow everything\) is allowed only up to L2/m);
    const l3edit = validateProfile({ ...base, risk: 'L3', runtime: 'runsc', permissions: { allow: ['read', 'edit'] } }, 'x.yaml').issues.map((i) => `${i.path}: ${i.message}`);
    expect(l3edit).toEqual(['permissions.allow[1]: risk L3 may not allow "edit" without a person; move it to ask (allowed without a person here: read, search, think)']);
  });
});
