/**
 * Who may operate agent-vm over HTTP, and as whom it is recorded.
 *
 * - The operator API (`/v1/…` but `POST /v1/messages`) takes a bearer token: AGENTVM_ADMIN_TOKEN
 *   when it is set, and then only that one; without it, AGENTVM_API_TOKEN (compatibility with the
 *   API as it was before the admin token existed); with neither, every call is refused (403).
 * - The dashboard (`/ui`) exists only with AGENTVM_ADMIN_TOKEN. Logging in with the token makes a
 *   session: a random id in an HttpOnly, SameSite=Strict cookie scoped to `/ui`, and a CSRF token
 *   that every form carries; a POST without the session's CSRF token, or from another origin, is
 *   refused. Sessions live in this process's memory (a restart logs everyone out).
 *
 * Audit rows name the operator as `local:api` (bearer token) or `ui:<first 12 hex of the
 * session id's SHA-256>`: enough to tell sessions apart, never the cookie itself.
 *
 * Deliberately left out: user accounts and roles (one token, one role), and sessions shared
 * between front-door processes.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Who a change made through the bearer-token API is recorded as. */
export const OPERATOR_API = 'local:api';

export interface Operator {
  via: 'api' | 'ui';
  /** As the audit trail records it. */
  id: string;
}

export const API_OPERATOR: Operator = Object.freeze({ via: 'api', id: OPERATOR_API });

/** Constant-time comparison of a presented secret with the expected one (any lengths). */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined || given === '') return false;
  return timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(expected).digest());
}

/** The token the operator API accepts, per the rule above; undefined: the API is closed. */
export function operatorApiToken(tokens: { adminToken?: string | undefined; apiToken?: string | undefined }): string | undefined {
  return tokens.adminToken ?? tokens.apiToken;
}

export interface Session {
  id: string;
  csrf: string;
  operator: Operator;
  expiresAt: number;
}

export interface SessionStore {
  create(): Session;
  /** The live session with this id, or undefined (unknown, expired). */
  get(id: string | undefined): Session | undefined;
  destroy(id: string | undefined): void;
  readonly size: number;
}

export const SESSION_COOKIE = 'agentvm_ui';
export const SESSION_TTL_MS = 12 * 60 * 60_000;
const MAX_SESSIONS = 1000;

export function createSessionStore(o: { ttlMs?: number; now?: () => number } = {}): SessionStore {
  const ttl = o.ttlMs ?? SESSION_TTL_MS;
  const now = o.now ?? Date.now;
  const sessions = new Map<string, Session>();
  const sweep = () => {
    const t = now();
    for (const [id, s] of sessions) if (s.expiresAt <= t) sessions.delete(id);
  };
  return {
    create() {
      sweep();
      // The oldest session goes first when a flood of logins would grow the map without bound.
      while (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value as string);
      const id = randomBytes(32).toString('base64url');
      const s: Session = {
        id,
        csrf: randomBytes(32).toString('base64url'),
        operator: { via: 'ui', id: `ui:${createHash('sha256').update(id).digest('hex').slice(0, 12)}` },
        expiresAt: now() + ttl,
      };
      sessions.set(id, s);
      return s;
    },
    get(id) {
      if (!id) return undefined;
      const s = sessions.get(id);
      if (!s) return undefined;
      if (s.expiresAt <= now()) {
        sessions.delete(id);
        return undefined;
      }
      return s;
    },
    destroy(id) {
      if (id) sessions.delete(id);
    },
    get size() {
      return sessions.size;
    },
  };
}

/**
 * True when a state-changing request plainly comes from this site: its Origin (or, without one,
 * Referer) names the same host it was sent to. Browsers send Origin on every cross-site POST;
 * a request with neither header (curl, a test) is left to the CSRF token alone.
 */
export function sameOrigin(headers: { origin?: string | undefined; referer?: string | undefined; host?: string | undefined }): boolean {
  const from = headers.origin ?? headers.referer;
  if (from === undefined) return true;
  if (from === 'null' || !headers.host) return false;
  try {
    return new URL(from).host === headers.host;
  } catch {
    return false;
  }
}
