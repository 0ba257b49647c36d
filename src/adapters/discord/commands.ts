/**
 * Slash command registration (`agent-vm discord register`): one bulk overwrite of the
 * application's commands, globally or for one guild (guild commands appear at once; global ones
 * can take a while to propagate). Every command takes a required `prompt` and an optional `file`.
 *
 * Deliberately left out: permissions and localizations; guild admins manage who may use them.
 */
import { AgentVmError } from '../../errors.js';
import { createDiscordApi, type ApplicationCommandBody } from './api.js';
import { OptionType } from './parse.js';

export const DEFAULT_COMMAND = { name: 'ask', description: 'Ask an agent employee' } as const;
const COMMAND_NAME = /^[-_a-z0-9]{1,32}$/;
/** Discord allows 100 chat-input commands per scope. */
const MAX_COMMANDS = 100;

export interface CommandSpec {
  name: string;
  description: string;
}

export interface RegisterCommandsOptions {
  applicationId: string;
  botToken: string;
  apiUrl: string;
  commands: CommandSpec[];
  /** Register for one guild instead of globally. */
  guildId?: string;
}

/** The command body Discord receives for one spec. */
export function commandBody(spec: CommandSpec): ApplicationCommandBody {
  return {
    name: spec.name,
    description: spec.description,
    type: 1,
    options: [
      { type: OptionType.String, name: 'prompt', description: 'What to ask', required: true, max_length: 6000 },
      { type: OptionType.Attachment, name: 'file', description: 'A file for the agent to read', required: false },
    ],
  };
}

/**
 * The commands a set of profile bindings needs: `/ask`, plus each `command` a Discord binding
 * names. Structural, so the adapter does not import governance.
 */
export function commandsForBindings(bindings: Array<{ platform: string; command?: string }>): CommandSpec[] {
  const names = new Set<string>([DEFAULT_COMMAND.name]);
  for (const b of bindings) if (b.platform === 'discord' && b.command) names.add(b.command);
  return [...names].map((name) =>
    name === DEFAULT_COMMAND.name ? { ...DEFAULT_COMMAND } : { name, description: `Ask the ${name} agent employee` },
  );
}

function validate(commands: CommandSpec[]): void {
  const problems: string[] = [];
  if (commands.length > MAX_COMMANDS) problems.push(`at most ${MAX_COMMANDS} commands, got ${commands.length}`);
  const seen = new Set<string>();
  for (const c of commands) {
    if (!COMMAND_NAME.test(c.name)) problems.push(`"${c.name}": a name is 1-32 lowercase letters, digits, "-" or "_"`);
    if (c.description.length < 1 || c.description.length > 100) problems.push(`"${c.name}": a description is 1-100 characters`);
    if (seen.has(c.name)) problems.push(`"${c.name}" is listed twice`);
    seen.add(c.name);
  }
  if (problems.length > 0) {
    throw new AgentVmError('discord_commands_invalid', `invalid Discord commands:\n  ${problems.join('\n  ')}`, { status: 400 });
  }
}

/** Overwrites the application's (or guild's) commands with `commands`. Returns Discord's answer. */
export async function registerCommands(opts: RegisterCommandsOptions): Promise<Array<{ id: string; name: string }>> {
  validate(opts.commands);
  const api = createDiscordApi({ apiUrl: opts.apiUrl, botToken: opts.botToken });
  try {
    const result = await api.putCommands(opts.applicationId, opts.guildId, opts.commands.map(commandBody));
    return Array.isArray(result) ? (result as Array<{ id: string; name: string }>) : [];
  } finally {
    api.close();
  }
}
