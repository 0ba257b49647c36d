/**
 * What a job may ask for, checked where it enters (the built-in tool's arguments are the agent's,
 * hostile; the CLI's are an operator's). Paths are resolved here once, so the runner only ever
 * sees workspace-relative paths made of plain segments.
 *
 *   - inputs: files or directories of the caller's workspace, relative to the caller's working
 *     directory (its conversation's directory) or absolute under /workspace. In the job they sit
 *     at the same relative path under the job's working directory (`/workspace/job`).
 *   - outputs: files or directories relative to the job's working directory.
 *   - command: argv, run in the job's working directory.
 */
import { AgentVmError } from '../errors.js';
import type { Profile } from '../governance/profile.js';
import { conversationPaths, WORKSPACE } from '../sandbox/layout.js';

export const MAX_ARGS = 256;
export const MAX_ARG_BYTES = 8192;
export const MAX_PATHS = 64;
/** Inside a job sandbox: where inputs land, the command runs, and outputs are read from (relative to /workspace). */
export const JOB_DIR = 'job';
/** In the caller's workspace: where results are copied back, `jobs/<job id>/`. */
export const RESULTS_DIR = 'jobs';

const SEGMENT = /^[A-Za-z0-9._-]{1,255}$/;

export interface InputPath {
  /** Relative to the caller's workspace (where it is read from). */
  source: string;
  /** Relative to the job's working directory (where it is put). */
  target: string;
}

export interface CheckedRequest {
  command: string[];
  inputs: InputPath[];
  outputs: string[];
  timeoutSeconds: number;
}

function bad(message: string): AgentVmError {
  return new AgentVmError('job_invalid', message, { status: 400 });
}

/** Plain segments of letters, digits, '.', '_' and '-'; no '.', '..' or empty segment. */
export function cleanRelative(path: string, what: string): string {
  const trimmed = path.replace(/\/+$/, '');
  const parts = trimmed.split('/');
  if (trimmed.length === 0 || trimmed.length > 1024 || parts.some((p) => !SEGMENT.test(p) || p === '.' || p === '..')) {
    throw bad(`${what} ${JSON.stringify(path.slice(0, 200))} must be a relative path of plain names (letters, digits, ".", "_", "-"), without "." or ".."`);
  }
  return trimmed;
}

function stringList(v: unknown, what: string, max: number): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad(`${what} must be a list of strings`);
  if (v.length > max) throw bad(`${what} has ${v.length} entries; at most ${max}`);
  return v as string[];
}

/** Where relative input paths start: the conversation's directory for an agent, the workspace root for an operator. */
function inputBase(conversation: string | undefined): string | undefined {
  return conversation === undefined ? undefined : conversationPaths(conversation).dir;
}

/** Where an input path (as the caller gave it) is read from and put. Throws `job_invalid`. */
export function resolveInput(p: string, conversation: string | undefined): InputPath {
  if (p === WORKSPACE || p.startsWith(`${WORKSPACE}/`)) {
    const rel = cleanRelative(p.slice(WORKSPACE.length + 1), 'input');
    return { source: rel, target: rel };
  }
  if (p.startsWith('/')) throw bad(`input ${JSON.stringify(p.slice(0, 200))} is outside ${WORKSPACE}`);
  const rel = cleanRelative(p, 'input');
  const base = inputBase(conversation);
  return { source: base ? `${base}/${rel}` : rel, target: rel };
}

/**
 * Checks raw arguments (`command`, `inputs`, `outputs`, `timeoutSeconds`) against the profile's
 * `jobs` settings. Throws `job_invalid` (status 400) naming the argument.
 */
export function checkRequest(profile: Profile, raw: Record<string, unknown>, conversation?: string): CheckedRequest {
  const known = new Set(['command', 'inputs', 'outputs', 'timeoutSeconds']);
  const unknown = Object.keys(raw).filter((k) => !known.has(k));
  if (unknown.length > 0) throw bad(`unknown argument(s) ${unknown.map((k) => JSON.stringify(k.slice(0, 50))).join(', ')}; expected command, inputs, outputs, timeoutSeconds`);
  const command = stringList(raw.command, 'command', MAX_ARGS);
  if (command.length === 0) throw bad('command must name a program, e.g. ["sh", "-c", "make test"]');
  for (const a of command) {
    if (Buffer.byteLength(a) > MAX_ARG_BYTES) throw bad(`a command argument is longer than ${MAX_ARG_BYTES} bytes`);
    if (a.includes('\u0000')) throw bad('a command argument contains a NUL character');
  }
  const inputs = stringList(raw.inputs, 'inputs', MAX_PATHS).map((p) => resolveInput(p, conversation));
  const outputs = stringList(raw.outputs, 'outputs', MAX_PATHS).map((p) => {
    const rel = p.startsWith(`${WORKSPACE}/${JOB_DIR}/`) ? p.slice(WORKSPACE.length + JOB_DIR.length + 2) : p;
    return cleanRelative(rel, 'output');
  });
  const j = profile.jobs;
  let timeoutSeconds = j.timeoutSeconds;
  if (raw.timeoutSeconds !== undefined) {
    const t = raw.timeoutSeconds;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) throw bad('timeoutSeconds must be a positive number');
    if (t > j.maxTimeoutSeconds) throw bad(`timeoutSeconds ${t} is more than this profile allows (jobs.maxTimeoutSeconds: ${j.maxTimeoutSeconds})`);
    timeoutSeconds = Math.ceil(t);
  }
  return { command, inputs, outputs, timeoutSeconds };
}
