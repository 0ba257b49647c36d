/**
 * Approvals kept in the database, on both backends: a request made by one broker (the unit) is
 * answered through another (the front door serving the channel); two answers, or an answer racing
 * the timeout, settle a request once; a request whose holder died is timed out by the next reader.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApprovalBroker, type ApprovalStore, type PendingApproval } from '../src/governance/approvals.js';
import type { Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';
import { until } from './helpers/wait.js';

const backends = storeBackends('approvals');

const req = { profile: 'p', sessionKey: 's', tool: 'gh.create_issue', argsHash: 'h' };

describe.each(backends)('approvals in the database ($kind)', (backend) => {
  let store: Store;
  let rows: ApprovalStore;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    rows = store.approvals;
  });
  afterAll(() => close?.());

  it('carries an answer from the front door to the unit, from the approver only, once', async () => {
    const seen: PendingApproval[] = [];
    const settled: Array<[string, string | null]> = [];
    const unit = createApprovalBroker({
      store: rows,
      timeoutMs: 10_000,
      pollMs: 20,
      describe: async () => ({ eventId: 'slack:Ev1', approvers: ['slack:UASKER'] }),
      onRequest: (r) => seen.push(r),
      onSettled: (_r, d, by) => settled.push([d, by]),
    });
    const frontDoor = createApprovalBroker({ store: rows, timeoutMs: 10_000 });
    const decided = unit.request(req);
    const { id } = await until('the request at the unit', () => seen[0], { timeoutMs: 5000, everyMs: 5 });
    expect((await frontDoor.pending()).find((p) => p.id === id)).toMatchObject({ ...req, eventId: 'slack:Ev1', approvers: ['slack:UASKER'] });
    expect(await frontDoor.answer(id, 'approved', { platform: 'slack', user: 'UMALLORY' })).toEqual({ status: 'not_allowed', approvers: ['slack:UASKER'] });
    const [a, b] = await Promise.all([
      frontDoor.answer(id, 'approved', { platform: 'slack', user: 'UASKER' }),
      frontDoor.answer(id, 'denied', { platform: 'slack', user: 'UASKER' }),
    ]);
    expect([a.status, b.status].sort()).toEqual(['answered', 'unknown']);
    const winner = a.status === 'answered' ? 'approved' : 'denied';
    expect(await decided).toEqual({ decision: winner, by: 'slack:UASKER' });
    expect(settled).toEqual([[winner, 'slack:UASKER']]);
    expect(await rows.get(id)).toMatchObject({ status: winner, answeredBy: 'slack:UASKER' });
  });

  it('times out, and an answer after the deadline changes nothing', async () => {
    const seen: PendingApproval[] = [];
    const unit = createApprovalBroker({ store: rows, timeoutMs: 300, pollMs: 50, onRequest: (r) => seen.push(r) });
    expect(await unit.request(req)).toEqual({ decision: 'timeout', by: null });
    expect(await unit.answer(seen[0]!.id, 'approved')).toEqual({ status: 'unknown' });
    expect(await rows.get(seen[0]!.id)).toMatchObject({ status: 'timeout', answeredBy: null });
  });

  it('times out a request whose unit died, so nobody can approve it later', async () => {
    const id = `dead-${Date.now()}`;
    await rows.insert({ id, ...req, eventId: null, approvers: [], requestedAt: new Date(Date.now() - 2000), expiresAt: new Date(Date.now() - 1000) });
    expect((await rows.pending()).map((r) => r.id)).not.toContain(id);
    expect(await rows.get(id)).toMatchObject({ status: 'timeout' });
    expect(await rows.answer(id, 'approved', 'local:api')).toBeUndefined();
  });
});
