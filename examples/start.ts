// `npm start`: the example upstreams, then `meshgate up --config examples --egress` (the
// gateway is also the egress forward proxy on 3128, enforcing examples/egress.yaml).
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { startExampleUpstreams } from './upstreams.ts';
import { main } from '../cli/main.ts';

const stopUpstreams = await startExampleUpstreams();
const dir = dirname(fileURLToPath(import.meta.url));
const code = await main(['up', '--config', dir, '--egress', ...process.argv.slice(2)]);
await stopUpstreams();
process.exit(code);
