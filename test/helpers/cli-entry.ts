/** The CLI from source (`node --import tsx test/helpers/cli-entry.ts …`), for tests that need no build. */
import { main } from '../../src/cli.js';

process.exitCode = await main(process.argv.slice(2));
