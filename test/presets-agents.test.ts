/**
 * Each preset agent (Claude Code, Codex, Gemini CLI) runs in its own image under runsc, as the
 * gateway will run it: an internal network whose only open host port is the model relay's, the
 * relay (with a per-sandbox token, honoured during the turn) in front of a fake provider API
 * holding the real key, and the gateway's ACP client. The fake is scripted to make the agent call
 * its own file-writing tool for `outbox/report.md` in the conversation's directory, then answer;
 * the test allows the permission request, and the file must come out through the driver. Then
 * the sandbox is re-created and the same session loaded and prompted again.
 *
 * The images come from `agent-vm image build --agents claude,codex,gemini` (scripts/test.sh).
 * Timings and memory are printed as one JSON line per agent.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { PRESETS, presetImageRecipe, readPresetPins } from '../src/governance/presets.js';
import { connectDocker } from '../src/sandbox/docker/engine.js';
import { PRESET_LABELS } from '../src/sandbox/docker/preset-image.js';
import type { ConversationPaths } from '../src/sandbox/layout.js';
import type { FakeReply } from './fakes/providers/index.js';
import { testConfig } from './helpers/env.js';
import { answerText, runPresetTurn, type PresetRun } from './helpers/preset-agent.js';

const REPORT = '# Report\n\nWritten by a preset agent inside a gVisor sandbox.\n';
const PROMPT = 'Write a short report to outbox/report.md, then tell me where it is.';
const DONE = 'Done: report.md is in your outbox.';
const runs = new Set<PresetRun>();
afterAll(async () => {
  for (const r of runs) await r.close();
});

interface Case {
  preset: 'claude' | 'codex' | 'gemini';
  models: string[];
  env: Record<string, string>;
  /** The agent's own write tool, as the model calls it. */
  write(paths: ConversationPaths): FakeReply;
}

const CASES: Case[] = [
  {
    preset: 'claude',
    models: ['claude-sonnet-4-5-20250929'],
    env: { ANTHROPIC_DEFAULT_SONNET_MODEL: 'claude-sonnet-4-5-20250929' },
    write: (p) => ({ toolCall: { name: 'Write', args: { file_path: `${p.outboxPath}/report.md`, content: REPORT } } }),
  },
  {
    preset: 'codex',
    // A model without built-in metadata gets Codex's shell tools, where apply_patch is an
    // intercepted command (a model with metadata gets a freeform apply_patch tool instead, which
    // the OpenAI fake does not speak).
    models: ['gpt-5-codex'],
    env: { CODEX_MODEL: 'gpt-5-codex' },
    write: (p) => ({
      toolCall: {
        name: 'exec_command',
        args: { cmd: `apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: outbox/report.md\n${REPORT.replace(/\n$/, '').split('\n').map((l) => `+${l}`).join('\n')}\n*** End Patch\nEOF\n`, workdir: p.cwd },
      },
    }),
  },
  {
    preset: 'gemini',
    models: ['gemini-2.5-flash'],
    env: { GEMINI_MODEL: 'gemini-2.5-flash' },
    write: (p) => ({ toolCall: { name: 'write_file', args: { file_path: `${p.outboxPath}/report.md`, content: REPORT } } }),
  },
];

describe('preset agents under runsc', () => {
  const docker = connectDocker(testConfig().docker);
  const pins = readPresetPins();

  for (const c of CASES) {
    it(`${c.preset}: initialize, session/new in the conversation's directory, a turn that writes report.md to its outbox, session/load after a re-create`, { timeout: 240_000 }, async () => {
      const recipe = presetImageRecipe(c.preset, pins)!;
      const labels = await docker
        .getImage(recipe.image)
        .inspect()
        .then((i) => i.Config.Labels ?? {})
        .catch(() => {
          throw new Error(`image ${recipe.image} is missing: run \`node bin/agent-vm.js image build --agents claude,codex,gemini\``);
        });
      expect(labels[PRESET_LABELS.preset]).toBe(c.preset);
      expect(labels[PRESET_LABELS.version]).toBe(recipe.packages[recipe.install[0]!]!.version);

      const run = await runPresetTurn({ preset: c.preset, models: c.models, env: c.env, prompt: PROMPT, script: (p) => [c.write(p), { text: DONE }] });
      const turnEndedAt = Date.now();
      runs.add(run);
      console.log(JSON.stringify({ preset: c.preset, version: labels[PRESET_LABELS.version], ...run.timings, rssMiB: run.rssMiB }));

      expect(run.stopReason).toBe('end_turn');
      // One permission request, for the file write, allowed by the client.
      expect(run.permissions.map((p) => p.toolCall.kind)).toEqual(['edit']);
      expect(answerText(run.updates)).toContain(DONE);
      const out = await run.outbox();
      expect(out).toEqual([{ kind: 'file', name: 'report.md', size: Buffer.byteLength(REPORT), data: Buffer.from(REPORT) }]);

      // The provider saw only the real key, never the sandbox's token, and only allowed models.
      const calls = run.fake.requests.filter((r) => r.method === 'POST');
      expect(calls.length).toBeGreaterThanOrEqual(2);
      for (const r of run.fake.requests) expect(r.credential).toBe(run.fake.apiKey);
      expect(run.fake.pending()).toBe(0);
      expect(run.relayEvents.filter((e) => e.type === 'unauthorized' || e.type === 'model_denied' || e.type === 'bad_request')).toEqual([]);
      // The container is replaced (the workspace volume stays): the same session loads and
      // carries the first turn to the model.
      if (c.preset === 'gemini') {
        // gemini-cli 0.61.0 names a session's chat file by the minute it was recorded, and
        // session/load first starts a fresh recording of the same session id: in the same minute
        // that lands in the very file being loaded, wipes its history, and the load fails with
        // "No previous sessions found for this project". Load in the next minute, as a wake
        // after an idle sleep always does. The minute is the turn's last, not the session's first:
        // on a loaded machine the session started at :58 and its messages were recorded at :01.
        const minute = Math.floor(turnEndedAt / 60_000);
        while (Math.floor((Date.now() - 1000) / 60_000) <= minute) await new Promise((r) => setTimeout(r, 250));
      }
      const before = run.fake.requests.length;
      const again = await run.resume('What did you write before?', [{ text: 'Earlier I wrote report.md.' }]);
      console.log(JSON.stringify({ preset: c.preset, sessionLoadMs: again.loadMs, loaded: again.loaded, error: again.error }));
      expect(again).toMatchObject({ loaded: PRESETS[c.preset].loadSession, stopReason: 'end_turn' });
      expect(answerText(again.updates)).toContain('Earlier I wrote report.md.');
      const next = run.fake.requests.slice(before).filter((r) => r.method === 'POST');
      expect(next).toHaveLength(1);
      expect(JSON.stringify(next[0]!.body)).toContain('Write a short report to outbox/report.md');

      // Sandboxes of this file run one after another: free this one's memory now.
      runs.delete(run);
      await run.close();
    });
  }
});
