/** Platform setup commands: `discord register`, `clickup register-webhook`. */
import type { Command } from 'commander';
import { registerWebhook } from '../adapters/clickup/index.js';
import { commandsForBindings, registerCommands } from '../adapters/discord/commands.js';
import { loadConfig } from '../config.js';
import { AgentVmError } from '../errors.js';
import { loadProfiles } from '../governance/profiles.js';
import { openStore } from '../store/index.js';
import { out } from './common.js';

export function registerPlatformCommands(program: Command): void {
  const discord = program.command('discord').description('Discord application setup');
  discord
    .command('register')
    .description('register the slash commands the profiles use (/ask plus each binding\'s command)')
    .option('--guild <id>', 'register for one guild (instant) instead of globally')
    .action(async (o: { guild?: string }) => {
      const config = loadConfig();
      const { applicationId, botToken, apiUrl } = config.discord;
      if (!applicationId || !botToken) throw new AgentVmError('config_invalid', 'set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN', { status: 400 });
      const loaded = await loadProfiles(config.profilesDir);
      const bindings = loaded.profiles.flatMap((p) => p.bindings.filter((b) => b.platform === 'discord'));
      const commands = commandsForBindings(bindings);
      const done = await registerCommands({ applicationId, botToken, apiUrl, commands, guildId: o.guild });
      out(`registered ${done.length} command(s)${o.guild ? ` in guild ${o.guild}` : ' globally'}: ${done.map((c) => `/${c.name}`).join(', ')}`);
    });

  const clickup = program.command('clickup').description('ClickUp setup');
  clickup
    .command('register-webhook')
    .description('create a taskCommentPosted webhook and store its signing secret')
    .requiredOption('--team <id>', 'workspace (team) id')
    .requiredOption('--endpoint <url>', "public URL of this agent-vm's POST /clickup/webhook")
    .option('--space <id>', 'only this space')
    .option('--folder <id>', 'only this folder')
    .option('--list <id>', 'only this list')
    .action(async (o: { team: string; endpoint: string; space?: string; folder?: string; list?: string }) => {
      const config = loadConfig();
      if (!config.clickup.token) throw new AgentVmError('config_invalid', 'set CLICKUP_TOKEN', { status: 400 });
      try {
        const u = new URL(o.endpoint);
        if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
      } catch {
        throw new AgentVmError('usage', `--endpoint must be an http(s) URL, got ${JSON.stringify(o.endpoint)}`, { status: 400 });
      }
      const hook = await registerWebhook({ apiUrl: config.clickup.apiUrl, token: config.clickup.token, team: o.team, endpoint: o.endpoint, space: o.space, folder: o.folder, list: o.list });
      const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
      try {
        await store.migrate();
        const scope = [`team ${o.team}`, o.space && `space ${o.space}`, o.folder && `folder ${o.folder}`, o.list && `list ${o.list}`].filter(Boolean).join(' ');
        await store.gateway.putWebhook({ id: hook.id, platform: 'clickup', scope, endpoint: o.endpoint, secret: hook.secret });
        out(`webhook ${hook.id} created for ${scope}; its secret is stored (deliveries are verified with it)`);
      } finally {
        await store.close();
      }
    });
}
