/**
 * Pause and unpause settle time. Measured on Docker 20.10 with runsc: the engine's `Paused` flag
 * can flip back for 1–2 ms after a pause or unpause, when containerd's event for the previous
 * transition arrives late (the daemon applies it after the synchronous update). An inspect in that
 * window reads the old state, so a pause right after an unpause could be skipped as "already
 * paused", or an ensure right after a pause could find the sandbox "running". Transitions of one
 * agent made by this driver are therefore spaced by SETTLE_MS; sandboxes are paused after idle
 * time, so this costs nothing outside of back-to-back transitions.
 */
export const SETTLE_MS = 50;

export function transitions(settleMs = SETTLE_MS) {
  const last = new Map<string, number>();
  return {
    /** Waits until the agent's last pause/unpause is at least `settleMs` old. */
    async settle(agentId: string): Promise<void> {
      const at = last.get(agentId);
      if (at === undefined) return;
      const wait = at + settleMs - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      last.delete(agentId);
    },
    /** Records a pause or unpause of the agent's sandbox, now. */
    mark(agentId: string): void {
      last.set(agentId, performance.now());
    },
  };
}
