import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ESCAPED_EXIT_CODE } from '../../src/common/last-resort.js';
import { FIXTURES, testSettings } from './harness.js';

/** Runs the fixture to its end; what it wrote, its exit code, and whether its token file existed while it served. */
function run(settings: ReturnType<typeof testSettings>, how: 'throw' | 'reject') {
  const tokenFile = join(settings.stateDir, 'admin', `${settings.instance}.token`);
  const child = spawn(process.execPath, [join(FIXTURES, 'escaping-control-plane.mjs'), JSON.stringify(settings), how], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let tokenWhileServing = false;
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (output.includes('httpUrl')) tokenWhileServing ||= existsSync(tokenFile);
  });
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise<{ code: number | null; output: string; tokenWhileServing: boolean; tokenAfter: boolean }>((resolve) =>
    child.once('close', (code) => resolve({ code, output, tokenWhileServing, tokenAfter: existsSync(tokenFile) })),
  );
}

describe('the last line of defence of a control plane that owns its process', () => {
  it('logs an escaped exception or rejection with its stack, removes its token, releases its claim and exits for a supervisor', async () => {
    const settings = testSettings({ logLevel: 'info' as const, logFormat: 'json' as const });
    const thrown = await run(settings, 'throw');
    expect(thrown.output).toContain('"httpUrl"');
    expect(thrown.code).toBe(ESCAPED_EXIT_CODE);
    const line = thrown.output.split('\n').find((l) => l.includes('uncaught exception'));
    expect(line).toBeDefined();
    const entry = JSON.parse(line!) as { level: string; error: string; stack: string };
    expect(entry).toMatchObject({ level: 'error', error: 'thrown from a timer on purpose' });
    expect(entry.stack).toMatch(/escaping-control-plane\.mjs:\d+/);
    expect(thrown.output).toContain('control plane closed');
    expect([thrown.tokenWhileServing, thrown.tokenAfter]).toEqual([true, false]);

    const rejected = await run(settings, 'reject');
    expect(rejected.output).toContain('"httpUrl"');
    expect(rejected.code).toBe(ESCAPED_EXIT_CODE);
    expect(rejected.output).toMatch(/unhandled rejection.*rejected from a timer on purpose/);
    expect([rejected.tokenWhileServing, rejected.tokenAfter]).toEqual([true, false]);
  });
});
