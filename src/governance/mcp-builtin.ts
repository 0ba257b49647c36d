/**
 * The gateway's built-in tool server, `agentvm`: tools the gateway serves itself instead of an
 * upstream. Today one, `agentvm.run_job` (profile `jobs.enabled`): run a command in a fresh
 * one-shot sandbox with copies of workspace files, and get its results back under
 * `/workspace/jobs/<job id>/`.
 *
 * To the proxy it is one more upstream: listed, pinned, allowed, approved and audited exactly like
 * any other tool (policy.ts adds it to the profile's policy). What differs is the call: it needs
 * to know who asks (profile, conversation, turn), which a remote server never learns, so the proxy
 * calls `callAs` with the token's binding instead of `call`.
 *
 * Deliberately left out: any other built-in tool, and running jobs here (the `JobToolHost` given
 * by the gateway does that, src/jobs).
 */
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError } from '../errors.js';
import { definitionHash } from './mcp-pins.js';
import type { Upstream, UpstreamState, UpstreamTool } from './mcp-upstreams.js';
import { BUILTIN_SERVER } from './profile-jobs.js';
import type { Profile } from './profile.js';

/** Who called a built-in tool, as the proxy's token says. */
export interface BuiltinCaller {
  profile: string;
  /** The conversation (ACP session key) the token was minted for. */
  sessionKey: string;
  turnId: string | undefined;
}

/** Runs jobs for agents' tool calls (src/jobs implements it). */
export interface JobToolHost {
  /**
   * Runs one job for `caller` with the tool's arguments (unchecked: validated by the host) and
   * resolves with the tool result; a refused or failed job is an `isError` result, never a throw
   * for the agent's own mistakes. `signal` aborts when the call or its turn ends: the job is then
   * killed and torn down.
   */
  runForAgent(profile: Profile, caller: BuiltinCaller, args: Record<string, unknown>, signal: AbortSignal): Promise<CallToolResult>;
}

export const RUN_JOB_DEFINITION: Tool = Object.freeze({
  name: 'run_job',
  description:
    'Run a command in a fresh, isolated, one-shot sandbox (no network unless the profile allows it, no secrets, its own limits) ' +
    'and get its exit code, output and result files back. Use it for untrusted work: scripts from files you received, test suites, converters. ' +
    'Files listed in `inputs` are copied (read-only copies) from your workspace into the job at the same relative path; ' +
    'paths listed in `outputs` (relative to the job\'s /workspace) are copied back into /workspace/jobs/<job id>/.',
  inputSchema: {
    type: 'object',
    properties: {
      command: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'argv, e.g. ["sh", "-c", "python3 script.py > out/report.txt"]; runs in /workspace of the job' },
      inputs: { type: 'array', items: { type: 'string' }, description: 'files or directories of your workspace to copy in: relative to your working directory, or absolute under /workspace' },
      outputs: { type: 'array', items: { type: 'string' }, description: 'files or directories (relative to the job\'s /workspace) to copy back' },
      timeoutSeconds: { type: 'number', description: 'hard deadline; default and maximum set by the profile' },
    },
    required: ['command'],
    additionalProperties: false,
  },
}) as Tool;

export interface BuiltinUpstream extends Upstream {
  callAs(caller: BuiltinCaller, tool: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<CallToolResult>;
}

export function isBuiltinUpstream(u: Upstream | undefined): u is BuiltinUpstream {
  return u !== undefined && typeof (u as Partial<BuiltinUpstream>).callAs === 'function';
}

/** The `agentvm` upstream for one profile; without a host its tools stay hidden ("unavailable"). */
export function createBuiltinUpstream(profile: Profile, host: JobToolHost | undefined): BuiltinUpstream {
  const tools = new Map<string, UpstreamTool>([[RUN_JOB_DEFINITION.name, { def: RUN_JOB_DEFINITION, hash: definitionHash(RUN_JOB_DEFINITION) }]]);
  let state: UpstreamState = 'idle';
  let listedAt = 0;
  const reason = host ? undefined : 'jobs are not available in this gateway process (no job runner configured)';
  return {
    server: BUILTIN_SERVER,
    kind: 'http',
    get state() {
      return state;
    },
    reason,
    get tools() {
      return host && state === 'ready' ? tools : undefined;
    },
    get listedAt() {
      return listedAt;
    },
    async refresh() {
      if (!host) {
        state = 'failed';
        throw new AgentVmError('upstream_unavailable', `tool server ${BUILTIN_SERVER} is unavailable: ${reason}`, { status: 503 });
      }
      if (state !== 'closed') state = 'ready';
      listedAt = performance.now();
    },
    async call() {
      throw new AgentVmError('builtin_needs_caller', 'built-in tools are called with callAs (they need the caller)', { status: 500 });
    },
    async callAs(caller, tool, args, signal) {
      if (!host || state === 'closed') throw new AgentVmError('upstream_unavailable', `tool server ${BUILTIN_SERVER} is unavailable`, { status: 503 });
      if (tool !== RUN_JOB_DEFINITION.name) throw new AgentVmError('unknown_tool', `${BUILTIN_SERVER} has no tool ${tool}`, { status: 404 });
      return host.runForAgent(profile, caller, args, signal ?? new AbortController().signal);
    },
    async close() {
      state = 'closed';
    },
  };
}
