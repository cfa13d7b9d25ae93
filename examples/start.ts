// `npm start`: the example upstreams, then `meshgate up --config examples`.
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { startExampleUpstreams } from './upstreams.ts';
import { main } from '../cli/main.ts';

const stopUpstreams = await startExampleUpstreams();
const dir = dirname(fileURLToPath(import.meta.url));
const code = await main(['up', '--config', dir, ...process.argv.slice(2)]);
await stopUpstreams();
process.exit(code);
