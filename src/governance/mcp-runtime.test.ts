import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { linkSignals } from './mcp-runtime.js';

describe('linkSignals', () => {
  it('aborts with the first source that aborts, and leaves nothing on the sources once disposed', () => {
    const turn = new AbortController(); // lives the whole turn
    for (let i = 0; i < 2000; i++) {
      const request = new AbortController();
      const linked = linkSignals([request.signal, turn.signal]);
      if (i === 7) {
        request.abort(new Error('cancelled by the client'));
        expect(linked.signal.aborted).toBe(true);
        expect((linked.signal.reason as Error).message).toBe('cancelled by the client');
      }
      linked.dispose();
    }
    // Nothing per call stays hooked to the signal that lives the whole turn.
    expect(getEventListeners(turn.signal, 'abort')).toHaveLength(0);
    const last = linkSignals([new AbortController().signal, turn.signal]);
    turn.abort(new Error('the turn ended'));
    expect((last.signal.reason as Error).message).toBe('the turn ended');
    expect(linkSignals([turn.signal]).signal.aborted).toBe(true);
  });
});
