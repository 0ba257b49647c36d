/**
 * The model relay seam: the only way an agent's model traffic leaves its sandbox, and the only
 * place a provider key is used. One relay per agent network (like the MCP endpoint), plain HTTP on
 * the host's address on that network; it speaks the providers' own HTTP APIs, so the agents'
 * unmodified clients (Claude Code, Codex, Gemini CLI, the official SDKs) talk to it as they would
 * to the provider, with a base URL and an API key from their usual environment variables.
 *
 * Why a per-sandbox token honoured only during turns (and not a fresh token per turn): the
 * sandbox's environment is fixed when its container is created (the spec hash covers it) and the
 * agents read their key once, at process start; a token that changed every turn would either
 * recreate the sandbox every turn or never reach the agent. So `issueToken` gives one token per
 * (profile, provider), stable for the relay's life (or the caller's own, persisted one), and the
 * relay *honours* it only while at least one turn of that profile is open (`beginTurn` ..
 * `endTurn`). The same bytes replayed after the turn, from anywhere, are refused (401), and
 * `endTurn` / `revoke` cut requests already in flight at once. A leaked token is therefore worth
 * only what the open turn of that same profile could do anyway, and nothing between turns.
 *
 * Deliberately left out: per-turn attribution when one profile runs several turns at once (one
 * agent process, one token: every usage event names all of that profile's open turns), any
 * rewriting of prompts or model output, caching, retries (the agent's own client retries, with
 * the provider's retry headers passed through), and TLS towards the sandbox (the agent's network
 * is a private bridge whose only peer is the host).
 */
import type { Logger } from '../../log.js';
import type { SecretResolver } from '../secrets.js';

export type ModelProvider = 'anthropic' | 'openai' | 'gemini';
export const MODEL_PROVIDERS: readonly ModelProvider[] = Object.freeze(['anthropic', 'openai', 'gemini']);

/** One `models` entry of a manifest, as the relay enforces it. */
export interface ModelBinding {
  profile: string;
  provider: ModelProvider;
  /** `secret://NAME`: resolved through the gateway's SecretResolver at each call (rotation is picked up). */
  key: string;
  /** Exact model ids the agent may use (case-sensitive). Empty: every model is refused. */
  allow: readonly string[];
  /** Tokens (input + output, cache reads/writes included) per profile per UTC day; unset: no cap. */
  dailyTokens?: number;
  /**
   * The token to honour, when the caller persists one (so a gateway restart does not change the
   * sandbox's environment and recreate it). At least 32 characters of [A-Za-z0-9_-]. Default: a
   * random one, kept for the relay's life.
   */
  token?: string;
}

export interface IssuedToken {
  token: string;
  /**
   * The exact environment the sandbox needs for this provider: the relay's base URL for it and
   * the token in the provider's usual variable. Paths (fixed):
   *   anthropic: ANTHROPIC_BASE_URL=<url>/anthropic, ANTHROPIC_API_KEY=<token>
   *   openai:    OPENAI_BASE_URL=<url>/openai/v1,   OPENAI_API_KEY=<token>
   *   gemini:    GOOGLE_GEMINI_BASE_URL=<url>/gemini, GEMINI_API_KEY=<token>
   */
  env: Record<string, string>;
}

/** Input and output tokens of one call, as the provider reported them. */
export interface ModelUsage {
  inputTokens: number;
  outputTokens: number;
  /** Anthropic's cache_read_input_tokens / OpenAI's cached_tokens / Gemini's cachedContentTokenCount (already inside inputTokens for OpenAI and Gemini). */
  cacheReadTokens: number;
  /** Anthropic's cache_creation_input_tokens (not inside inputTokens). */
  cacheWriteTokens: number;
  /** What the daily budget counts for this call. */
  totalTokens: number;
}

interface EventBase {
  profile: string;
  provider: ModelProvider;
  /** The profile's turns open when the request arrived (several when the profile runs turns at once). */
  turnIds: string[];
  /** The model asked for, made printable (at most 200 characters); undefined when none was named. */
  model?: string;
  /** The route, e.g. `POST /v1/messages`. */
  route: string;
}

/**
 * What the relay tells the gateway. `note`, where present, is one sentence fit for the thread
 * (it names models, limits and statuses; never a prompt, output, token or key).
 */
export type ModelRelayEvent =
  | (EventBase & { type: 'usage'; usage: ModelUsage; streamed: boolean })
  | (EventBase & { type: 'usage_missing'; streamed: boolean; status: number; note: string })
  | (EventBase & { type: 'model_denied'; allowed: string[]; note: string })
  | (EventBase & { type: 'budget_exhausted'; used: number; limit: number; day: string; note: string })
  | (EventBase & { type: 'upstream_error'; status: number; retryAfter?: string; note: string })
  | (EventBase & { type: 'key_unresolved'; secret: string; note: string })
  | (EventBase & { type: 'call'; status: number; durationMs: number; firstByteMs?: number; bytesIn: number; bytesOut: number; completed: boolean })
  | {
      type: 'unauthorized';
      provider?: ModelProvider;
      /** Known only when the token was once issued for this relay (revoked, or used between turns). */
      profile?: string;
      reason: 'missing' | 'unknown' | 'revoked' | 'no_turn' | 'wrong_provider' | 'conflicting';
      route: string;
    }
  | { type: 'bad_request'; provider?: ModelProvider; profile?: string; status: number; reason: string; route: string };

/**
 * Daily token counts, per profile per UTC day. The lead persists it (src/store); the relay only
 * reads before a call and adds after one. Left out: atomic check-and-spend. Concurrent calls and
 * one large call may overshoot the cap; the next call after it is refused.
 */
export interface ModelBudget {
  /** Tokens counted so far for `profile` on `day` (`YYYY-MM-DD`, UTC). */
  used(profile: string, day: string): Promise<number> | number;
  /** Adds `tokens` to that count. */
  add(profile: string, day: string, tokens: number, detail: { provider: ModelProvider; usage: ModelUsage }): Promise<void> | void;
}

export interface ModelRelayOptions {
  /** Where to listen: the agent network's host address and MODEL_RELAY_PORT (tests: 127.0.0.1:0). */
  listen: { host: string; port: number };
  /** Provider base URLs (Config.modelRelay): https in production, a local fake in tests. */
  upstreams: Record<ModelProvider, string>;
  secrets: SecretResolver;
  logger: Logger;
  /** Called for every event; failures are logged, never turn a refusal into an allow. */
  onEvent?: (event: ModelRelayEvent) => void | Promise<void>;
  /** Default: an in-memory count (lost on restart). */
  budget?: ModelBudget;
  /**
   * Largest request body; larger ones are refused with 413 as soon as the count passes it (or at
   * once for a declared Content-Length); what follows is dropped, at most 1 MiB or 2 s, then the
   * connection is cut. Default 32 MiB.
   */
  maxRequestBytes?: number;
  /** Upstream silence (no byte) that aborts a call. Default 10 minutes (long non-streaming answers). */
  upstreamIdleTimeoutMs?: number;
  /** Clock for the budget's UTC day. */
  now?: () => number;
}

export interface ModelRelay {
  /** `http://host:port` as the sandbox reaches it. */
  readonly url: string;
  /**
   * Registers (or updates) the binding of one provider for one profile and returns the token and
   * the sandbox environment. Idempotent: the same (profile, provider) keeps its token, so the
   * environment, and the sandbox's spec hash, stay the same. The token is not honoured until
   * `beginTurn` opens a turn of that profile.
   */
  issueToken(binding: ModelBinding): IssuedToken;
  /** Opens a turn: every token of `profile` is honoured until its last open turn ends. */
  beginTurn(turn: { profile: string; turnId: string }): void;
  /**
   * Ends a turn (idempotent). When it was the profile's last open turn, its tokens are refused
   * from now on and its calls in flight are cut at once.
   */
  endTurn(turnId: string): void;
  /** Forgets a token for good (the profile was removed or its binding changed); cuts its calls in flight. */
  revoke(token: string): void;
  /** Cuts everything and stops listening. Idempotent. */
  close(): Promise<void>;
}
