/**
 * The `agent-vm` command. Every failure is one clear line on stderr and a non-zero exit;
 * nothing here reads the environment except through loadConfig.
 */
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { loadConfig, type Config } from './config.js';
import { openContext, type Context } from './context.js';
import { AgentVmError, describeError } from './errors.js';
import { createLogger } from './log.js';
import { createSandboxService } from './gateway/sandboxes.js';
import { describeBinding } from './governance/profile.js';
import { loadProfiles } from './governance/profiles.js';
import { checkProfileSecrets, createSecretResolver } from './governance/secrets.js';
import { buildAgentImage } from './sandbox/docker/image.js';
import { buildPresetImage } from './sandbox/docker/preset-image.js';
import { PRESET_NAMES, isPresetName, presetImageRecipe, readPresetPins, type PresetName } from './governance/presets.js';
import { DEFAULT_LIMITS } from './sandbox/spec.js';
import type { RuntimeSetting } from './sandbox/types.js';
import { openStore } from './store/index.js';
import { cliLogger, out, withContext } from './cli/common.js';
import { registerApprovalCommands } from './cli/approvals.js';
import { registerGatewayCommands } from './cli/gateway.js';
import { registerPlatformCommands } from './cli/platforms.js';
import { registerToolCommands } from './cli/tools.js';
import { agentsViaServer } from './cli/remote.js';
import { registerJobCommands } from './cli/jobs.js';
import { registerSnapshotCommands } from './cli/snapshots.js';
import { registerReleaseCommands } from './cli/releases.js';

function positiveNumber(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new AgentVmError('usage', `${name} must be a positive number, got ${JSON.stringify(v)}`, { status: 400 });
    return n;
  };
}

/** `--agents claude,codex` → preset names; `reference` is the agent image itself and adds nothing. */
function parsePresetList(v: string | undefined): PresetName[] {
  if (v === undefined) return [];
  const names = [...new Set(v.split(',').map((s) => s.trim()).filter(Boolean))];
  const bad = names.filter((n) => !isPresetName(n));
  if (bad.length > 0 || names.length === 0) {
    throw new AgentVmError('usage', `--agents: unknown preset ${bad.map((b) => JSON.stringify(b)).join(', ') || '(none given)'}; expected a comma-separated list of ${PRESET_NAMES.join(', ')}`, { status: 400 });
  }
  return names.filter(isPresetName);
}

export function buildProgram(): Command {
  const program = new Command('agent-vm')
    .description('Agent employees in team chat, each in its own isolated, persistent sandbox')
    .showHelpAfterError()
    .exitOverride();

  registerGatewayCommands(program);
  registerPlatformCommands(program);
  registerApprovalCommands(program);
  registerToolCommands(program);
  registerJobCommands(program);
  registerReleaseCommands(program);

  const db = program.command('db').description('database');
  db.command('migrate')
    .description('apply pending migrations')
    .action(async () => {
      const config = loadConfig();
      const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
      try {
        await store.migrate();
        out(`migrations applied (${store.kind})`);
      } finally {
        await store.close();
      }
    });

  const agents = program.command('agents').description('agent sandboxes');
  agents
    .command('ls')
    .description('list agents and their sandboxes')
    .option('--server <url>', 'through a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action((o: { server?: string }) =>
      o.server ? agentsViaServer(o.server, 'ls') : withContext(async ({ store, driver }) => {
        const [rows, live] = await Promise.all([store.agents.list(), driver.list()]);
        const byId = new Map(live.map((s) => [s.agentId, s]));
        const ids = [...new Set([...rows.map((r) => r.id), ...byId.keys()])].sort();
        out(['AGENT', 'SANDBOX', 'RUNTIME', 'RECORDED', 'LAST WAKE'].join('\t'));
        for (const id of ids) {
          const row = rows.find((r) => r.id === id);
          const s = byId.get(id);
          out([id, s?.state ?? 'missing', s?.runtime ?? row?.runtime ?? '-', row?.state ?? '-', row?.lastWakeMs != null ? `${row.lastWakeMs} ms` : '-'].join('\t'));
        }
      }),
    );
  agents
    .command('wake <agent>')
    .description('start (or create) an agent sandbox')
    .option('--image <image>', 'agent image (default: AGENTVM_IMAGE)')
    .option('--runtime <runtime>', 'kata | runsc | runc | auto (default: AGENTVM_RUNTIME)')
    .option('--cpus <n>', 'CPU cores', positiveNumber('--cpus'), DEFAULT_LIMITS.cpus)
    .option('--memory <MiB>', 'memory limit in MiB', positiveNumber('--memory'), DEFAULT_LIMITS.memoryMiB)
    .option('--pids <n>', 'process limit', positiveNumber('--pids'), DEFAULT_LIMITS.pids)
    .option('--server <url>', "wake a profile's agent through a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)")
    .action((agent: string, o: { image?: string; runtime?: RuntimeSetting; cpus: number; memory: number; pids: number; server?: string }) =>
      o.server ? agentsViaServer(o.server, 'wake', agent) : withContext(async (ctx) => {
        const svc = createSandboxService(ctx);
        const h = await svc.wake({
          agentId: agent,
          image: o.image ?? ctx.config.image,
          runtime: o.runtime,
          limits: { cpus: o.cpus, memoryMiB: o.memory, pids: o.pids },
        });
        out(`${agent}: ${h.action} on ${h.runtime} (${h.engineRuntime}) in ${h.wakeMs} ms, container ${h.containerId.slice(0, 12)}`);
      }),
    );
  agents
    .command('sleep <agent>')
    .description('stop an agent sandbox; its workspace is kept')
    .option('--server <url>', 'through a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action((agent: string, o: { server?: string }) =>
      o.server ? agentsViaServer(o.server, 'sleep', agent) : withContext(async (ctx) => {
        await createSandboxService(ctx).sleep(agent);
        out(`${agent}: sleeping`);
      }),
    );
  agents
    .command('destroy <agent>')
    .description('remove an agent sandbox, its workspace and network; a final snapshot is taken first and kept')
    .option('--no-snapshot', 'skip the final snapshot (the workspace is lost unless earlier generations exist)')
    .action((agent: string, o: { snapshot: boolean }) =>
      withContext(async (ctx) => {
        const r = o.snapshot
          ? await createSandboxService(ctx).destroy(agent)
          : await ctx.driver.destroy(agent, { finalSnapshot: false }).then(async (d) => (await ctx.store.agents.markDestroyed(agent), d));
        const kept = r.finalSnapshot ? `; final snapshot generation ${r.finalSnapshot.generation} kept in ${r.finalSnapshot.path}` : '; no final snapshot';
        out(`${agent}: destroyed (${r.removed.containers} container, ${r.removed.volumes} volume, ${r.removed.networks} network)${kept}`);
      }),
    );
  agents
    .command('exec <agent> <command...>')
    .description('run a command inside a running agent sandbox')
    .option('--timeout <ms>', 'kill after this many milliseconds', positiveNumber('--timeout'), 30_000)
    .action((agent: string, command: string[], o: { timeout: number }) =>
      withContext(async ({ driver }) => {
        const r = await driver.exec(agent, command, { timeoutMs: o.timeout });
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        if (r.timedOut) throw new AgentVmError('exec_timeout', `command timed out after ${o.timeout} ms and was killed`);
        if (r.sandboxStopped) {
          throw new AgentVmError('sandbox_stopped', `the sandbox stopped during the command (exit ${r.sandboxStopped.exitCode}${r.sandboxStopped.oomKilled ? ', out of memory' : ''})`);
        }
        process.exitCode = r.exitCode ?? 1;
      }),
    );
  agents
    .command('snapshot <agent>')
    .description('save the agent workspace to the snapshot store as a new generation')
    .option('--server <url>', 'through a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action((agent: string, o: { server?: string }) =>
      o.server ? agentsViaServer(o.server, 'snapshot', agent) : withContext(async ({ driver }) => {
        const s = await driver.snapshot(agent, { reason: 'operator' });
        out(`${agent}: snapshot generation ${s.generation} ${s.path} (${s.bytes} bytes, ${s.files} files, sha256 ${s.sha256.slice(0, 12)})`);
      }),
    );
  registerSnapshotCommands(agents);

  const profiles = program.command('profiles').description('agent profile manifests');
  profiles
    .command('validate')
    .description('check every manifest in the profiles directory; exits non-zero if any is invalid')
    .option('--dir <dir>', 'profiles directory (default: AGENTVM_PROFILES_DIR)')
    .action(async (o: { dir?: string }) => {
      const config = loadConfig();
      const dir = o.dir ?? config.profilesDir;
      const r = await loadProfiles(dir);
      const secrets = createSecretResolver({ env: config.secrets.env, file: config.secrets.file });
      for (const p of r.profiles) {
        out(`ok  ${r.files[p.id]}  ${p.id}`);
        // Served, but a tool server whose secret cannot be resolved will not start: say so now.
        for (const i of await checkProfileSecrets(p, secrets, r.files[p.id] ?? p.id)) out(`warning: ${i.file}: ${i.path}: ${i.message}`);
      }
      for (const bad of r.invalid) for (const i of bad.issues) out(i.path ? `${i.file}: ${i.path}: ${i.message}` : `${i.file}: ${i.message}`);
      if (r.invalid.length > 0) {
        throw new AgentVmError('profiles_invalid', `${r.invalid.length} of ${r.invalid.length + r.profiles.length} profile manifests in ${dir} are invalid`, { status: 400 });
      }
      if (r.profiles.length === 0) out(`no profile manifests in ${dir}`);
    });
  profiles
    .command('ls')
    .description('list valid profiles and their bindings')
    .option('--dir <dir>', 'profiles directory (default: AGENTVM_PROFILES_DIR)')
    .action(async (o: { dir?: string }) => {
      const dir = o.dir ?? loadConfig().profilesDir;
      const r = await loadProfiles(dir);
      out(['PROFILE', 'NAME', 'RISK', 'BINDINGS'].join('\t'));
      for (const p of r.profiles) out([p.id, p.name, p.risk, p.bindings.map(describeBinding).join('; ')].join('\t'));
      if (r.invalid.length > 0) process.stderr.write(`agent-vm: warning: ${r.invalid.length} invalid manifest(s) not listed; run agent-vm profiles validate\n`);
    });

  const image = program.command('image').description('the agent runtime image');
  image
    .command('build')
    .description('build the agent image: offline from a Debian base (debootstrap), or from --base; --agents adds preset images on top')
    .option('--base <image>', 'registry base image that has node (e.g. node:22-bookworm-slim)')
    .option('--rebuild-base', 'rebuild the Debian base even if it exists')
    .option('--mirror <url>', 'Debian mirror for debootstrap')
    .option('--agents <presets>', `preset images to build FROM the agent image, comma-separated: ${PRESET_NAMES.filter((n) => n !== 'reference').join(',')} (pinned in agents/presets/versions.json)`)
    .option('--cache-dir <dir>', 'where staged npm installs and npm downloads persist between builds (default: ~/.cache/agent-vm)')
    .option('--force', 'rebuild preset images even when their inputs are unchanged')
    .action(async (o: { base?: string; rebuildBase?: boolean; mirror?: string; agents?: string; cacheDir?: string; force?: boolean }) => {
      const config = loadConfig();
      const presets = parsePresetList(o.agents);
      const logger = createLogger(config.logLevel);
      const r = await buildAgentImage({
        docker: config.docker,
        image: config.image,
        base: o.base,
        rebuildBase: o.rebuildBase,
        mirror: o.mirror,
        logger,
      });
      out(`built ${r.image} (${r.imageId.slice(7, 19)}) from ${r.base}${r.baseBuilt ? ' (base built with debootstrap)' : ''} in ${r.seconds} s`);
      const pins = presets.length > 0 ? readPresetPins() : {};
      for (const name of presets) {
        const recipe = presetImageRecipe(name, pins);
        if (!recipe) continue;
        const p = await buildPresetImage({
          docker: config.docker,
          baseImage: config.image,
          cacheDir: o.cacheDir ?? path.join(os.homedir(), '.cache', 'agent-vm'),
          recipe,
          force: o.force,
          logger,
        });
        const mb = (n: number) => `${Math.round(n / 1e6)} MB`;
        const what = p.action === 'unchanged' ? 'up to date' : `built${p.stageCached ? ' (npm install from cache)' : ''}`;
        out(`${what}: ${p.image} (${p.imageId.slice(7, 19)}) ${p.preset} ${p.version}, ${mb(p.sizeBytes)} (${mb(p.sizeBytes - r.sizeBytes)} over ${r.image}) in ${p.seconds} s`);
      }
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const msg = describeError(err);
    process.stderr.write(`agent-vm: error: ${msg}\n`);
    return err instanceof AgentVmError && err.status < 500 ? 2 : 1;
  }
}
