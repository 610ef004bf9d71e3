import { describe, expect, it } from 'vitest';
import { defaultFrontDoorWorkers, frontDoorWorkerEnv, loadConfig } from '../../src/config/config.js';

describe('loadConfig', () => {
  it('runs replicas on a Swarm only with a registry, and always over tcp there', () => {
    expect(loadConfig({}).runtime).toBe('docker');
    expect(() => loadConfig({ runtime: 'swarm' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('swarmRegistry') }),
    );
    expect(loadConfig({ runtime: 'swarm', swarmRegistry: 'registry:5000', transport: 'unix' })).toMatchObject({
      transport: 'tcp',
      swarmNetwork: 'flotilla-replicas',
    });
    expect(() => loadConfig({ swarmRegistry: 'https://registry' })).toThrow(/host\[:port\]/);
  });

  it('applies overrides over defaults', () => {
    const config = loadConfig({ http: { port: 0 }, transport: 'tcp', instance: 'ci-1' });
    expect(config.http).toMatchObject({ host: '127.0.0.1', port: 0, maxBodyBytes: 10 * 1024 * 1024 });
    expect(config.transport).toBe('tcp');
    expect(config.instance).toBe('ci-1');
  });

  it('bounds the front door by default, and refuses trusted proxies that are not IP addresses', () => {
    expect(loadConfig().http).toMatchObject({
      maxBufferedBytes: 128 * 1024 * 1024,
      maxConnections: 4096,
      headersTimeoutS: 30,
      bodyTimeoutS: 60,
      trustedProxies: '',
    });
    expect(loadConfig({ http: { trustedProxies: '10.0.0.1, ::1' } }).http.trustedProxies).toBe('10.0.0.1, ::1');
    expect(() => loadConfig({ http: { trustedProxies: 'proxy.example' } })).toThrow(/trustedProxies: must be a comma-separated list/);
  });

  it.each([
    [{ transport: 'udp' }],
    [{ instance: 'Has Spaces' }],
    [{ replicaUser: 'root' }],
    [{ replicaUser: '0:0' }],
    [{ stateDir: '' }],
    [{ stateDir: 'relative/dir' }],
    [{ nosuchkey: 1 }],
    [{ admin: { auth: 'maybe' } }],
    [{ admin: { allowedHosts: 'a b' } }],
  ])('refuses %j with INVALID_ARGUMENT', (overrides) => {
    expect(() => loadConfig(overrides as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('loadConfig precedence', () => {
  it('lets explicit overrides win over FLOTILLA_* variables', () => {
    const previous = process.env.FLOTILLA_BASE_IMAGE;
    process.env.FLOTILLA_BASE_IMAGE = 'from-env:1';
    try {
      expect(loadConfig().baseImage).toBe('from-env:1');
      expect(loadConfig({ baseImage: 'explicit:2' }).baseImage).toBe('explicit:2');
    } finally {
      if (previous === undefined) delete process.env.FLOTILLA_BASE_IMAGE;
      else process.env.FLOTILLA_BASE_IMAGE = previous;
    }
  });
});

describe('build settings', () => {
  it('default to no CA, npm default registry and debian:bookworm-slim for Python', () => {
    expect(loadConfig({ buildCaFile: '', npmRegistry: '', pythonBaseImage: 'debian:bookworm-slim' })).toMatchObject({
      buildCaFile: '',
      npmRegistry: '',
      pythonBaseImage: 'debian:bookworm-slim',
    });
  });

  it('refuse a CA file that does not exist and a registry that is not a URL', () => {
    expect(() => loadConfig({ buildCaFile: '/nonexistent/ca.pem' })).toThrow(/buildCaFile: must be the path of an existing CA file/);
    expect(() => loadConfig({ npmRegistry: 'registry.local' })).toThrow(/npmRegistry: must be an http\(s\) URL/);
  });
});

describe('healthCheckPeriodS', () => {
  it('takes whole seconds from 1, from the environment too', () => {
    expect(() => loadConfig({ healthCheckPeriodS: 0 })).toThrow(/healthCheckPeriodS.*from 1 to 3600/);
    const previous = process.env.FLOTILLA_HEALTH_CHECK_PERIOD_S;
    process.env.FLOTILLA_HEALTH_CHECK_PERIOD_S = '5';
    try {
      expect(loadConfig().healthCheckPeriodS).toBe(5);
    } finally {
      if (previous === undefined) delete process.env.FLOTILLA_HEALTH_CHECK_PERIOD_S;
      else process.env.FLOTILLA_HEALTH_CHECK_PERIOD_S = previous;
    }
  });
});

describe('admin settings', () => {
  it('take token or none, and host names separated by commas', () => {
    expect(loadConfig({ admin: { auth: 'none' } }).admin.auth).toBe('none');
    expect(loadConfig({ admin: { allowedHosts: 'flotilla,admin.example.com' } }).admin.allowedHosts).toBe('flotilla,admin.example.com');
  });
});

describe('http.publicUrl', () => {
  it('is empty by default and takes an http(s) URL only', () => {
    expect(loadConfig().http.publicUrl).toBe('');
    expect(loadConfig({ http: { publicUrl: 'http://127.0.0.1:18000' } }).http.publicUrl).toBe('http://127.0.0.1:18000');
    expect(() => loadConfig({ http: { publicUrl: '127.0.0.1:18000' } })).toThrow(/http\.publicUrl: must be an http\(s\) URL/);
  });
});

describe('http.workers', () => {
  it('picks half the cores, 1 to 8, when 0 (the default), and takes an explicit count up to 64', () => {
    expect([1, 2, 3, 4, 16, 64].map((cores) => defaultFrontDoorWorkers(cores))).toEqual([1, 1, 1, 2, 8, 8]);
    expect(loadConfig().http.workers).toBe(defaultFrontDoorWorkers());
    expect(loadConfig({ http: { workers: 3 } }).http.workers).toBe(3);
    process.env.FLOTILLA_HTTP_WORKERS = '2';
    try {
      expect(loadConfig().http.workers).toBe(2);
    } finally {
      delete process.env.FLOTILLA_HTTP_WORKERS;
    }
    expect(() => loadConfig({ http: { workers: 65 } })).toThrow(/http.workers \(FLOTILLA_HTTP_WORKERS\) must be at most 64, not 65/);
    expect(() => loadConfig({ http: { workers: -1 } })).toThrow(/http.workers/);
  });

  it('refuses a body budget per worker below maxBodyBytes, which would refuse those bodies 503 forever', () => {
    const mib = 1024 * 1024;
    expect(() => loadConfig({ http: { workers: 64 } })).toThrow(
      /each of the 64 front-door workers holds at most maxBufferedBytes \/ workers = 2097152 body bytes, less than http.maxBodyBytes \(10485760\).*at least 671088640/,
    );
    expect(() => loadConfig({ http: { workers: 8, maxBodyBytes: 17 * mib } })).toThrow(/INVALID_ARGUMENT|http.maxBodyBytes/);
    expect(loadConfig({ http: { workers: 8, maxBodyBytes: 16 * mib } }).http.maxBodyBytes).toBe(16 * mib);
    expect(loadConfig({ http: { workers: 64, maxBufferedBytes: 640 * mib } }).http.workers).toBe(64);
    expect(loadConfig({ http: { workers: 1, maxBufferedBytes: mib } }).http.maxBufferedBytes).toBe(mib);
  });

  it('starts workers with none of the secrets of the environment', () => {
    process.env.FLOTILLA_ADMIN_TOKEN = 'secret-token';
    process.env.FLOTILLA_NPM_REGISTRY = 'https://user:pass@registry.example/';
    try {
      const env = frontDoorWorkerEnv();
      expect(Object.keys(env).every((name) => ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS'].includes(name))).toBe(true);
      expect(JSON.stringify(env)).not.toMatch(/secret-token|user:pass/);
      expect(env.PATH).toBe(process.env.PATH);
    } finally {
      delete process.env.FLOTILLA_ADMIN_TOKEN;
      delete process.env.FLOTILLA_NPM_REGISTRY;
    }
  });
});
