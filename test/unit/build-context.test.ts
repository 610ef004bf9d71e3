import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { checkContextDir, contextFilter, packContext, type ContextPart } from '../../src/runtime/build-context.js';
import { contextDigest, ImageBuilder } from '../../src/runtime/image-builder.js';
import { FakeRuntime } from './fakes/fake-runtime.js';
import { ManualClock } from './fakes/manual-clock.js';
import { silentLogger } from './fakes/silent-logger.js';

function context(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'flt-ctx-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

const options = { salt: '', maxBytes: 0, what: "backend 'b'" };

async function pack(parts: ContextPart[], salt = ''): Promise<{ hash: string; entries: string[] }> {
  const packed = await packContext(parts, { ...options, salt });
  try {
    const file = join(mkdtempSync(join(tmpdir(), 'flt-tar-')), 'out.tar');
    await pipeline(packed.open(), createWriteStream(file));
    const entries = execFileSync('tar', ['-tvf', file], { encoding: 'utf8' }).trim().split('\n');
    return { hash: packed.hash, entries };
  } finally {
    packed.dispose();
  }
}

describe('packContext', () => {
  it('gives the same hash for the same files, whatever their times, and another for other contents or salt', async () => {
    const a = context({ 'x.js': 'one', 'sub/y.js': 'two' });
    const b = context({ 'sub/y.js': 'two', 'x.js': 'one' });
    utimesSync(join(b, 'x.js'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    const first = await pack([{ dir: a, prefix: 'app' }]);
    expect(first.hash).toMatch(/^[0-9a-f]{16}$/);
    expect((await pack([{ dir: b, prefix: 'app' }])).hash).toBe(first.hash);
    expect((await pack([{ dir: a, prefix: 'app' }], '{"dockerfile":"D"}')).hash).not.toBe(first.hash);
    writeFileSync(join(b, 'x.js'), 'ONE');
    expect((await pack([{ dir: b, prefix: 'app' }])).hash).not.toBe(first.hash);
  });

  it('packs each part under its prefix, owned by root with normalized modes, honouring .dockerignore', async () => {
    const staging = context({ Dockerfile: 'FROM x' });
    const app = context({ 'keep.js': 'k', 'secret.env': 's', 'logs/a.log': 'l', '.dockerignore': 'secret.env\nlogs\n' });
    const { entries } = await pack([
      { dir: staging, prefix: '' },
      { dir: app, prefix: 'app', ignore: contextFilter(app, [], () => false) },
    ]);
    const names = entries.map((line) => line.split(/\s+/).pop());
    expect(names).toEqual(expect.arrayContaining(['Dockerfile', 'app/keep.js', 'app/.dockerignore']));
    expect(names.filter((name) => /secret|logs/.test(name ?? ''))).toEqual([]);
    expect(entries.every((line) => line.includes(' 0/0 ') && line.includes('1970-01-01'))).toBe(true);
    expect(entries.find((line) => line.endsWith(' app/keep.js'))).toMatch(/^-rw-r--r-- /);
  });

  it('refuses a context larger than the limit, naming the setting, and leaves no temporary tar', async () => {
    const big = context({ 'weights.bin': 'x'.repeat(64 * 1024) });
    const privateTmp = mkdtempSync(join(tmpdir(), 'flt-tmp-'));
    const sharedTmp = process.env.TMPDIR;
    process.env.TMPDIR = privateTmp;
    try {
      await expect(packContext([{ dir: big, prefix: 'app' }], { ...options, maxBytes: 16 * 1024 })).rejects.toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringMatching(
          /^the build context of backend 'b' is larger than FLOTILLA_MAX_CONTEXT_MB \(option maxContextMb, 0\.015625 MB\)/,
        ),
        details: { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'context'], message: expect.any(String) }] },
      });
      expect(readdirSync(privateTmp)).toEqual([]);
    } finally {
      if (sharedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = sharedTmp;
    }
    const packed = await packContext([{ dir: big, prefix: 'app' }], { ...options, maxBytes: 1024 * 1024 });
    expect(packed.bytes).toBeGreaterThan(64 * 1024);
    packed.dispose();
  });
});

describe('checkContextDir', () => {
  it('refuses the filesystem root and the home directory, and accepts a directory of files', () => {
    const refused = (dir: string, what: RegExp) =>
      expect(() => checkContextDir(dir)).toThrow(
        expect.objectContaining({
          code: 'INVALID_ARGUMENT',
          message: expect.stringMatching(what),
          details: { issues: [expect.objectContaining({ path: ['replicaOptions', 'runtimeEnv', 'context'] })] },
        }),
      );
    refused('/', /is the filesystem root/);
    refused(join(homedir(), '.'), /is the home directory/);
    expect(() => checkContextDir(context({ 'a.js': '' }))).not.toThrow();
  });
});

describe('contextDigest', () => {
  const builder = new ImageBuilder(new FakeRuntime(new ManualClock()), loadConfig({ instance: 't' }), silentLogger);

  it('is the digest the image build computes while packing the context, so a build packs it once', async () => {
    const dir = context({ 'handler.js': 'one', 'sub/lib.js': 'two', 'package.json': '{"type":"module"}' });
    const source = { backend: 'b', contextDir: dir };
    const built = await builder.backendImage(source);
    expect(built.contextDigest).toMatch(/^[0-9a-f]{16}$/);
    expect(await contextDigest(source)).toBe(built.contextDigest);
    utimesSync(join(dir, 'handler.js'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    expect(await contextDigest(source)).toBe(built.contextDigest);
    writeFileSync(join(dir, 'handler.js'), 'ONE');
    const edited = await builder.backendImage(source);
    expect(edited.contextDigest).not.toBe(built.contextDigest);
    expect(await contextDigest(source)).toBe(edited.contextDigest);
    expect(edited.image).not.toBe(built.image);
  });

  it('leaves out what the build does not send: ignored files, and node_modules where dependencies are installed', async () => {
    const dir = context({ 'handler.js': 'h', '.dockerignore': 'notes.txt\n', 'package.json': '{"dependencies":{"x":"1"}}' });
    const source = { backend: 'b', contextDir: dir };
    const before = await contextDigest(source);
    writeFileSync(join(dir, 'notes.txt'), 'scratch');
    mkdirSync(join(dir, 'node_modules', 'x'), { recursive: true });
    writeFileSync(join(dir, 'node_modules', 'x', 'index.js'), 'built on the host');
    expect(await contextDigest(source)).toBe(before);
    expect((await builder.backendImage(source)).contextDigest).toBe(before);
  });
});
