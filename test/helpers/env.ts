import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';

/** The configuration tests run under: the real environment, with test-only overrides. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({ ...process.env, AGENTVM_RUNTIME: 'runsc', AGENTVM_LOG_LEVEL: 'silent', ...overrides });
}

export const TEST_IMAGE = testConfig().image;

/** A unique, valid agent id, so parallel test files never share a sandbox. */
export function agentId(label: string): string {
  return `t-${label}-${randomBytes(4).toString('hex')}`;
}

export function tempDir(label: string): string {
  return path.join(os.tmpdir(), `agentvm-${label}-${randomBytes(4).toString('hex')}`);
}
