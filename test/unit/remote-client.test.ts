import { mkdtempSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, streamBackendLogs } from '../../src/admin/remote-client.js';
import { generateToken } from '../../src/admin/token-file.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = undefined;
});

async function serveWith(listener: RequestListener): Promise<string> {
  server = createServer(listener);
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const health = JSON.stringify({ status: 'ok', httpUrl: 'http://127.0.0.1:1', instance: 'x', nonce: 'n' });

describe('the remote client', () => {
  it("keeps the server's error code, status, message and details, even a code it does not know", async () => {
    const address = await serveWith((req, res) => {
      if (req.url === '/api/health') return res.end(health);
      res.writeHead(418, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'FROM_A_NEWER_SERVER', message: 'try later', details: { a: 1 } } }));
    });
    const client = await connect({ address, token: 't' });
    await expect(client.listBackends()).rejects.toMatchObject({
      code: 'FROM_A_NEWER_SERVER',
      status: 418,
      message: 'try later',
      details: { a: 1 },
    });
  });

  it('reports ADMIN_UNREACHABLE when nothing, or something that is not Flotilla, answers', async () => {
    const address = await serveWith((_req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>bad gateway</html>');
    });
    await expect(connect({ address, token: 't' })).rejects.toMatchObject({ code: 'ADMIN_UNREACHABLE', status: 503 });
    await new Promise((resolve) => server!.close(resolve));
    server = undefined;
    await expect(connect({ address, token: 't' })).rejects.toMatchObject({
      code: 'ADMIN_UNREACHABLE',
      message: expect.stringMatching(/no Flotilla admin API answers at .*ECONNREFUSED/),
    });
  });

  it("sends the instance's stored token to an address on this machine, and JSON on every call with a body", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'flt-rc-'));
    const token = generateToken(stateDir, 'mine');
    const seen: Array<{ url?: string; authorization?: string; type?: string }> = [];
    const address = await serveWith((req, res) => {
      seen.push({ url: req.url, authorization: req.headers.authorization, type: req.headers['content-type'] });
      res.end(req.url === '/api/health' ? health : '{}');
    });
    const client = await connect({ address, instance: 'mine', stateDir });
    await client.shutdown();
    expect(seen).toEqual([
      { url: '/api/health', authorization: `Bearer ${token}` },
      { url: '/api/shutdown', authorization: `Bearer ${token}`, type: 'application/json' },
    ]);
  });

  it('streams a log as it is written', async () => {
    const address = await serveWith((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('[a] first\n');
      setTimeout(() => res.end('[a] second\n'), 300);
    });
    const stream = await streamBackendLogs({ address, token: 't' }, 'b', { follow: true, tail: '1' });
    const started = Date.now();
    const chunks: Array<{ text: string; at: number }> = [];
    for await (const chunk of stream) chunks.push({ text: String(chunk), at: Date.now() - started });
    expect(chunks.map((c) => c.text).join('')).toBe('[a] first\n[a] second\n');
    expect(chunks[0]!.at).toBeLessThan(200);
  });
});
