/**
 * Markdown (what agents write) → Slack mrkdwn, and splitting long answers at Slack's limits.
 *
 * `&`, `<` and `>` are entity-encoded everywhere, code included (Slack shows them as the original
 * characters, also inside code), so an agent's text can never become a control sequence such as
 * `<!channel>`: a prompt-injected agent must not be able to ping a whole channel. Beyond that,
 * code (fenced blocks and inline spans) is not reformatted; only a fence's language tag is
 * dropped, because Slack would show it as the first line of code.
 *
 * Deliberately left out: tables, nested lists and HTML; they pass through as text.
 */

/** Slack truncates `text` past 40,000 characters and recommends ≤ 4,000; stay under with margin. */
export const DEFAULT_MAX_MESSAGE_CHARS = 3900;

const FENCE = /^\s*```/;

/** Escapes the three characters Slack treats as control characters in message text. */
export function escapeText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function markdownToMrkdwn(md: string): string {
  const out: string[] = [];
  let inFence = false;
  for (const line of md.replace(/\r\n?/g, '\n').split('\n')) {
    if (FENCE.test(line)) {
      // Opening fence: drop the info string. Closing fence: keep as is.
      out.push(inFence ? line : line.replace(/^(\s*```).*$/, '$1'));
      inFence = !inFence;
      continue;
    }
    out.push(inFence ? escapeText(line) : convertLine(line));
  }
  return out.join('\n');
}

function convertLine(line: string): string {
  const held: string[] = [];
  const hold = (s: string): string => `\uE000${held.push(s) - 1}\uE001`;

  // Inline code first, so no formatting rule touches it.
  let t = line.replace(/(`+)([^`]|[^`].*?[^`])\1(?!`)/g, (m) => hold(escapeText(m)));

  // Block quote markers are Slack syntax too; keep them unescaped.
  let prefix = '';
  const quote = /^(\s*(?:>\s?)+)/.exec(t);
  if (quote) {
    prefix = quote[1]!;
    t = t.slice(prefix.length);
  }

  t = escapeText(t);

  const heading = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(t);
  if (heading) t = `**${heading[1]!.replace(/\*\*/g, '')}**`;

  t = t.replace(/^(\s*)[-*+]\s+(?=\S)/, '$1• ');

  // Images and links become <url|text>; hold them so emphasis rules don't touch the URL.
  t = t.replace(/!?\[([^\]]*)\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)/g, (_m, label: string, url: string) => {
    const u = url.replace(/\|/g, '%7C');
    return hold(label.trim() ? `<${u}|${label.replace(/\|/g, '¦')}>` : `<${u}>`);
  });

  t = t
    .replace(/\*\*(?=\S)(.+?)(?<=\S)\*\*/g, '\uE002$1\uE002')
    .replace(/__(?=\S)(.+?)(?<=\S)__/g, '\uE002$1\uE002')
    .replace(/(?<![*\w])\*(?=\S)([^*]+?)(?<=\S)\*(?![*\w])/g, '_$1_')
    .replace(/~~(?=\S)(.+?)(?<=\S)~~/g, '~$1~')
    .replace(/\uE002/g, '*');

  t = t.replace(/\uE000(\d+)\uE001/g, (_m, i: string) => held[Number(i)]!);
  return prefix + t;
}

interface Block {
  text: string;
  code: boolean;
}

/** Paragraphs (split at blank lines) and fenced code blocks, in order. */
function toBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  let cur: string[] = [];
  let inFence = false;
  const flush = (code: boolean) => {
    if (cur.length > 0) blocks.push({ text: cur.join('\n'), code });
    cur = [];
  };
  for (const line of text.split('\n')) {
    if (FENCE.test(line)) {
      if (!inFence) {
        flush(false);
        cur.push(line);
      } else {
        cur.push(line);
        flush(true);
      }
      inFence = !inFence;
    } else if (!inFence && line.trim() === '') {
      flush(false);
    } else {
      cur.push(line);
    }
  }
  flush(inFence); // an unclosed fence stays code
  return blocks;
}

/** Cuts one overlong line at whitespace where possible. */
function splitLine(line: string, max: number): string[] {
  const out: string[] = [];
  let rest = line;
  while (rest.length > max) {
    let cut = rest.lastIndexOf(' ', max);
    if (cut < max / 2) cut = max;
    out.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  if (rest) out.push(rest);
  return out;
}

/** Greedy packing of lines into pieces of at most `max` characters. */
function packLines(lines: string[], max: number): string[] {
  const out: string[] = [];
  let cur = '';
  for (const line of lines.flatMap((l) => (l.length > max ? splitLine(l, max) : [l]))) {
    if (cur && cur.length + 1 + line.length > max) {
      out.push(cur);
      cur = line;
    } else {
      cur = cur ? `${cur}\n${line}` : line;
    }
  }
  if (cur) out.push(cur);
  return out;
}

function blockPieces(b: Block, max: number): string[] {
  if (b.text.length <= max) return [b.text];
  if (!b.code) return packLines(b.text.split('\n'), max);
  // A code block that cannot fit: close and reopen the fence in every piece.
  const lines = b.text.split('\n');
  const open = lines[0]!;
  const body = FENCE.test(lines[lines.length - 1]!) && lines.length > 1 ? lines.slice(1, -1) : lines.slice(1);
  const room = max - open.length - '\n\n```'.length;
  return packLines(body, room).map((p) => `${open}\n${p}\n\`\`\``);
}

/**
 * Splits mrkdwn into messages of at most `max` characters, on paragraph boundaries, then line
 * boundaries, then spaces; a code block is only cut when it alone exceeds `max`.
 */
export function splitMessage(text: string, max: number = DEFAULT_MAX_MESSAGE_CHARS): string[] {
  const trimmed = text.trim();
  if (!trimmed) return [];
  if (trimmed.length <= max) return [trimmed];
  const chunks: string[] = [];
  let cur = '';
  for (const piece of toBlocks(trimmed).flatMap((b) => blockPieces(b, max))) {
    if (cur && cur.length + 2 + piece.length > max) {
      chunks.push(cur);
      cur = piece;
    } else {
      cur = cur ? `${cur}\n\n${piece}` : piece;
    }
  }
  if (cur) chunks.push(cur);
  return chunks;
}
