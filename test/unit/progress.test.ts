import { describe, expect, it } from 'vitest';
import { TerminalProgress } from '../../src/cli/progress.js';

/** What a terminal shows after `output`: carriage return, erase line (ESC [2K) and newline, nothing else. */
function screen(output: string): string[] {
  const lines = [''];
  let column = 0;
  const ESC = String.fromCharCode(27);
  for (const token of output.match(new RegExp(`\\r|${ESC}\\[2K|\\n|[^\\r\\n${ESC}]+`, 'g')) ?? []) {
    const row = lines.length - 1;
    if (token === '\r') column = 0;
    else if (token === '\x1b[2K') lines[row] = '';
    else if (token === '\n') {
      lines.push('');
      column = 0;
    } else {
      const current = lines[row] ?? '';
      lines[row] = current.slice(0, column) + token + current.slice(column + token.length);
      column += token.length;
    }
  }
  return lines;
}

describe('deploy progress on a terminal', () => {
  it('redraws one line per backend in place, and leaves its last state when the step ends', () => {
    let output = '';
    const progress = new TerminalProgress(
      (text) => (output += text),
      () => 120,
    );
    progress.log('creating backend first (building image, starting 2 replicas)…');
    const first = progress.line();
    for (let second = 1; second <= 66; second++)
      first.show(`  first: building image, Step 3/7 : RUN npm ci --omit=dev --no-audit --no-fund --loglevel=warn (${second}s)`);
    first.show('  first: starting 2 replicas, 1 ready (70s)');
    first.end();
    progress.log('creating backend second (building image, starting 1 replica)…');
    const second = progress.line();
    second.show('  second: starting 1 replica, 0 ready (1s)');
    second.end();
    progress.log('deployed: 2 changes');
    expect(screen(output)).toEqual([
      'creating backend first (building image, starting 2 replicas)…',
      '  first: starting 2 replicas, 1 ready (70s)',
      'creating backend second (building image, starting 1 replica)…',
      '  second: starting 1 replica, 0 ready (1s)',
      'deployed: 2 changes',
      '',
    ]);
  });

  it('keeps the progress line below a line logged meanwhile, and cuts it to the width so that it never wraps', () => {
    let output = '';
    const progress = new TerminalProgress(
      (text) => (output += text),
      () => 40,
    );
    const step = progress.line();
    step.show(`  big: building image, Step 2/9 : ${'RUN apt-get install '.repeat(10)}(4s)`);
    progress.log('a note');
    const shown = screen(output);
    expect(shown[0]).toBe('a note');
    expect(shown[1]).toBe('  big: building image, Step 2/9 : RUN …');
    expect(shown[1]).toHaveLength(39);
  });
});
