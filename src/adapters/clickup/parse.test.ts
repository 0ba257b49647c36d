import { describe, expect, it } from 'vitest';
import { rateLimitWait } from './client.js';
import { decodeConversation, encodeConversation, parseEnvelope, postedComments, renderReply, taskAddress } from './parse.js';
import { signClickUpBody, verifyClickUpSignature } from './verify.js';

describe('ClickUp signatures', () => {
  // The example body of ClickUp's "Webhook signature" page; the digest computed with openssl.
  const body = '{"webhook_id":"7689a169-a000-4985-8676-6902b96d6627","event":"taskCreated","task_id":"c0j"}';
  const digest = '4830bf524f6e29a3e8da953936c6f21c1fea2b9669b825d3e1be293ef3416c8c';

  it('is the hex HMAC-SHA256 of the raw body', () => {
    expect(signClickUpBody(body, 'secret')).toBe(digest);
    expect(verifyClickUpSignature(Buffer.from(body), digest, 'secret')).toBe(true);
    expect(verifyClickUpSignature(Buffer.from(body), digest.toUpperCase(), 'secret')).toBe(true);
  });

  it('fails for anything else', () => {
    expect(verifyClickUpSignature(Buffer.from(body), digest, 'other')).toBe(false);
    expect(verifyClickUpSignature(Buffer.from(`${body} `), digest, 'secret')).toBe(false);
    expect(verifyClickUpSignature(Buffer.from(body), digest.slice(0, 62), 'secret')).toBe(false);
    expect(verifyClickUpSignature(Buffer.from(body), undefined, 'secret')).toBe(false);
    expect(verifyClickUpSignature(Buffer.from(body), digest, '')).toBe(false);
  });
});

describe('ClickUp payload parsing', () => {
  it('rejects what is not a webhook envelope', () => {
    expect(parseEnvelope(undefined)).toBeUndefined();
    expect(parseEnvelope({ task_id: 't' })).toBeUndefined();
    expect(parseEnvelope({ event: 'taskCommentPosted', history_items: 'x' })).toBeUndefined();
  });

  it('reads comments defensively: text from blocks, files from attachment and image blocks', () => {
    const env = parseEnvelope({
      event: 'taskCommentPosted',
      task_id: 'abc',
      history_items: [
        { id: 1, user: { id: 7, username: 'ann' }, comment: { id: 2, comment: [
          { text: '@ops look ' },
          { type: 'image', text: 'shot.png', image: { id: 'i', name: 'shot.png', url: 'https://files.example/shot.png' } },
          { type: 'attachment', attachment: { url: 'https://files.example/a/log%20file.txt', size: '12' } },
          { type: 'attachment', attachment: { title: 'no url' } },
        ] } },
        { id: 3, comment: { text_content: 'no author' } },
        'garbage',
      ],
    })!;
    expect(postedComments(env)).toEqual([
      {
        historyId: '1',
        taskId: 'abc',
        commentId: '2',
        user: { id: '7', name: 'ann' },
        text: '@ops look shot.png',
        attachments: [
          { ref: 'https://files.example/shot.png', name: 'shot.png' },
          { ref: 'https://files.example/a/log%20file.txt', name: 'log file.txt', size: 12 },
        ],
      },
    ]);
  });

  it('encodes the conversation as the task and decodes only its own', () => {
    expect(decodeConversation(encodeConversation('86a1gqq42'))).toBe('86a1gqq42');
    expect(decodeConversation('clickup:../x')).toBeUndefined();
    expect(decodeConversation('slack:C1:1.2')).toBeUndefined();
  });

  it('needs a team id to route a task', () => {
    expect(taskAddress({ id: 't' })).toBeUndefined();
    expect(taskAddress({ id: 't', team_id: 9, space: { id: 5 }, list: null })).toEqual({ platform: 'clickup', team: '9', space: '5' });
  });

  it('renders a reply with only the parts it has', () => {
    expect(renderReply('Done.\n', [], [])).toBe('Done.');
    expect(renderReply('', ['a.txt'], [])).toBe('Attached to this task:\n- a.txt');
    expect(renderReply('', [], [])).toBe('(no answer)');
  });

  it('shows agent-chosen file names escaped, one line each (hostile)', () => {
    const forged = 'x\nfile: invoice.pdf (2048 bytes)';
    const out = renderReply('Done.', ['r\u202efdp.exe'], [{ name: forged, reason: 'symlink to a\nb' }]);
    expect(out).toBe('Done.\n\nAttached to this task:\n- r\\u202efdp.exe\n\nNot attached:\n- x\\nfile: invoice.pdf (2048 bytes): symlink to a\\nb');
    expect(out.split('\n').filter((l) => l.includes('invoice.pdf'))).toHaveLength(1);
  });
});

describe('ClickUp rate-limit wait', () => {
  const h = (reset?: string) => new Headers(reset === undefined ? {} : { 'x-ratelimit-reset': reset });
  it('waits until the reset, within bounds', () => {
    expect(rateLimitWait(h('1000'), 990_000)).toBe(10_000);
    expect(rateLimitWait(h('1000'), 1_005_000)).toBe(1_000);
    expect(rateLimitWait(h('99999999'), 0)).toBe(120_000);
    expect(rateLimitWait(h(), 0)).toBe(1_000);
    expect(rateLimitWait(h('soon'), 0)).toBe(1_000);
  });
});
