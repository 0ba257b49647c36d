/**
 * Redaction of secret values from anything leaving the gateway towards a channel or an agent:
 * replies, progress, tool results, text files. Each value of 4 or more characters is replaced
 * by `[redacted:<name>]` when its name is known, else `***`; shorter values are ignored (they
 * would match everywhere and cannot be told apart from ordinary text).
 *
 * Also caught: the JSON-escaped, URL-encoded and base64 (standard and url-safe) forms of each
 * value, since that is how a secret usually travels inside a payload.
 *
 * Deliberately left out: fragments split across separately redacted chunks (redact a whole
 * reply, not its stream pieces), base64 at other alignments, and binary files (redacted only
 * when the raw bytes of a value occur in them, which would corrupt a binary; see `buffer`).
 */
import type { NamedSecret } from './secrets.js';

export const MIN_REDACT_LENGTH = 4;

export interface Redactor {
  /** The text with every secret value replaced. */
  (text: string): string;
  text(text: string): { text: string; count: number };
  /**
   * A file's bytes with every secret value replaced. Text (valid UTF-8) is redacted as text;
   * other bytes are scanned for the raw values, which are overwritten with `*` of the same length
   * so offsets in a binary stay put.
   */
  buffer(data: Buffer): { data: Buffer; count: number };
  /** True when the text contains any secret value. */
  test(text: string): boolean;
  /** How many distinct values this redactor hides. */
  readonly size: number;
  /** Length of the longest form it hides: text streamed in pieces holds back this much (less one). */
  readonly longest: number;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function variants(value: string): string[] {
  const b64 = Buffer.from(value, 'utf8').toString('base64');
  const forms = [
    value,
    JSON.stringify(value).slice(1, -1),
    encodeURIComponent(value),
    b64,
    b64.replace(/=+$/, ''),
    b64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''),
  ];
  return [...new Set(forms)].filter((f) => f.length >= MIN_REDACT_LENGTH);
}

/** `values`: plain strings (replaced by `***`) or `{ name, value }` (replaced by `[redacted:<name>]`). */
export function createRedactor(values: ReadonlyArray<string | NamedSecret>): Redactor {
  const byForm = new Map<string, string>();
  const raw = new Map<string, string>();
  for (const v of values) {
    const { value, name } = typeof v === 'string' ? { value: v, name: undefined } : v;
    if (typeof value !== 'string' || value.length < MIN_REDACT_LENGTH) continue;
    const label = name ? `[redacted:${name}]` : '***';
    // A named entry wins over an anonymous one for the same value.
    if (!raw.has(value) || name) raw.set(value, label);
    for (const f of variants(value)) if (!byForm.has(f) || name) byForm.set(f, label);
  }
  // Longest first, so a secret that contains another is replaced whole.
  const forms = [...byForm.keys()].sort((a, b) => b.length - a.length);
  const pattern = forms.length > 0 ? new RegExp(forms.map(escapeRegExp).join('|'), 'g') : undefined;

  const redactText = (text: string): { text: string; count: number } => {
    if (!pattern || text.length < MIN_REDACT_LENGTH) return { text, count: 0 };
    let count = 0;
    const out = text.replace(pattern, (m) => {
      count++;
      return byForm.get(m) ?? '***';
    });
    return { text: out, count };
  };

  const rawValues = [...raw.keys()].sort((a, b) => b.length - a.length).map((v) => Buffer.from(v, 'utf8'));

  const redactor = ((text: string) => redactText(text).text) as Redactor;
  redactor.text = redactText;
  redactor.test = (text) => {
    if (!pattern) return false;
    pattern.lastIndex = 0;
    const hit = pattern.test(text);
    pattern.lastIndex = 0;
    return hit;
  };
  redactor.buffer = (data) => {
    if (!pattern) return { data, count: 0 };
    const asText = data.toString('utf8');
    if (Buffer.from(asText, 'utf8').equals(data)) {
      const r = redactText(asText);
      return r.count === 0 ? { data, count: 0 } : { data: Buffer.from(r.text, 'utf8'), count: r.count };
    }
    let count = 0;
    let copy: Buffer | undefined;
    for (const v of rawValues) {
      let at = (copy ?? data).indexOf(v);
      while (at >= 0) {
        copy ??= Buffer.from(data);
        copy.fill(0x2a, at, at + v.length);
        count++;
        at = copy.indexOf(v, at + v.length);
      }
    }
    return { data: copy ?? data, count };
  };
  Object.defineProperty(redactor, 'size', { value: raw.size });
  Object.defineProperty(redactor, 'longest', { value: forms[0]?.length ?? 0 });
  return redactor;
}
