/**
 * Where things are inside a sandbox and around it, defined once. The gateway, the drivers and the
 * tests all take these from here.
 *
 * A profile's agent serves many conversations at once, so each conversation gets its own working
 * directory under the workspace (the ACP session's `cwd`), with its own `outbox/` (files for the
 * person) and `inbox/` (files the person sent). A turn collects only its own conversation's outbox.
 *
 * Deliberately left out: separation between conversations inside the sandbox. They share one agent
 * process and one workspace; an agent that copies a file from one conversation's directory into
 * another's has chosen to. What the gateway guarantees is that it never mixes them up itself.
 */
import { createHash } from 'node:crypto';
import { AgentVmError } from '../errors.js';

/** The agent's persistent workspace volume. */
export const WORKSPACE = '/workspace';
/** The only identity inside a sandbox. */
export const SANDBOX_UID = 1000;
export const SANDBOX_GID = 1000;
export const SANDBOX_USER = `${SANDBOX_UID}:${SANDBOX_GID}`;

/** Per-conversation working directories, relative to the workspace. */
export const CONVERSATIONS_DIR = 'conversations';
export const OUTBOX = 'outbox';
export const INBOX = 'inbox';

/** Ports the gateway serves on each agent network's host address (the host firewall opens only these). */
export const EGRESS_PORT = 3128;
export const MCP_PORT = 3129;
export const MODEL_RELAY_PORT = 3130;

/** Prefix of every container, volume and network name. */
export const NAME_PREFIX = 'agentvm';
/** Seconds a stopping sandbox gets between SIGTERM and SIGKILL. */
export const STOP_TIMEOUT_SECONDS = 5;

/**
 * A conversation's directory, relative to the workspace: `conversations/<slug>-<hash>`. The hash
 * (of the whole conversation key) keeps distinct conversations apart whatever their keys hold;
 * the slug (letters, digits, '-' from the key, at most 40) only helps a person find it.
 */
export function conversationDir(conversation: string): string {
  const hash = createHash('sha256').update(conversation).digest('hex').slice(0, 16);
  const slug = conversation
    .replace(/[^A-Za-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return `${CONVERSATIONS_DIR}/${slug ? `${slug}-` : ''}${hash}`;
}

/** The same paths, absolute inside the sandbox and relative to the workspace. */
export interface ConversationPaths {
  /** Relative to the workspace, e.g. `conversations/slack-T1-C2-1700-0a1b…`. */
  dir: string;
  outbox: string;
  inbox: string;
  /** Absolute inside the sandbox: the ACP session's cwd. */
  cwd: string;
  outboxPath: string;
  inboxPath: string;
}

export function conversationPaths(conversation: string): ConversationPaths {
  const dir = conversationDir(conversation);
  return {
    dir,
    outbox: `${dir}/${OUTBOX}`,
    inbox: `${dir}/${INBOX}`,
    cwd: `${WORKSPACE}/${dir}`,
    outboxPath: `${WORKSPACE}/${dir}/${OUTBOX}`,
    inboxPath: `${WORKSPACE}/${dir}/${INBOX}`,
  };
}

const DIR_SEGMENT = /^[A-Za-z0-9._-]{1,255}$/;

/**
 * Checks a directory given relative to the workspace (`conversations/x/outbox`): plain segments
 * of letters, digits, '.', '_' and '-', no `.` or `..`, not absolute. Returns it unchanged.
 */
export function workspaceDir(dir: string): string {
  const parts = dir.split('/');
  if (dir.length === 0 || dir.length > 1024 || parts.some((p) => !DIR_SEGMENT.test(p) || p === '.' || p === '..')) {
    throw new AgentVmError('workspace_dir_invalid', `invalid workspace directory ${JSON.stringify(dir.slice(0, 200))}`, { status: 400 });
  }
  return dir;
}

/** Checks a name relative to a workspace directory (as the outbox reports them): no `..`, not absolute, no control characters. */
export function relativeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  const bad = name.length === 0 || name.length > 1024 || name.startsWith('/') || /[\u0000-\u001f\u007f]/.test(name) || name.split('/').some((p) => p === '' || p === '.' || p === '..');
  if (bad) throw new AgentVmError('file_name_invalid', `invalid file name ${JSON.stringify(name.slice(0, 200))}`, { status: 400 });
  return name;
}
