/**
 * The router: an inbound event's address matches exactly one served profile through the
 * bindings in the manifests, or the event is rejected with a message the user can act on.
 * There is never a default agent: no match is a rejection, and so is a tie.
 *
 * When several bindings match, the most specific one wins (a channel binding over a team-wide
 * one, a ClickUp list over its space); manifests are checked for identical claims at load time.
 */
import type { Address, InboundEvent } from '../adapters/types.js';
import type { Binding, Profile } from '../governance/profile.js';
import type { InvalidProfile } from '../governance/profiles.js';

export type RouteResult =
  | { ok: true; profile: Profile; binding: Binding }
  | { ok: false; reason: 'unbound' | 'ambiguous' | 'profile_invalid'; message: string; detail: string };

export interface Router {
  route(event: Pick<InboundEvent, 'address' | 'text'>): RouteResult;
  /** Profiles served (valid manifests), by id. */
  readonly profiles: ReadonlyMap<string, Profile>;
}

export const UNBOUND_MESSAGE = 'No agent is bound here. Ask an admin to bind an agent profile to this channel.';

/** How specific a matching binding is for this address; undefined when it does not match. */
function matchScore(b: Binding, a: Address, text: string): number | undefined {
  switch (a.platform) {
    case 'local':
      if (b.platform !== 'local') return undefined;
      if (b.channels.includes(a.channel)) return 2;
      return b.channels.includes('*') ? 1 : undefined;
    case 'slack':
      if (b.platform !== 'slack' || b.team !== a.team) return undefined;
      if (b.channels === undefined) return 1;
      return b.channels.includes(a.channel) ? 2 : undefined;
    case 'discord':
      if (b.platform !== 'discord' || b.guild !== a.guild) return undefined;
      // A binding that names a slash command only takes that command.
      if (b.command !== undefined && a.command !== undefined && b.command !== a.command) return undefined;
      if (b.channels === undefined) return 1;
      return b.channels.includes(a.channel) ? 2 : undefined;
    case 'clickup': {
      if (b.platform !== 'clickup' || b.team !== a.team) return undefined;
      const scopes = [
        [b.space, a.space],
        [b.folder, a.folder],
        [b.list, a.list],
      ] as const;
      let score = 1;
      for (const [want, have] of scopes) {
        if (want === undefined) continue;
        if (want !== have) return undefined;
        score++;
      }
      return mentions(text, b.trigger) ? score : undefined;
    }
  }
}

/** Matches `trigger` as a whole word, case-insensitively; group 1 is the character before it. */
export function mentionPattern(trigger: string): RegExp {
  const escaped = trigger.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\w@])${escaped}(?![\\w-])`, 'i');
}

/** True when `text` mentions `trigger` as a whole word, case-insensitively. */
export function mentions(text: string, trigger: string): boolean {
  return mentionPattern(trigger).test(text);
}

/** The text with the first mention of `trigger` (and a following "," or ":") removed. */
export function stripMention(text: string, trigger: string): string {
  const p = mentionPattern(trigger);
  return text.replace(new RegExp(`${p.source}[,:]?`, p.flags), '$1').replace(/[ \t]{2,}/g, ' ').trim();
}

function where(a: Address): string {
  switch (a.platform) {
    case 'local':
      return `local channel "${a.channel}" of profile "${a.profile}"`;
    case 'slack':
      return `Slack team ${a.team} channel ${a.channel}`;
    case 'discord':
      return `Discord guild ${a.guild} channel ${a.channel}${a.command ? ` command /${a.command}` : ''}`;
    case 'clickup':
      return `ClickUp team ${a.team}${a.space ? ` space ${a.space}` : ''}${a.folder ? ` folder ${a.folder}` : ''}${a.list ? ` list ${a.list}` : ''}`;
  }
}

export function createRouter(loaded: { profiles: readonly Profile[]; invalid: readonly InvalidProfile[] }): Router {
  const profiles = new Map(loaded.profiles.map((p) => [p.id, p]));
  const invalidIds = new Set(loaded.invalid.flatMap((i) => (i.id ? [i.id] : [])));

  return {
    profiles,
    route(event) {
      const a = event.address;
      if (a.platform === 'local') {
        // The local channel addresses one profile by name, like a direct message.
        const p = profiles.get(a.profile);
        if (!p) {
          if (invalidIds.has(a.profile)) {
            return {
              ok: false,
              reason: 'profile_invalid',
              message: `Profile "${a.profile}" is not being served: its manifest is invalid. Run "agent-vm profiles validate" to see why.`,
              detail: `manifest of ${a.profile} is invalid`,
            };
          }
          return { ok: false, reason: 'unbound', message: `${UNBOUND_MESSAGE} (there is no profile "${a.profile}")`, detail: `no profile ${a.profile}` };
        }
        const binding = p.bindings.find((b) => matchScore(b, a, event.text) !== undefined);
        if (!binding) return { ok: false, reason: 'unbound', message: `${UNBOUND_MESSAGE} (profile "${a.profile}" has no local binding for channel "${a.channel}")`, detail: `no local binding on ${a.profile} for ${a.channel}` };
        return { ok: true, profile: p, binding };
      }

      let best: Array<{ profile: Profile; binding: Binding }> = [];
      let bestScore = 0;
      for (const p of profiles.values()) {
        let score = 0;
        let chosen: Binding | undefined;
        for (const b of p.bindings) {
          const s = matchScore(b, a, event.text);
          if (s !== undefined && s > score) {
            score = s;
            chosen = b;
          }
        }
        if (!chosen) continue;
        if (score > bestScore) {
          best = [{ profile: p, binding: chosen }];
          bestScore = score;
        } else if (score === bestScore) {
          best.push({ profile: p, binding: chosen });
        }
      }
      if (best.length === 1) return { ok: true, ...best[0]! };
      if (best.length > 1) {
        const names = best.map((m) => m.profile.name).join(', ');
        return {
          ok: false,
          reason: 'ambiguous',
          message: `This message reaches more than one agent (${names}); mention only one.`,
          detail: `ambiguous between ${best.map((m) => m.profile.id).join(',')} at ${where(a)}`,
        };
      }
      return { ok: false, reason: 'unbound', message: UNBOUND_MESSAGE, detail: `no binding for ${where(a)}` };
    },
  };
}
