/**
 * Agent presets: `agent: { preset: claude | codex | gemini | reference }` in a manifest names a
 * known ACP agent, and this file says everything agent-vm knows about running it: the image that
 * has it, the command, fixed environment, which model provider it talks to (so the gateway can
 * fill in the model relay's environment at wake), files baked into its image, and how that image
 * is built from pinned npm packages (agents/presets/versions.json, the one place versions live).
 *
 * Nothing here is a secret or depends on the host: the relay's base URL and the sandbox's token
 * are not known until the gateway wakes the sandbox, so a preset names the variables it expects
 * (`relayEnv`) and `resolvePresetAgent` refuses to start it without every one of them.
 *
 * Deliberately left out: model choice (an agent uses its own default unless the manifest's
 * `agent.env` names one, e.g. ANTHROPIC_MODEL; the relay's `models.allow` decides what is served),
 * and any way for a manifest to change a preset's command or the variables it reserves.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentVmError } from '../errors.js';

export const PRESET_NAMES = ['claude', 'codex', 'gemini', 'reference'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];
/** The providers the model relay serves (model-relay/types.ts `ModelProvider`). */
export type PresetProvider = 'anthropic' | 'openai' | 'gemini';

/** Where a preset's npm packages live inside its image: `<PRESET_ROOT>/<name>/`. */
export const PRESET_ROOT = '/opt/agent-vm/presets';

/** How a preset's image is built on top of the agent image (see sandbox/docker/image.ts). */
export interface PresetBuild {
  /** Key of this preset's entry in agents/presets/versions.json. */
  pins: string;
  /** Files baked into the image: absolute path in the image → file under agents/presets/. */
  files: Readonly<Record<string, string>>;
  /**
   * Symlinks made in the install directory: name → target, both relative to it. `{platform}`
   * in a target is the npm platform of the build (`linux-x64`, `linux-arm64`).
   */
  links: Readonly<Record<string, string>>;
  /**
   * Directories (relative to the install directory) whose children are per-platform builds named
   * `<cpu>-<os>` (`x64-linux`, `arm64-darwin`, …): only the build's own is kept.
   */
  platformDirs: readonly string[];
  /** Shell command run once in the image build, as the sandbox user: proves the agent can start. */
  check: string;
}

export interface AgentPreset {
  name: PresetName;
  /** Image tag; undefined: the configured agent image (AGENTVM_IMAGE), which ships the reference agent. */
  image?: string;
  /** The provider whose relay environment the gateway fills in; undefined: the agent calls no model. */
  provider?: PresetProvider;
  /**
   * Variables the gateway fills in at wake from the model relay (`ModelRelay.issueToken(...).env`
   * for `provider`): the relay's base URL for that provider and the sandbox's token.
   */
  relayEnv: readonly string[];
  /**
   * The variable (in a manifest's `agent.env`) that picks the model id the agent sends; it must be
   * one the relay allows. Unset, the agent uses its own default (Claude Code 2.1.83:
   * claude-sonnet-4-6, whatever ANTHROPIC_MODEL says; Codex: its built-in default).
   */
  modelEnv?: string;
  /** The sandbox's main process. Fixed: a manifest cannot change it (use `agent.command` instead). */
  command: readonly string[];
  /** Fixed, non-secret environment. A manifest's `agent.env` may add variables but not change these. */
  env: Readonly<Record<string, string>>;
  /** The smallest memory limit (MiB) the agent was seen to work in under runsc, with headroom. */
  minMemoryMiB: number;
  /**
   * `session/load` of a session that has had a turn works after the sandbox was re-created (HOME
   * is on the workspace volume). A session that never had a turn cannot be loaded by any of the
   * three (they answer "Resource not found" / "Internal error"): the gateway starts a new one.
   */
  loadSession: boolean;
  build?: PresetBuild;
}

const claudeDir = `${PRESET_ROOT}/claude`;
const codexDir = `${PRESET_ROOT}/codex`;
const geminiDir = `${PRESET_ROOT}/gemini`;

export const PRESETS: Readonly<Record<PresetName, AgentPreset>> = Object.freeze({
  claude: {
    name: 'claude',
    image: 'agent-vm/agent-claude:latest',
    provider: 'anthropic',
    relayEnv: ['ANTHROPIC_BASE_URL', 'ANTHROPIC_API_KEY'],
    // The ACP adapter selects Claude Code's "default" model, which is the sonnet alias.
    modelEnv: 'ANTHROPIC_DEFAULT_SONNET_MODEL',
    command: ['node', `${claudeDir}/node_modules/@zed-industries/claude-agent-acp/dist/index.js`],
    env: {
      // No update checks, telemetry or error reports: the sandbox reaches nothing but the relay.
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
      DISABLE_TELEMETRY: '1',
      DISABLE_ERROR_REPORTING: '1',
    },
    minMemoryMiB: 1024,
    loadSession: true,
    build: {
      pins: 'claude',
      // Managed settings cannot be overridden by the agent's own ~/.claude or project settings:
      // every tool use goes through an ACP permission request, and bypass mode is off.
      files: { '/etc/claude-code/managed-settings.json': 'claude/managed-settings.json' },
      links: {},
      platformDirs: [
        'node_modules/@anthropic-ai/claude-agent-sdk/vendor/ripgrep',
        'node_modules/@anthropic-ai/claude-agent-sdk/vendor/tree-sitter-bash',
        'node_modules/@anthropic-ai/claude-agent-sdk/vendor/audio-capture',
      ],
      check: `node ${claudeDir}/node_modules/@anthropic-ai/claude-agent-sdk/cli.js --version && test -f ${claudeDir}/node_modules/@zed-industries/claude-agent-acp/dist/index.js`,
    },
  },
  codex: {
    name: 'codex',
    image: 'agent-vm/agent-codex:latest',
    provider: 'openai',
    relayEnv: ['OPENAI_BASE_URL', 'OPENAI_API_KEY'],
    modelEnv: 'CODEX_MODEL',
    // A small wrapper passes OPENAI_BASE_URL to codex's provider (codex reads no base URL from the
    // environment); the provider itself is defined in /etc/codex/config.toml.
    command: [`${codexDir}/bin/agent`],
    env: {},
    minMemoryMiB: 512,
    loadSession: true,
    build: {
      pins: 'codex',
      files: {
        '/etc/codex/config.toml': 'codex/config.toml',
        [`${codexDir}/bin/agent`]: 'codex/agent.sh',
      },
      links: { 'bin/codex-acp': '../node_modules/@zed-industries/codex-acp-{platform}/bin/codex-acp' },
      platformDirs: [],
      // Also proves libssl.so.3 / libcrypto.so.3 are in the image (the binary links them).
      check: `${codexDir}/bin/codex-acp --help >/dev/null`,
    },
  },
  gemini: {
    name: 'gemini',
    image: 'agent-vm/agent-gemini:latest',
    provider: 'gemini',
    relayEnv: ['GOOGLE_GEMINI_BASE_URL', 'GEMINI_API_KEY'],
    modelEnv: 'GEMINI_MODEL',
    command: ['node', `${geminiDir}/node_modules/@google/gemini-cli/bundle/gemini.js`, '--acp'],
    env: {
      // Without it Gemini CLI treats the session's cwd as untrusted and silently resets the
      // approval mode.
      GEMINI_CLI_TRUST_WORKSPACE: 'true',
      GEMINI_TELEMETRY_ENABLED: 'false',
      // gemini.js otherwise re-spawns itself (a second node process) only to raise its heap limit.
      GEMINI_CLI_NO_RELAUNCH: 'true',
    },
    minMemoryMiB: 1024,
    // Its chats live under ~/.gemini/tmp/<project of the cwd>/chats on the workspace volume, so
    // a session with a turn loads after a re-create, but not in the same UTC minute as the
    // session's first recording: gemini-cli 0.61.0's session/load starts a new recording of the
    // same id first, whose file name (minute resolution) is then the loaded file's own, and it
    // resets that file's history ("No previous sessions found for this project").
    loadSession: true,
    build: {
      pins: 'gemini',
      files: { '/etc/gemini-cli/settings.json': 'gemini/settings.json' },
      links: {},
      platformDirs: [],
      check: `node ${geminiDir}/node_modules/@google/gemini-cli/bundle/gemini.js --version >/dev/null`,
    },
  },
  reference: {
    name: 'reference',
    relayEnv: [],
    command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'],
    env: {},
    minMemoryMiB: 64,
    loadSession: true,
  },
});

export function isPresetName(v: string): v is PresetName {
  return (PRESET_NAMES as readonly string[]).includes(v);
}

/** Variables a manifest's `agent.env` may not set with this preset (its fixed env and its relay env). */
export function reservedEnv(name: PresetName): string[] {
  const p = PRESETS[name];
  return [...Object.keys(p.env), ...p.relayEnv];
}

export interface ResolvedAgent {
  image: string;
  command: string[];
  env: Record<string, string>;
}

/**
 * What the sandbox runs for a manifest's `agent`: the preset's image, command and environment
 * with the manifest's extra `env` and the model relay's environment filled in. `relayEnv` is the
 * relay's `issueToken(...).env` for the preset's provider; a variable the preset needs and the
 * relay did not give fails here, before any sandbox starts. A manifest without a preset runs its
 * own `command` in `defaultImage` (or the manifest's `image`).
 */
export function resolvePresetAgent(
  agent: { preset?: PresetName; command?: readonly string[]; env: Readonly<Record<string, string>> },
  o: { defaultImage: string; image?: string; relayEnv?: Readonly<Record<string, string>> },
): ResolvedAgent {
  if (agent.preset === undefined) {
    if (!agent.command) throw new AgentVmError('agent_invalid', 'the manifest names neither agent.preset nor agent.command', { status: 400 });
    return { image: o.image ?? o.defaultImage, command: [...agent.command], env: { ...agent.env } };
  }
  const p = PRESETS[agent.preset];
  const relay = o.relayEnv ?? {};
  const missing = p.relayEnv.filter((k) => !relay[k]);
  if (missing.length > 0) {
    throw new AgentVmError('agent_invalid', `preset ${p.name} needs ${missing.join(', ')} from the model relay (provider ${p.provider})`, { status: 500 });
  }
  const reserved = new Set(reservedEnv(p.name));
  const clash = Object.keys(agent.env).filter((k) => reserved.has(k));
  if (clash.length > 0) throw new AgentVmError('agent_invalid', `agent.env may not set ${clash.join(', ')} with preset ${p.name}`, { status: 400 });
  const fromRelay = Object.fromEntries(p.relayEnv.map((k) => [k, relay[k]!]));
  return { image: o.image ?? p.image ?? o.defaultImage, command: [...p.command], env: { ...agent.env, ...p.env, ...fromRelay } };
}

/** One npm package as pinned: exact version and the registry's integrity hash. */
export interface PinnedPackage {
  version: string;
  integrity: string;
}

/** One preset's entry in versions.json. */
export interface PresetPins {
  /** Packages installed at the top level (their exact versions are in `packages`). */
  install: string[];
  /** Every package the install may bring in, any platform's optional ones included. */
  packages: Record<string, PinnedPackage>;
}

const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** agents/presets/ of this checkout: versions.json and the files baked into preset images. */
export const PRESET_DATA_DIR = path.join(PACKAGE_ROOT, 'agents', 'presets');

const EXACT_VERSION = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;
const INTEGRITY = /^sha512-[A-Za-z0-9+/]{86}==$/;

/** Reads and checks agents/presets/versions.json: exact versions, sha512 integrity, install ⊆ packages. */
export function readPresetPins(file = path.join(PRESET_DATA_DIR, 'versions.json')): Record<string, PresetPins> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new AgentVmError('presets_invalid', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string) => new AgentVmError('presets_invalid', `${file}: ${why}`);
  if (typeof raw !== 'object' || raw === null) throw bad('not an object');
  const out: Record<string, PresetPins> = {};
  for (const [key, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (key.startsWith('$')) continue;
    const e = entry as Partial<PresetPins>;
    if (!Array.isArray(e.install) || e.install.length === 0 || typeof e.packages !== 'object' || e.packages === null) {
      throw bad(`${key}: needs "install" (package names) and "packages" (name → {version, integrity})`);
    }
    for (const [name, pin] of Object.entries(e.packages)) {
      if (!EXACT_VERSION.test(pin?.version ?? '')) throw bad(`${key}: ${name}: version must be exact, got ${JSON.stringify(pin?.version)}`);
      if (!INTEGRITY.test(pin?.integrity ?? '')) throw bad(`${key}: ${name}: integrity must be the registry's sha512-… hash`);
    }
    for (const name of e.install) if (!e.packages[name]) throw bad(`${key}: installs ${name}, which has no entry in packages`);
    out[key] = { install: e.install, packages: e.packages };
  }
  return out;
}

/**
 * The build recipe of a preset's image, with its pins from versions.json and its files as host
 * paths (the shape sandbox/docker/preset-image.ts builds). Undefined for `reference`, which is
 * the agent image itself.
 */
export function presetImageRecipe(name: PresetName, pins: Record<string, PresetPins> = readPresetPins()) {
  const p = PRESETS[name];
  if (!p.build || !p.image) return undefined;
  const pin = pins[p.build.pins];
  if (!pin) throw new AgentVmError('presets_invalid', `agents/presets/versions.json has no entry "${p.build.pins}" for preset ${name}`);
  return {
    name,
    image: p.image,
    installDir: `${PRESET_ROOT}/${name}`,
    install: pin.install,
    packages: pin.packages,
    files: Object.fromEntries(Object.entries(p.build.files).map(([dest, src]) => [dest, path.join(PRESET_DATA_DIR, src)])),
    links: { ...p.build.links },
    platformDirs: [...p.build.platformDirs],
    check: p.build.check,
  };
}
