export type * from './types.js';
export { selectRuntime } from './runtime.js';
export { validateSpec, hashOf, AGENT_ID_PATTERN } from './spec.js';
