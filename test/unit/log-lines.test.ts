import { describe, expect, it } from 'vitest';
import { readableLogLine, ReadableLogs } from '../../src/cli/log-lines.js';

const STACK = 'TypeError: bad input\n    at handler (/app/echo.js:3:11)\n    at serveRequest (/opt/flotilla/replica/main.js:120:5)';

describe('readable replica log lines', () => {
  it('shows a handler error as level, event, type and message, the request as fields, and the stack below', () => {
    const line = `2026-12-08T04:00:00.123Z [b3a20335] ${JSON.stringify({
      level: 'error',
      component: 'replica',
      event: 'handler_error',
      type: 'TypeError',
      message: 'bad input',
      stack: STACK,
      request: { method: 'POST', path: '/echo', id: 'req-7' },
    })}`;
    expect(readableLogLine(line).split('\n')).toEqual([
      '2026-12-08T04:00:00.123Z [b3a20335] error handler_error TypeError: bad input  request.method=POST request.path=/echo request.id=req-7',
      '    at handler (/app/echo.js:3:11)',
      '    at serveRequest (/opt/flotilla/replica/main.js:120:5)',
    ]);
  });

  it('indents a Python traceback and leaves lines that are not JSON objects as they are', () => {
    const traceback = 'Traceback (most recent call last):\n  File "/app/model.py", line 4, in predict\nValueError: no';
    expect(readableLogLine(`[ab] ${JSON.stringify({ event: 'handler_error', message: 'no', traceback })}`).split('\n')).toEqual([
      '[ab] info handler_error no',
      '    Traceback (most recent call last):',
      '  File "/app/model.py", line 4, in predict',
      '    ValueError: no',
    ]);
    expect(readableLogLine('2026-12-08T04:00:00.123Z [ab] listening on 8000')).toBe('2026-12-08T04:00:00.123Z [ab] listening on 8000');
    expect(readableLogLine('[ab] 42')).toBe('[ab] 42');
  });

  it('waits for the rest of a line split across chunks, a character split too', () => {
    const out: string[] = [];
    const logs = new ReadableLogs((text) => out.push(text));
    const bytes = Buffer.from(`[ab] ${JSON.stringify({ level: 'info', event: 'ready', module: 'é.js' })}\n[ab] plain`);
    const cut = bytes.indexOf(0xa9);
    logs.push(bytes.subarray(0, cut));
    logs.push(bytes.subarray(cut));
    logs.end();
    expect(out.join('')).toBe('[ab] info ready  module=é.js\n[ab] plain\n');
  });
});
