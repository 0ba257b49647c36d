/**
 * Strings from outside (an agent, a platform, a tool server) are hostile: they may hold NUL,
 * control characters, lone surrogates, or megabytes. Two ways to make them safe, one per sink:
 *
 *   - `storable`: fit for PostgreSQL `text` and `jsonb` (neither holds U+0000; jsonb refuses
 *     lone surrogate escapes) and bounded. Nothing else changes, so a stored text reads back
 *     as the agent wrote it, minus what the database cannot hold.
 *   - `printable`: fit for one line in front of a person (a CLI line, a chat note, a log field):
 *     every control character, line break and invisible format character is shown as an escape,
 *     so a name can never forge a line or hide part of itself.
 *
 * Deliberately left out: HTML/markdown escaping (each adapter's renderer does its own markup).
 */

/** U+2400 SYMBOL FOR NULL: what a NUL becomes in stored text. */
export const NUL_STAND_IN = '\u2400';

const ELLIPSIS = '…';

/** Cuts `s` to at most `max` UTF-16 units without splitting a surrogate pair; marks the cut. */
export function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  if (max <= 0) return '';
  let end = max - 1;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end -= 1;
  return `${s.slice(0, end)}${ELLIPSIS}`;
}

/** Replaces lone surrogates with U+FFFD (String.prototype.toWellFormed, Node 20+). */
export function wellFormed(s: string): string {
  return (s as string & { toWellFormed(): string }).toWellFormed();
}

/** A string the database can hold: no NUL, no lone surrogates, at most `max` characters. */
export function storable(s: string, max = 64 * 1024): string {
  // eslint-disable-next-line no-control-regex
  const noNul = s.includes('\u0000') ? s.replace(/\u0000/g, NUL_STAND_IN) : s;
  return truncate(wellFormed(noNul), max);
}

export interface StorableDeepLimits {
  /** Longest string (values and keys). Default 4096. */
  maxString?: number;
  /** Deepest nesting kept; deeper values become the string "[too deep]". Default 16. */
  maxDepth?: number;
  /** Most entries kept per object or array; the rest are dropped and counted. Default 256. */
  maxEntries?: number;
}

/**
 * A JSON value the database can hold in `jsonb`, bounded in every direction: strings (and keys)
 * made storable and cut, depth and breadth capped. Non-JSON values (functions, symbols, bigint)
 * become strings. Never throws, whatever the input (cycles included).
 */
export function storableDeep(value: unknown, limits: StorableDeepLimits = {}): unknown {
  const maxString = limits.maxString ?? 4096;
  const maxDepth = limits.maxDepth ?? 16;
  const maxEntries = limits.maxEntries ?? 256;
  const seen = new WeakSet<object>();
  const walk = (v: unknown, depth: number): unknown => {
    if (v === null || typeof v === 'boolean') return v;
    if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
    if (typeof v === 'string') return storable(v, maxString);
    if (typeof v === 'undefined') return undefined;
    if (typeof v !== 'object') return storable(String(v), maxString);
    if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
    if (seen.has(v)) return '[cycle]';
    if (depth >= maxDepth) return '[too deep]';
    seen.add(v);
    try {
      if (Array.isArray(v)) {
        const out = v.slice(0, maxEntries).map((x) => {
          const w = walk(x, depth + 1);
          return w === undefined ? null : w;
        });
        if (v.length > maxEntries) out.push(`[${v.length - maxEntries} more]`);
        return out;
      }
      const out: Record<string, unknown> = {};
      const entries = Object.entries(v as Record<string, unknown>);
      for (const [k, x] of entries.slice(0, maxEntries)) {
        const w = walk(x, depth + 1);
        if (w !== undefined) out[storable(k, Math.min(maxString, 256))] = w;
      }
      if (entries.length > maxEntries) out['…'] = `${entries.length - maxEntries} more keys`;
      return out;
    } finally {
      seen.delete(v);
    }
  };
  return walk(value, 0);
}

/**
 * One line a person can trust: C0/C1 controls, DEL, line/paragraph separators and invisible
 * format characters (bidi overrides, zero-width) are shown as escapes (`\n`, `\u0000`,
 * `\u202e`); lone surrogates become U+FFFD; cut at `max` characters.
 */
export function printable(s: string, max = 200): string {
  const escaped = wellFormed(s).replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g,
    (ch) => {
      switch (ch) {
        case '\n':
          return '\\n';
        case '\r':
          return '\\r';
        case '\t':
          return '\\t';
        default:
          return `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
      }
    },
  );
  return truncate(escaped, max);
}
