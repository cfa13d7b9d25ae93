// meshgate's command line: one executable, a subcommand per role (see DESIGN.md).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './args.ts';

const USAGE = `usage: meshgate <command> [flags]

commands:
  up        --config DIR     pilot + one ingress gateway in one process, config from a folder of YAML
  pilot     --config DIR     control plane: watch config, translate, push to proxies
  gateway   --pilot H:P      data plane: run what pilot pushes
  analyze   DIR...           validate config without applying it (exit 1 on errors)

Run 'meshgate <command> --help' for its flags.`;

export interface Command {
  summary: string;
  options: NonNullable<ParseArgsConfig['options']>;
  allowPositionals?: boolean;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<number | void>;
}

async function loadCommand(name: string): Promise<Command | null> {
  switch (name) {
    case 'up': return (await import('./up.ts')).upCommand;
    case 'pilot': return (await import('./pilot.ts')).pilotCommand;
    case 'gateway': return (await import('./gateway.ts')).gatewayCommand;
    case 'analyze': return (await import('./analyze.ts')).analyzeCommand;
    default: return null;
  }
}

function helpFor(name: string, cmd: Command): string {
  const lines = [`usage: meshgate ${name} ${cmd.allowPositionals ? 'DIR... ' : ''}[flags]`, '', cmd.summary, '', 'flags:'];
  for (const [flag, o] of Object.entries(cmd.options)) {
    const def = o.default !== undefined ? ` (default ${JSON.stringify(o.default)})` : '';
    lines.push(`  --${flag}${o.type === 'string' ? ' VALUE' : ''}${def}${o.multiple === true ? ' (repeatable)' : ''}`);
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const cmd = await loadCommand(name);
  if (!cmd) {
    console.error(`meshgate: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(helpFor(name, cmd));
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: cmd.allowPositionals ?? false, strict: true });
    const code = await cmd.run(values as Record<string, string | boolean | undefined>, positionals);
    return code ?? 0;
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`meshgate ${name}: ${(err as Error).message}\n\n${helpFor(name, cmd)}`);
      return 2;
    }
    console.error(`meshgate ${name}: ${(err as Error).stack ?? err}`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Long-running commands resolve only when asked to stop; short ones exit with their code.
  process.exitCode = code;
}
