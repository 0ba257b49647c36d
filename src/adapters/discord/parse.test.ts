import { describe, expect, it } from 'vitest';
import { commandText, conversationChannel, decodeReplyTo, encodeReplyTo, mentionToEvent, stripBotMention, type ReplyTarget } from './parse.js';

describe('replyTo', () => {
  it('round-trips both kinds and rejects anything else', () => {
    const targets: ReplyTarget[] = [
      { kind: 'interaction', applicationId: '1', token: 'aW50ZXJhY3Rpb24:abc.def-ghi', issuedAt: 123, channel: '2', user: '3' },
      { kind: 'channel', channel: '4', reference: '5', fallback: '6' },
    ];
    for (const t of targets) expect(decodeReplyTo(encodeReplyTo(t))).toEqual(t);
    expect(decodeReplyTo(undefined)).toBeNull();
    expect(decodeReplyTo('slack:C1:1.2')).toBeNull();
    expect(decodeReplyTo('dc1.!!!')).toBeNull();
    expect(decodeReplyTo(`dc1.${Buffer.from('{"kind":"channel","channel":"x"}').toString('base64url')}`)).toBeNull();
  });
});

describe('conversation ids', () => {
  it('parses guild and DM conversations only', () => {
    expect(conversationChannel('discord:123:456')).toEqual({ guild: '123', channel: '456' });
    expect(conversationChannel('discord:@me:456')).toEqual({ guild: '@me', channel: '456' });
    expect(conversationChannel('slack:T1:C1')).toBeNull();
    expect(conversationChannel('discord:1:2:3')).toBeNull();
  });
});

describe('command text', () => {
  it('prefers prompt, falls back to every string option, and flattens subcommands', () => {
    expect(commandText([{ name: 'x', type: 3, value: 'other' }, { name: 'prompt', type: 3, value: ' hi ' }])).toBe('hi');
    expect(commandText([{ name: 'a', type: 3, value: 'one' }, { name: 'n', type: 4, value: 3 }, { name: 'b', type: 3, value: 'two' }])).toBe('one\ntwo');
    expect(commandText([{ name: 'sub', type: 1, options: [{ name: 'prompt', type: 3, value: 'deep' }] }])).toBe('deep');
    expect(commandText(undefined)).toBe('');
  });
});

describe('mentions', () => {
  it('strips both mention forms of the bot only', () => {
    expect(stripBotMention('<@42> hi <@!42> there <@7>', '42')).toBe('hi there <@7>');
  });

  it('maps a mention that opened a thread: conversation = thread, replies fall back to the channel', () => {
    const e = mentionToEvent({
      id: '10',
      content: '<@42> do it',
      botUserId: '42',
      author: { id: '5', name: 'Ada' },
      guildId: '1',
      channelId: '2',
      routeChannelId: '2',
      conversationChannelId: '10',
      attachments: [],
      createdAt: new Date(0),
    });
    expect(e).toMatchObject({ id: 'discord:msg:10', address: { platform: 'discord', guild: '1', channel: '2' }, conversation: 'discord:1:10', text: 'do it' });
    // `at` bounds the thread context: the person's own message.
    expect(decodeReplyTo(e.replyTo)).toEqual({ kind: 'channel', channel: '10', reference: '10', fallback: '2', at: '10' });
    expect(e.attachments).toBeUndefined();
  });
});
