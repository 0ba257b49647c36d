/**
 * Acknowledgements first: the ingress gate holds cosmetic work while webhooks are in progress and
 * lets it go once they have been quiet for a moment, or after its longest wait; a lane with the
 * gate runs nothing before it opens.
 */
import { describe, expect, it } from 'vitest';
import { createIngressGate, createLane } from './delivery.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ingress gate', () => {
  it('opens at once when nothing is in progress', async () => {
    const gate = createIngressGate({ quietMs: 20 });
    let open = false;
    void gate.quiet().then(() => (open = true));
    await Promise.resolve();
    expect(open).toBe(true);
  });

  it('waits while a request is in progress, then for the quiet period after it', async () => {
    const gate = createIngressGate({ quietMs: 30, maxWaitMs: 5000 });
    const leave = gate.enter();
    let openedAt: number | undefined;
    const t0 = performance.now();
    void gate.quiet().then(() => (openedAt = performance.now()));
    await sleep(60);
    expect(openedAt).toBeUndefined();
    const left = performance.now();
    leave();
    leave(); // a second call changes nothing
    await sleep(200);
    expect(openedAt).toBeDefined();
    expect(openedAt! - left).toBeGreaterThanOrEqual(25);
    expect(openedAt! - t0).toBeGreaterThanOrEqual(60);
  });

  it('never holds longer than its longest wait under a steady stream of requests', async () => {
    const gate = createIngressGate({ quietMs: 20, maxWaitMs: 80 });
    setTimeout(gate.enter(), 15);
    const stream = setInterval(() => {
      const leave = gate.enter();
      setTimeout(leave, 15);
    }, 10);
    try {
      const t0 = performance.now();
      await gate.quiet();
      const waited = performance.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(70);
      expect(waited).toBeLessThan(2000);
    } finally {
      clearInterval(stream);
    }
  });

  it('a gated lane starts nothing while the gate is shut', async () => {
    const gate = createIngressGate({ quietMs: 10, maxWaitMs: 5000 });
    const lane = createLane(4, () => gate.quiet());
    const leave = gate.enter();
    const ran: number[] = [];
    const all = Promise.all([1, 2, 3].map((n) => lane(async () => void ran.push(n))));
    await sleep(40);
    expect(ran).toEqual([]);
    leave();
    await all;
    expect(ran.sort()).toEqual([1, 2, 3]);
  });
});
