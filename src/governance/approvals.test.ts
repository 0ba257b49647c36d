import { describe, expect, it } from 'vitest';
import { askApprover, createApprovalBroker, memoryApprovalStore, type PendingApproval } from './approvals.js';

async function until(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

const req = { profile: 'p', sessionKey: 's', tool: 'gh.create_issue', argsHash: 'h' };

describe('approval broker', () => {
  it('resolves with the answer, lists pending requests and tells the channel', async () => {
    const seen: PendingApproval[] = [];
    const settled: Array<[string, string | null]> = [];
    const b = createApprovalBroker({
      store: memoryApprovalStore(),
      timeoutMs: 5000,
      onRequest: (r) => seen.push(r),
      onSettled: (_r, d, by) => settled.push([d, by]),
    });
    const p = b.request(req);
    await until(() => seen.length === 1);
    expect(await b.pending()).toHaveLength(1);
    expect(seen[0]).toMatchObject({ ...req, id: expect.any(String), approvers: [] });
    expect(await b.answer(seen[0]!.id, 'approved')).toEqual({ status: 'answered' });
    expect(await p).toEqual({ decision: 'approved', by: 'local:api' });
    expect(await b.answer(seen[0]!.id, 'denied')).toEqual({ status: 'unknown' });
    expect(await b.pending()).toEqual([]);
    expect(settled).toEqual([['approved', 'local:api']]);
  });

  it('lets only the named approvers answer through a channel', async () => {
    const seen: PendingApproval[] = [];
    const b = createApprovalBroker({
      store: memoryApprovalStore(),
      timeoutMs: 5000,
      describe: async () => ({ eventId: 'slack:Ev1', approvers: ['slack:UASKER'] }),
      onRequest: (r) => seen.push(r),
    });
    const p = b.request(req);
    await until(() => seen.length === 1);
    const id = seen[0]!.id;
    expect(seen[0]).toMatchObject({ eventId: 'slack:Ev1', approvers: ['slack:UASKER'] });
    expect(await b.answer(id, 'approved', { platform: 'slack', user: 'UOTHER' })).toEqual({ status: 'not_allowed', approvers: ['slack:UASKER'] });
    expect(await b.answer(id, 'approved', { platform: 'discord', user: 'UASKER' })).toMatchObject({ status: 'not_allowed' });
    expect(await b.answer(id, 'denied', { platform: 'slack', user: 'UASKER' })).toEqual({ status: 'answered' });
    expect((await p).decision).toBe('denied');
  });

  it('sees an answer given by another process through the store', async () => {
    const store = memoryApprovalStore();
    const seen: PendingApproval[] = [];
    const unit = createApprovalBroker({ store, timeoutMs: 5000, pollMs: 20, onRequest: (r) => seen.push(r) });
    const frontDoor = createApprovalBroker({ store, timeoutMs: 5000 });
    const p = unit.request(req);
    await until(() => seen.length === 1);
    expect((await frontDoor.pending()).map((r) => r.id)).toEqual([seen[0]!.id]);
    expect(await frontDoor.answer(seen[0]!.id, 'approved')).toEqual({ status: 'answered' });
    expect(await p).toEqual({ decision: 'approved', by: 'local:api' });
  });

  it('times out, refuses a late answer, and denies everything pending at close', async () => {
    const seen: PendingApproval[] = [];
    const b = createApprovalBroker({ store: memoryApprovalStore(), timeoutMs: 30, onRequest: (r) => seen.push(r) });
    expect(await b.request(req)).toEqual({ decision: 'timeout', by: null });
    expect(await b.answer(seen[0]!.id, 'approved')).toEqual({ status: 'unknown' });
    const b2 = createApprovalBroker({ store: memoryApprovalStore(), timeoutMs: 5000 });
    const p = b2.request(req);
    await new Promise((r) => setTimeout(r, 20));
    await b2.close();
    expect((await p).decision).toBe('denied');
    expect((await b2.request(req)).decision).toBe('denied');
  });

  it('fails closed when the store cannot be written', async () => {
    const store = { ...memoryApprovalStore(), insert: async () => { throw new Error('db down'); } };
    const b = createApprovalBroker({ store, timeoutMs: 5000 });
    expect((await askApprover(b.request, req, { timeoutMs: 1000 })).decision).toBe('denied');
  });

  it('treats anything but "approved" as a denial', async () => {
    expect(await askApprover(undefined, req, { timeoutMs: 100 })).toEqual({ decision: 'denied', reason: 'approval required but no approver is configured' });
    expect((await askApprover(async () => { throw new Error('x'); }, req, { timeoutMs: 100 })).decision).toBe('denied');
    expect((await askApprover(async () => 'yes' as never, req, { timeoutMs: 100 })).reason).toBe('the approver gave no valid answer');
    expect((await askApprover(() => new Promise(() => undefined), req, { timeoutMs: 20 })).decision).toBe('timeout');
    expect((await askApprover(async () => 'approved', req, { timeoutMs: 100 })).decision).toBe('approved');
  });
});
