import { describe, expect, it } from 'vitest';
import { isAgentVmError } from '../errors.js';
import { selectRuntime } from './runtime.js';
import type { RuntimeSetting } from './types.js';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return isAgentVmError(err) ? err.code : String(err);
  }
  return 'no error';
};

describe('runtime selection', () => {
  it('auto prefers kata, then runsc, and never picks runc', () => {
    expect(selectRuntime('auto', ['runc', 'runsc', 'kata-runtime'], true)).toEqual({ runtime: 'kata', engineRuntime: 'kata-runtime' });
    expect(selectRuntime('auto', ['runc', 'runsc'], true)).toEqual({ runtime: 'runsc', engineRuntime: 'runsc' });
    expect(code(() => selectRuntime('auto', ['runc'], true))).toBe('runtime_unavailable');
  });

  it('refuses runc without the opt-in, even when the engine has it', () => {
    expect(code(() => selectRuntime('runc', ['runc', 'runsc'], false))).toBe('runtime_refused');
    expect(selectRuntime('runc', ['runc'], true)).toEqual({ runtime: 'runc', engineRuntime: 'runc' });
  });

  it('is a clear error to ask for a runtime the engine lacks, or an unknown one', () => {
    expect(code(() => selectRuntime('kata', ['runc', 'runsc'], false))).toBe('runtime_unavailable');
    expect(code(() => selectRuntime('firecracker' as RuntimeSetting, ['runsc'], false))).toBe('runtime_unknown');
  });
});
