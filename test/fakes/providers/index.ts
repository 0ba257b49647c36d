/**
 * Fakes of the model providers' HTTP APIs (Anthropic Messages, OpenAI Responses and Chat
 * Completions, Gemini), for the model relay's tests and for driving real agents (Claude Code,
 * Codex, Gemini CLI) offline. See common.ts for scripting and what each records.
 */
export { startFakeAnthropic, ANTHROPIC_MODELS } from './anthropic.js';
export { startFakeOpenAI, OPENAI_MODELS } from './openai.js';
export { startFakeGemini, GEMINI_MODELS } from './gemini.js';
export type { FakeProvider, FakeReply, FakeRequest, FakeUsage, FakeOptions, Hold, StreamPacing } from './common.js';
