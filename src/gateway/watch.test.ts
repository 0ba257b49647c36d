import { describe, expect, it } from 'vitest';
import type { GatewayRepo } from '../store/gateway.js';
import { createTurnSignals, createTurnWatcher } from './watch.js';

/** A repo holding one event, counting the watcher's reads. */
function oneEvent(status: string) {
  const reads: string[] = [];
  const row = { id: 'e1', status, reply: 'done', error: null };
  const repo = {
    getEvent: async () => (reads.push('getEvent'), row),
    eventTranscript: async () => (reads.push('eventTranscript'), []),
    files: async () => [],
    heldBack: async () => [],
  } as unknown as GatewayRepo;
  return { reads, row, repo };
}

async function collect(it: AsyncIterable<{ kind: string }>) {
  const out: string[] = [];
  for await (const o of it) out.push(o.kind);
  return out;
}

describe('turn watcher', () => {
  it('looks at once by default', async () => {
    const { reads, repo } = oneEvent('delivered');
    expect(await collect(createTurnWatcher({ repo, signals: createTurnSignals(), pollMs: 60_000 }).watch('e1'))).toEqual(['reply']);
    expect(reads).toEqual(['getEvent', 'eventTranscript']);
  });

  it('just accepted: reads nothing until the turn signals, then gives its outcome', async () => {
    const { reads, row, repo } = oneEvent('queued');
    const signals = createTurnSignals();
    const done = collect(createTurnWatcher({ repo, signals, pollMs: 60_000 }).watch('e1', undefined, { justAccepted: true }));
    await new Promise((r) => setTimeout(r, 50));
    expect(reads).toEqual([]);
    row.status = 'replied';
    signals.ping('e1');
    expect(await done).toEqual(['reply']);
    expect(reads).toEqual(['getEvent', 'eventTranscript']);
  });

  it('just accepted, in another process (no signal): the poll still finds the outcome', async () => {
    const { reads, repo } = oneEvent('failed');
    expect(await collect(createTurnWatcher({ repo, signals: createTurnSignals(), pollMs: 30 }).watch('e1', undefined, { justAccepted: true }))).toEqual(['notice']);
    expect(reads).toEqual(['getEvent', 'eventTranscript']);
  });
});
