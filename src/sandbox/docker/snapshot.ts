/**
 * Workspace snapshots: a tar of /workspace kept by the gateway host, so an agent's state
 * survives the loss of its volume (a pruned engine, a new host). Entries are stored relative
 * to the workspace so a restore writes only inside the workspace volume.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';

export function snapshotPath(dir: string, agentId: string): string {
  return path.join(dir, `${agentId}.tar`);
}

/** Rewrites the engine's `workspace/...` archive to `./...` and writes it atomically. */
export async function writeSnapshot(archive: Readable, file: string): Promise<number> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const extract = tar.extract();
  const pack = tar.pack();
  extract.on('entry', (header, stream, next) => {
    const rel = header.name.replace(/^workspace\/?/, '');
    if (rel === '' || header.name === rel) {
      // The root entry itself, or anything not under workspace/: not part of the snapshot.
      stream.resume();
      stream.on('end', next);
      return;
    }
    header.name = rel;
    stream.pipe(pack.entry(header, next));
  });
  extract.on('finish', () => pack.finalize());
  archive.on('error', (err) => extract.destroy(err));
  archive.pipe(extract);
  try {
    await pipeline(pack, createWriteStream(tmp, { mode: 0o600 }));
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  return (await fs.stat(file)).size;
}

export async function snapshotExists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
}

export function readSnapshot(file: string): Readable {
  return createReadStream(file);
}
