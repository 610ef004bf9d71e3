import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { containersOf, startFlotilla, freePort } from './harness.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const run = promisify(execFile);
const socket = `flt-${shortId(3)}`;

const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
const quote = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;

/** Runs a command in a terminal of its own (a tmux session on a private server), with these variables set. */
function inTerminal(name: string, env: Record<string, string>, command: string[]): void {
  const assignments = Object.entries(env).map(([key, value]) => `${key}=${quote(value)}`);
  tmux('new-session', '-d', '-s', name, '-x', '220', '-y', '50', `env ${[...assignments, ...command.map(quote)].join(' ')}; sleep 600`);
}

/** What the terminal shows, scrollback included, once it shows `until`. */
async function screenOf(name: string, until: RegExp, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const screen = tmux('capture-pane', '-p', '-J', '-t', name, '-S', '-');
    if (until.test(screen)) return screen;
    if (Date.now() > deadline) throw new Error(`the terminal never showed ${until}:\n${screen}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

afterEach(() => {
  try {
    tmux('kill-server');
  } catch {
    // no session left
  }
});

describe('in a terminal', () => {
  it('the demo logs readable lines: time, level, component, message and fields', async () => {
    const instance = `term-${shortId(3)}`;
    inTerminal(
      'demo',
      {
        FLOTILLA_INSTANCE: instance,
        FLOTILLA_STATE_DIR: mkdtempSync(join(tmpdir(), 'flt-')),
        FLOTILLA_HTTP_PORT: '0',
        FLOTILLA_ADMIN_PORT: '0',
        FLOTILLA_CPUS: '64',
      },
      [process.execPath, join(ROOT, 'dist', 'examples', 'hello.js')],
    );
    try {
      const screen = await screenOf('demo', /Flotilla is serving on http:\/\/127\.0\.0\.1:\d+/);
      const lines = screen.split('\n').filter((line) => line.trim() !== '');
      expect(lines.filter((line) => line.startsWith('{'))).toEqual([]);
      const entry = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (info|warn|error|debug) +(\S+) +(.+?)(?: {2}(\S+=.*))?$/;
      expect(lines.find((line) => /replica ready/.test(line))).toMatch(entry);
      expect(screen).toMatch(/info +controller +replica ready {2}backend=hello replica=[0-9a-f]{8} container=[0-9a-f]{12}/);
      expect(screen).toMatch(/info +controller +starting replica {2}backend=hello replica=[0-9a-f]{8}/);
      tmux('send-keys', '-t', 'demo', 'C-c');
      await expect.poll(() => containersOf(instance), { timeout: 60_000 }).toEqual([]);
    } finally {
      const left = containersOf(instance);
      if (left.length > 0) execFileSync('docker', ['rm', '-f', ...left]);
      execFileSync('docker', ['volume', 'rm', '-f', `flotilla-instance-${instance}`], { stdio: 'ignore' });
    }
  });

  it('flotilla deploy shows progress lines with the stage and elapsed time, and none without a terminal', async () => {
    const adminPort = await freePort();
    const { client } = await startFlotilla({ admin: { host: '127.0.0.1', port: adminPort, auth: 'none' } });
    try {
      const dir = mkdtempSync(join(tmpdir(), 'flt-term-'));
      mkdirSync(join(dir, 'slow'));
      writeFileSync(join(dir, 'slow', 'package.json'), '{ "type": "module" }\n');
      writeFileSync(
        join(dir, 'slow', 'slow.js'),
        `await new Promise((resolve) => setTimeout(resolve, 3000));\nexport default function slow() { return 'slow ${shortId(4)}'; }\n`,
      );
      const backend = (name: string) =>
        `  ${name}:\n    import: slow.js\n    runtimeEnv: { context: ./slow }\n    config: { numReplicas: 2 }\n    replicaOptions: { numCpus: 0.1 }\n`;
      writeFileSync(join(dir, 'one.yaml'), `backends:\n${backend('first')}endpoints: {}\n`);
      writeFileSync(join(dir, 'two.yaml'), `backends:\n${backend('first')}${backend('second')}endpoints: {}\n`);
      const address = `http://127.0.0.1:${adminPort}`;

      const plain = await run(process.execPath, [CLI, 'deploy', join(dir, 'one.yaml'), '--address', address]);
      expect(plain.stdout.trim().split('\n')).toEqual([
        'creating backend first (building image, starting 2 replicas)…',
        'deployed: 1 change',
      ]);

      inTerminal('deploy', {}, [process.execPath, CLI, 'deploy', join(dir, 'two.yaml'), '--address', address]);
      const screen = await screenOf('deploy', /deployed: 1 change/);
      expect(screen).toMatch(/creating backend second \(building image, starting 2 replicas\)…/);
      expect(screen).toMatch(/^ {2}second: starting 2 replicas, [01] ready \(\d+s\)$/m);
      // Redrawn in place: one line for the backend however many times it was polled.
      expect(screen.match(/^ {2}second: /gm)).toHaveLength(1);
    } finally {
      await client.shutdown();
    }
  });
});
