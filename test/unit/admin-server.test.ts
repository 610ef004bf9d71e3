import { connect as connectSocket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer } from '../../src/admin/admin-server.js';
import type { LocalClient } from '../../src/client.js';
import type { Logger } from '../../src/common/logger.js';
import type { ContainerRuntime } from '../../src/runtime/container-runtime.js';

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };

/** A client whose only backend has two replicas; nothing reaches an engine. */
const client = {
  httpUrl: 'http://127.0.0.1:1',
  listReplicas: async (backend: string) => {
    if (backend !== 'b') throw Object.assign(new Error('no'), { code: 'BACKEND_NOT_FOUND' });
    return [
      { id: 'good', containerId: 'c-good' },
      { id: 'bad', containerId: 'c-bad' },
    ];
  },
  listBackends: async () => ({}),
} as unknown as LocalClient;

/** streamLogs of c-bad emits one line, then an engine error; c-good emits two lines and ends. */
function runtime(): ContainerRuntime {
  return {
    streamLogs: async (containerId: string): Promise<Readable> => {
      const stream = new PassThrough();
      setTimeout(() => {
        if (containerId === 'c-bad') {
          stream.write('before the error\n');
          setTimeout(() => stream.destroy(new Error('engine connection reset')), 20);
        } else {
          stream.write('one\ntwo');
          setTimeout(() => stream.end('\n'), 50);
        }
      }, 10);
      return stream;
    },
  } as unknown as ContainerRuntime;
}

let server: AdminServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function start(token: string | undefined, engine: ContainerRuntime = runtime()): Promise<string> {
  server = new AdminServer({ token, allowedHosts: ['flotilla.internal'] }, engine, silent);
  server.serve(client, async () => undefined, { instance: 'unit', nonce: 'n-1' });
  const { port } = await server.listen('127.0.0.1', 0);
  return `http://127.0.0.1:${port}`;
}

function raw(url: string, request: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connectSocket(Number(port), '127.0.0.1', () => socket.end(request));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

describe('the admin API log stream', () => {
  it("ends a replica's part when its engine stream fails, keeps the others, and keeps answering", async () => {
    const base = await start(undefined);
    const response = await fetch(`${base}/api/backends/b/logs`);
    expect(response.status).toBe(200);
    const lines = (await response.text()).split('\n').filter((line) => line !== '');
    expect(lines.sort()).toEqual(
      ['[bad] before the error', '[bad] (log ended: engine connection reset)', '[good] one', '[good] two'].sort(),
    );
    expect((await fetch(`${base}/api/health`)).status).toBe(200);
  });
});

describe('the admin API log limits', () => {
  it('refuses a tail over 10,000 lines with 400, before reading any log', async () => {
    const base = await start(undefined);
    const huge = await fetch(`${base}/api/backends/b/logs?tail=100000000`);
    expect(huge.status).toBe(400);
    expect((await huge.json()).error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/at most 10000/) });
    expect((await fetch(`${base}/api/backends/b/logs?tail=10000`)).status).toBe(200);
  });

  it('follows at most 16 log streams at once and answers the next with 503 OVERLOADED', async () => {
    const base = await start(undefined, {
      streamLogs: async (_id: string, options: { follow: boolean }) => (options.follow ? new PassThrough() : new PassThrough().end()),
    } as unknown as ContainerRuntime);
    const followers = await Promise.all(Array.from({ length: 16 }, () => fetch(`${base}/api/backends/b/logs?follow=true`)));
    expect(followers.map((response) => response.status)).toEqual(Array(16).fill(200));
    const more = await fetch(`${base}/api/backends/b/logs?follow=true`);
    expect(more.status).toBe(503);
    expect((await more.json()).error.code).toBe('OVERLOADED');
    await Promise.all(followers.map((response) => response.body?.cancel()));
  });
});

describe('the admin API guards', () => {
  it('answers health with the instance and nonce', async () => {
    const base = await start('s3cret');
    const response = await fetch(`${base}/api/health`, { headers: { authorization: 'bearer s3cret' } });
    expect(await response.json()).toEqual({ status: 'ok', httpUrl: 'http://127.0.0.1:1', instance: 'unit', nonce: 'n-1' });
    expect((await fetch(`${base}/api/health`, { headers: { authorization: 'BEARER   s3cret' } })).status).toBe(200);
    expect((await fetch(`${base}/api/health`, { headers: { authorization: 'Basic s3cret' } })).status).toBe(401);
  });

  it('refuses foreign Host and Origin headers, and bodies that are not JSON, even with the token', async () => {
    const base = await start('s3cret');
    const { port } = new URL(base);
    const auth = { authorization: 'Bearer s3cret' };
    const status = async (request: string) => {
      const answer = await raw(base, request);
      return { status: Number(answer.split(' ')[1]), code: /"code":"([A-Z_]+)"/.exec(answer)?.[1] };
    };
    const head = (lines: string[]) => `${lines.join('\r\n')}\r\nauthorization: ${auth.authorization}\r\nconnection: close\r\n\r\n`;
    expect(await status(head(['GET /api/health HTTP/1.1', `Host: rebound.example:${port}`]))).toEqual({ status: 403, code: 'FORBIDDEN' });
    expect(await status(head(['GET /api/health HTTP/1.1', 'Host: flotilla.internal']))).toEqual({ status: 200, code: undefined });
    expect(await status(head(['GET /api/health HTTP/1.1', `Host: localhost:${port}`]))).toEqual({ status: 200, code: undefined });
    expect(
      await status(head(['POST /api/shutdown HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Origin: http://evil.example', 'content-length: 0'])),
    ).toEqual({ status: 403, code: 'FORBIDDEN' });
    expect(await status(head(['POST /api/shutdown HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Origin: null', 'content-length: 0']))).toEqual({
      status: 403,
      code: 'FORBIDDEN',
    });
    expect(
      await status(
        head(['POST /api/shutdown HTTP/1.1', `Host: 127.0.0.1:${port}`, 'content-type: text/plain', 'content-length: 2']) + '{}',
      ),
    ).toEqual({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    expect(await status(head(['POST /api/shutdown HTTP/1.1', `Host: 127.0.0.1:${port}`, 'content-length: 0']))).toEqual({
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });
  });

  it('answers malformed percent-encoding, request targets and request lines with 400 and stays up', async () => {
    const base = await start(undefined);
    const bad = await fetch(`${base}/api/backends/%E0%A4%A/replicas`);
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/percent-encoding/) });
    expect(await raw(base, 'GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\nconnection: close\r\n\r\n')).toMatch(/^HTTP\/1.1 400/);
    expect(await raw(base, 'GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/^HTTP\/1.1 400/);
    expect(await raw(base, '\u0000\u0001 garbage\r\n\r\n')).toMatch(/^HTTP\/1.1 400/);
    expect((await fetch(`${base}/api/health`)).status).toBe(200);
  });
});

describe('the dashboard', () => {
  const auth = { authorization: 'Bearer s3cret' };
  const json = { 'content-type': 'application/json' };

  async function code(base: string): Promise<string> {
    const response = await fetch(`${base}/api/dashboard/codes`, { method: 'POST', headers: { ...auth, ...json } });
    expect(response.status).toBe(200);
    const body = await response.json();
    expect(body.expiresInS).toBe(120);
    return body.code;
  }

  async function session(base: string, oneTime: string): Promise<Response> {
    return fetch(`${base}/api/dashboard/sessions`, { method: 'POST', headers: json, body: JSON.stringify({ code: oneTime }) });
  }

  it('serves the page and its assets, which hold no data, and answers 401 to data calls without a session', async () => {
    const base = await start('s3cret');
    const page = await fetch(`${base}/dashboard/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    expect(await page.text()).toMatch(/<title>Flotilla dashboard<\/title>/);
    expect((await fetch(`${base}/dashboard/dashboard.js`)).headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await fetch(`${base}/dashboard/dashboard.css`)).status).toBe(200);
    expect((await fetch(`${base}/dashboard/package.json`)).status).toBe(404);
    expect((await fetch(`${base}/dashboard`, { redirect: 'manual' })).status).toBe(308);
    for (const path of ['/api/overview', '/api/events', '/api/backends']) {
      const response = await fetch(`${base}${path}`);
      expect([path, response.status]).toEqual([path, 401]);
    }
    const wrong = await session(base, 'not-a-code');
    expect(wrong.status).toBe(401);
    expect((await wrong.json()).error.message).toMatch(/flotilla dashboard/);
    expect((await fetch(`${base}/api/backends`, { headers: { authorization: 'Bearer forged' } })).status).toBe(401);
  });

  it('trades a one-time code for a session that reads with Authorization only: no cookie is set or honoured', async () => {
    const base = await start('s3cret');
    const oneTime = await code(base);
    const redeemed = await session(base, oneTime);
    expect(redeemed.status).toBe(200);
    expect(redeemed.headers.get('set-cookie')).toBeNull();
    const body = await redeemed.json();
    expect(body).toEqual({ session: expect.stringMatching(/^[A-Za-z0-9_-]{32}$/), idleTimeoutS: 600, maxAgeS: 28_800 });
    expect((await session(base, oneTime)).status).toBe(401);

    const bearer = { authorization: `Bearer ${body.session}` };
    expect((await fetch(`${base}/api/backends`, { headers: bearer })).status).toBe(200);
    expect((await fetch(`${base}/api/backends/b/logs`, { headers: bearer })).status).toBe(200);
    for (const cookie of [`flotilla_dashboard_${new URL(base).port}=${body.session}`, `session=${body.session}`])
      expect((await fetch(`${base}/api/backends`, { headers: { cookie } })).status).toBe(401);

    const post = await fetch(`${base}/api/dashboard/codes`, { method: 'POST', headers: { ...bearer, ...json } });
    expect(post.status).toBe(401);
    const foreign = await fetch(`${base}/api/backends`, { headers: { ...bearer, origin: 'http://evil.example' } });
    expect(foreign.status).toBe(403);
    const crossSite = await fetch(`${base}/api/dashboard/sessions`, {
      method: 'POST',
      headers: { ...json, origin: 'http://evil.example' },
      body: JSON.stringify({ code: await code(base) }),
    });
    expect(crossSite.status).toBe(403);
  });
});
