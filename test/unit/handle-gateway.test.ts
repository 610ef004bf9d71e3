import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HandleGateway, type GatewayHandle } from '../../src/admin/handle-gateway.js';
import { PROTOCOL } from '../../src/replica/protocol.js';
import { FlotillaError } from '../../src/common/errors.js';
import { silentLogger } from './fakes/silent-logger.js';

function post(socketPath: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'POST', path: PROTOCOL.handleCallPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('HandleGateway', () => {
  const runDir = mkdtempSync(join(tmpdir(), 'flt-gw-'));
  const hostDir = join(runDir, 'r1');
  const socketPath = join(hostDir, PROTOCOL.handleSocketName);
  const calls: unknown[] = [];
  const handle: GatewayHandle = {
    remote: async (input) => {
      calls.push({ input });
      if (input === 'slow') throw new FlotillaError('REQUEST_TIMEOUT', 'no answer in time');
      return { echoed: input };
    },
    callArguments: async (args, kwargs) => {
      calls.push({ args, kwargs });
      return args.length;
    },
  };
  const gateway = new HandleGateway({ runDir, getHandle: () => handle, logger: silentLogger });
  mkdirSync(hostDir);
  writeFileSync(join(hostDir, PROTOCOL.entryName), JSON.stringify({ handleToken: 'right' }));
  gateway.scan();
  const token = { [PROTOCOL.handleTokenHeader]: 'right' };

  afterEach(() => {
    calls.length = 0;
  });

  it("calls the endpoint with the replica's token, and refuses a missing or forged one without calling", async () => {
    expect(await post(socketPath, token, { endpoint: 'm', input: { json: [1] } })).toEqual({
      status: 200,
      body: { output: { json: { echoed: [1] } } },
    });
    expect(await post(socketPath, token, { endpoint: 'm', args: [1, 2], kwargs: { k: 3 } })).toEqual({
      status: 200,
      body: { output: { json: 2 } },
    });
    expect(calls).toEqual([{ input: [1] }, { args: [1, 2], kwargs: { k: 3 } }]);
    calls.length = 0;
    expect(await post(socketPath, {}, { endpoint: 'm' })).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    expect(await post(socketPath, { [PROTOCOL.handleTokenHeader]: 'wrong' }, { endpoint: 'm' })).toMatchObject({ status: 403 });
    expect(calls).toEqual([]);
  });

  it("refuses a malformed call and answers the call's own error with its status", async () => {
    expect(await post(socketPath, token, { input: { json: 1 } })).toMatchObject({
      status: 400,
      body: { error: { code: 'INVALID_ARGUMENT' } },
    });
    expect(await post(socketPath, token, { endpoint: 'm', input: { json: 1 }, args: [] })).toMatchObject({ status: 400 });
    expect(await post(socketPath, token, { endpoint: 'm', input: { text: 'slow' } })).toMatchObject({
      status: 504,
      body: { error: { code: 'REQUEST_TIMEOUT' } },
    });
  });

  it("closes a replica's socket once its directory is gone", () => {
    rmSync(hostDir, { recursive: true });
    gateway.scan();
    gateway.close();
    return expect(post(socketPath, token, { endpoint: 'm' })).rejects.toThrow();
  });
});
