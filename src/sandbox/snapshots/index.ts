/** Workspace snapshots: the store seam (types.ts), its two stores, and verification before restore. */
import path from 'node:path';
import { createLocalSnapshotStore } from './local.js';
import { createS3SnapshotStore } from './s3.js';
import type { SnapshotStore } from './types.js';

export type * from './types.js';
export { createLocalSnapshotStore } from './local.js';
export { createS3SnapshotStore, parseS3Url } from './s3.js';
export { chooseGeneration, verifyGeneration, SnapshotRefusedError, type Choice, type GenerationProblem, type VerifiedGeneration, type VerifyOutcome } from './verify.js';

/** The snapshot settings of `Config` (src/config.ts). */
export interface SnapshotSettings {
  /** `s3://bucket/prefix`, `file:///abs/dir`, or undefined for `<dataDir>/snapshots`. */
  url: string | undefined;
  keep: number;
  s3: {
    endpoint: string | undefined;
    region: string;
    accessKeyId: string | undefined;
    secretAccessKey: string | undefined;
    sessionToken: string | undefined;
    forcePathStyle: boolean | undefined;
  };
}

export function createSnapshotStore(s: SnapshotSettings, dataDir: string): SnapshotStore {
  if (s.url?.startsWith('s3://')) {
    const { accessKeyId, secretAccessKey, sessionToken } = s.s3;
    return createS3SnapshotStore({
      url: s.url,
      keep: s.keep,
      region: s.s3.region,
      ...(s.s3.endpoint ? { endpoint: s.s3.endpoint } : {}),
      ...(s.s3.forcePathStyle !== undefined ? { forcePathStyle: s.s3.forcePathStyle } : {}),
      ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } } : {}),
    });
  }
  const dir = s.url?.startsWith('file://') ? new URL(s.url).pathname : path.join(dataDir, 'snapshots');
  return createLocalSnapshotStore({ dir, keep: s.keep });
}
