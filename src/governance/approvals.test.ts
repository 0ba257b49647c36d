import { describe, expect, it } from 'vitest';
import { askApprover, createApprovalBroker, type PendingApproval } from './approvals.js';

const req = { profile: 'p', sessionKey: 's', tool: 'gh.create_issue', argsHash: 'h' };

describe('approval broker', () => {
  it('resolves with the answer, lists pending requests and tells the channel', async () => {
    const seen: PendingApproval[] = [];
    const settled: string[] = [];
    const b = createApprovalBroker({ timeoutMs: 5000, onRequest: (r) => seen.push(r), onSettled: (_r, d) => settled.push(d) });
    const p = b.request(req);
    expect(b.pending()).toHaveLength(1);
    expect(seen[0]).toMatchObject({ ...req, id: expect.any(String) });
    expect(b.answer(seen[0]!.id, 'approved')).toBe(true);
    expect(await p).toBe('approved');
    expect(b.answer(seen[0]!.id, 'denied')).toBe(false);
    expect(b.pending()).toEqual([]);
    expect(settled).toEqual(['approved']);
  });

  it('times out, and denies everything pending at close', async () => {
    const b = createApprovalBroker({ timeoutMs: 30 });
    expect(await b.request(req)).toBe('timeout');
    const b2 = createApprovalBroker({ timeoutMs: 5000 });
    const p = b2.request(req);
    b2.close();
    expect(await p).toBe('denied');
    expect(await b2.request(req)).toBe('denied');
  });

  it('treats anything but "approved" as a denial', async () => {
    expect(await askApprover(undefined, req, 100)).toEqual({ decision: 'denied', reason: 'approval required but no approver is configured' });
    expect((await askApprover(async () => { throw new Error('x'); }, req, 100)).decision).toBe('denied');
    expect((await askApprover(async () => 'yes' as never, req, 100)).reason).toBe('the approver gave no valid answer');
    expect((await askApprover(() => new Promise(() => undefined), req, 20)).decision).toBe('timeout');
    expect((await askApprover(async () => 'approved', req, 100)).decision).toBe('approved');
  });
});
