/**
 * One temporary directory per test run, removed when the run ends. Global setup points TMPDIR
 * at it before any worker starts, so every `os.tmpdir()` below (tempDir(), mkdtemp, the data
 * directories of the gateways the tests start, their PGlite databases) lands inside it and
 * nothing outlives the run: a full run used to leave ~8 GB in /tmp, and a machine that runs the
 * suite many times fills its disk.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MARK = 'AGENTVM_TEST_RUN_TMP';

/** Creates the run's directory unless another project's setup did; returns its teardown (or a no-op). */
export function useRunTmp(): () => void {
  if (process.env[MARK]) return () => {};
  const previous = process.env.TMPDIR;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'agentvm-run-'));
  process.env.TMPDIR = dir;
  process.env[MARK] = dir;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    delete process.env[MARK];
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  };
}
