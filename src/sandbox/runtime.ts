import { AgentVmError } from '../errors.js';
import type { RuntimeName, RuntimeSetting } from './types.js';

/** Names under which engines register Kata Containers. */
const KATA_NAMES = ['kata', 'kata-runtime', 'io.containerd.kata.v2', 'kata-qemu', 'kata-clh', 'kata-fc'];

export interface RuntimeChoice {
  runtime: RuntimeName;
  engineRuntime: string;
}

/**
 * Picks the OCI runtime for a sandbox from what the engine offers. Never falls back to runc:
 * runc is chosen only when asked for by name and explicitly allowed.
 */
export function selectRuntime(
  setting: RuntimeSetting,
  engineRuntimes: readonly string[],
  allowRunc: boolean,
): RuntimeChoice {
  const has = new Set(engineRuntimes);
  const kata = KATA_NAMES.find((n) => has.has(n));
  const available = `the engine offers: ${[...has].sort().join(', ') || 'none'}`;
  switch (setting) {
    case 'kata':
      if (kata) return { runtime: 'kata', engineRuntime: kata };
      throw new AgentVmError(
        'runtime_unavailable',
        `runtime kata was asked for but the Docker engine has no Kata runtime (${available}); install Kata Containers and register it in daemon.json, or set AGENTVM_RUNTIME=runsc`,
        { status: 400 },
      );
    case 'runsc':
      if (has.has('runsc')) return { runtime: 'runsc', engineRuntime: 'runsc' };
      throw new AgentVmError(
        'runtime_unavailable',
        `runtime runsc was asked for but the Docker engine has no runsc runtime (${available}); run scripts/host-setup.sh or add runsc to /etc/docker/daemon.json`,
        { status: 400 },
      );
    case 'runc':
      if (!allowRunc) {
        throw new AgentVmError(
          'runtime_refused',
          'runtime runc shares the host kernel with the agent and is refused; set AGENTVM_ALLOW_RUNC=1 to allow it for development',
          { status: 400 },
        );
      }
      if (has.has('runc')) return { runtime: 'runc', engineRuntime: 'runc' };
      throw new AgentVmError('runtime_unavailable', `runtime runc was asked for but ${available}`, { status: 400 });
    case 'auto':
      if (kata) return { runtime: 'kata', engineRuntime: kata };
      if (has.has('runsc')) return { runtime: 'runsc', engineRuntime: 'runsc' };
      throw new AgentVmError(
        'runtime_unavailable',
        `no isolating runtime found: AGENTVM_RUNTIME=auto needs kata or runsc (${available}); runc is never picked automatically`,
        { status: 400 },
      );
    default:
      throw new AgentVmError(
        'runtime_unknown',
        `unknown runtime ${JSON.stringify(setting)}: use kata, runsc, runc or auto`,
        { status: 400 },
      );
  }
}
