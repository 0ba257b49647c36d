/**
 * A process that writes one snapshot generation forever, for the kill-during-write test: it
 * streams an endless archive into the store and prints `writing <bytes>` once `after` bytes have
 * gone out, then keeps going until it is killed.
 * argv: <store options json> <agent id> <bytes before the line>
 */
import { Readable } from 'node:stream';
import { createLocalSnapshotStore } from '../../src/sandbox/snapshots/local.js';
import { createS3SnapshotStore } from '../../src/sandbox/snapshots/s3.js';

const [optionsJson, agentId, afterText] = process.argv.slice(2) as [string, string, string];
const o = JSON.parse(optionsJson) as { kind: 'local'; dir: string } | { kind: 's3'; url: string; endpoint: string; credentials: { accessKeyId: string; secretAccessKey: string } };
const store = o.kind === 'local' ? createLocalSnapshotStore({ dir: o.dir }) : createS3SnapshotStore(o);
const after = Number(afterText);
let sent = 0;
let told = false;
const chunk = Buffer.alloc(256 * 1024, 7);
const endless = new Readable({
  read() {
    setTimeout(() => {
      sent += chunk.length;
      this.push(chunk);
      if (!told && sent >= after) {
        told = true;
        process.stdout.write(`writing ${sent}\n`);
      }
    }, 2);
  },
});
await store.put(agentId, endless, new Promise(() => undefined));
