import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadAppFile, parseAppFile } from '../../src/cli/app-file.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/spec/validation.js';
import { isFlotillaError } from '../../src/common/errors.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

function errorsOf(text: string): string[] {
  try {
    parseAppFile(text, { file: 'app.yaml', baseDir: FIXTURES });
  } catch (error) {
    if (!isFlotillaError(error, 'INVALID_ARGUMENT')) throw error;
    return error.message.split('\n');
  }
  throw new Error('expected the app file to be refused');
}

const ECHO = `backends:
  echo:
    import: handlers/echo.js:Echo
endpoints:
  echo:
    backend: echo
    route: /echo
`;

describe('parseAppFile', () => {
  it('reads the fixture app, resolving its context against the file and filling in defaults', () => {
    const spec = loadAppFile(join(FIXTURES, 'app', 'app.yaml'));
    expect(spec.backends.echo).toEqual({
      import: 'handlers/echo.js:Echo',
      definition: { kind: 'import', module: 'handlers/echo.js', exportName: 'Echo' },
      runtimeEnv: { runtime: 'node', context: join(FIXTURES, 'my-backend') },
      initArgs: ['hello'],
      config: { ...DEFAULT_BACKEND_CONFIG, numReplicas: 1, maxConcurrentQueries: 10 },
      resources: { numCpus: 0.5, memoryMb: 256, numGpus: 0, env: {} },
      replicaOptions: { numCpus: 0.5, memoryMb: 256, runtimeEnv: { runtime: 'node', context: join(FIXTURES, 'my-backend') } },
    });
    expect(spec.endpoints.echo).toEqual({ backend: 'echo', route: '/echo', methods: ['GET', 'POST'], traffic: { echo: 1 }, shadows: {} });
    expect(spec.lines).toEqual({ 'backends.echo': 3, 'endpoints.echo': 10 });
  });

  it('accepts JSON, normalizes routes and methods, and drops zero shadows', () => {
    const spec = parseAppFile(
      JSON.stringify({
        backends: { v1: { import: 'h.js:V1' }, v2: { import: 'h.js' } },
        endpoints: {
          api: { route: '/api/', methods: ['post', 'GET'], traffic: { v1: 0.25, v2: 0.75 }, shadows: { v1: 0 } },
          inner: { backend: 'v1' },
        },
      }),
    );
    expect(spec.backends.v2?.definition).toEqual({ kind: 'import', module: 'h.js', exportName: 'default' });
    expect(spec.endpoints.api).toEqual({
      backend: 'v2',
      route: '/api',
      methods: ['POST', 'GET'],
      traffic: { v1: 0.25, v2: 0.75 },
      shadows: {},
    });
    expect(spec.endpoints.inner).toEqual({ backend: 'v1', route: null, methods: ['GET'], traffic: { v1: 1 }, shadows: {} });
    const zero = parseAppFile(
      'backends: { v1: { import: a.js }, v2: { import: b.js } }\nendpoints: { api: { backend: v2, traffic: { v1: 1, v2: 0 } } }\n',
    );
    expect(zero.endpoints.api?.backend).toBe('v1');
  });

  it('carries every runtimeEnv and replicaOptions key to createBackend: an existing HTTP container', () => {
    const spec = parseAppFile(
      'backends:\n  web:\n    import: server\n    runtimeEnv: { image: web:1, port: 8080, healthPath: /healthz }\n    replicaOptions: { env: { A: b } }\nendpoints: {}\n',
    );
    const runtimeEnv = { runtime: 'node', image: 'web:1', port: 8080, healthPath: '/healthz' };
    expect(spec.backends.web).toMatchObject({ runtimeEnv, replicaOptions: { env: { A: 'b' }, runtimeEnv } });
    expect(
      parseAppFile('backends:\n  web:\n    import: server\n    runtimeEnv: { image: web:1, port: 80 }\nendpoints: {}\n').backends.web
        ?.runtimeEnv,
    ).toEqual({
      runtime: 'node',
      image: 'web:1',
      port: 80,
      healthPath: '/',
    });
  });

  it('passes every replicaOptions key the API takes, with no list of its own', () => {
    const text = 'backends:\n  w:\n    import: a.js\n    replicaOptions: { readOnlyRootfs: false, network: none }\nendpoints: {}\n';
    expect(parseAppFile(text).backends.w).toMatchObject({
      resources: { readOnlyRootfs: false, network: 'none' },
      replicaOptions: { readOnlyRootfs: false, network: 'none' },
    });
    expect(errorsOf(text.replace('network: none', 'network: host'))).toEqual([
      "app.yaml:4: backends.w.replicaOptions.network: must be 'isolated' or 'none' (no network; unix transport only), got \"host\"",
    ]);
  });

  it('takes empty backends and endpoints as "nothing should run"', () => {
    expect(parseAppFile('backends: {}\nendpoints:\n')).toMatchObject({ backends: {}, endpoints: {} });
  });
});

describe('app file errors name the file, the line and the key path', () => {
  it('a YAML syntax error', () => {
    expect(errorsOf('backends:\n  echo: [1,\nendpoints: {}\n')).toEqual([expect.stringMatching(/^app\.yaml:3: YAML syntax: /)]);
  });

  it('a duplicate key', () => {
    expect(errorsOf(`${ECHO}  echo:\n    backend: echo\n`)).toEqual(['app.yaml:8: YAML syntax: Map keys must be unique']);
  });

  it('an unknown key, at the key', () => {
    expect(errorsOf(ECHO.replace('    import:', '    replicas: 2\n    import:'))).toEqual([
      'app.yaml:3: backends.echo.replicas: unknown key; allowed: import, runtimeEnv, initArgs, config, replicaOptions',
    ]);
    expect(
      errorsOf(ECHO.replace('    import: handlers/echo.js:Echo', '    import: handlers/echo.js:Echo\n    config:\n      replicas: 2'))[0],
    ).toMatch(/^app\.yaml:5: backends\.echo\.config\.replicas: unknown key; allowed: numReplicas, /);
  });

  it('a value out of range, with the validator rule', () => {
    const text = ECHO.replace(
      '    import: handlers/echo.js:Echo',
      '    import: handlers/echo.js:Echo\n    config:\n      numReplicas: 5000',
    );
    expect(errorsOf(text)).toEqual(['app.yaml:5: backends.echo.config.numReplicas: must be an integer from 0 to 1000, got 5000']);
  });

  it('a wrong type', () => {
    expect(errorsOf(ECHO.replace('handlers/echo.js:Echo', '[a, b]'))).toEqual([
      "app.yaml:3: backends.echo.import: must be an import path such as 'handlers/echo.js:Echo' (a file in the image, and its export)",
    ]);
    expect(errorsOf(ECHO.replace('route: /echo', 'route: /echo\n    methods: GET'))).toEqual([
      'app.yaml:8: endpoints.echo.methods: must be a list of HTTP methods, e.g. [GET], not the string "GET"',
    ]);
  });

  it('bad values in replicaOptions, runtimeEnv, methods and names', () => {
    const text = `backends:
  echo:
    import: handlers/echo.js:Echo
    runtimeEnv: { context: ./nowhere }
    replicaOptions:
      numCpus: -1
      env: { FLOTILLA_X: y }
  bad.name:
    import: x.js
endpoints:
  echo:
    backend: echo
    methods: [GET, FETCH]
`;
    expect(errorsOf(text)).toEqual([
      `app.yaml:4: backends.echo.runtimeEnv.context: './nowhere' is not a directory (resolved to ${join(FIXTURES, 'nowhere')})`,
      'app.yaml:6: backends.echo.replicaOptions.numCpus: must be a number of CPUs from 0 to 1024 (fractions allowed), got -1',
      "app.yaml:7: backends.echo.replicaOptions.env.FLOTILLA_X: 'FLOTILLA_X' is set by Flotilla and cannot be overridden",
      expect.stringMatching(/^app\.yaml:8: backends\["bad\.name"\]: backend name "bad\.name" is invalid/),
      expect.stringMatching(/^app\.yaml:13: endpoints\.echo\.methods\[1\]: "FETCH" is not an HTTP method/),
    ]);
  });

  it('every issue as data: the key path as a list, and the line', () => {
    let thrown: unknown;
    try {
      parseAppFile(ECHO.replace('route: /echo', 'route: /echo\n    methods: [GET,\n      FETCH]'), { file: 'app.yaml' });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: {
        issues: [
          { file: 'app.yaml', line: 9, path: ['endpoints', 'echo', 'methods', 1], message: expect.stringMatching(/^"FETCH" is not/) },
        ],
      },
    });
  });

  it('runtimeEnv and replicaOptions problems, at the line of the key in the file', () => {
    const text = `backends:
  web:
    import: server
    runtimeEnv:
      port: 8080
      healthPath: /healthz
      imagee: web:1
    replicaOptions:
      numCpus: 1
      cpuShares: 2
      runtimeEnv: { image: web:1 }
endpoints: {}
`;
    expect(errorsOf(text)).toEqual([
      'app.yaml:5: backends.web.runtimeEnv.port: is the port of an existing HTTP container; set runtimeEnv.image too',
      expect.stringMatching(
        /^app\.yaml:7: backends\.web\.runtimeEnv\.imagee: unknown key; allowed: runtime, context, packages, dockerfile, buildArgs, image, port, healthPath, pip, apt$/,
      ),
      expect.stringMatching(/^app\.yaml:10: backends\.web\.replicaOptions\.cpuShares: unknown key; allowed: runtimeEnv, numCpus, /),
      'app.yaml:11: backends.web.replicaOptions.runtimeEnv: goes beside replicaOptions in an app file: backends.web.runtimeEnv',
    ]);
  });

  it('a context that is the filesystem root', () => {
    expect(errorsOf(ECHO.replace('handlers/echo.js:Echo', 'x.js\n    runtimeEnv: { context: / }'))).toEqual([
      "app.yaml:4: backends.echo.runtimeEnv.context: '/' is the filesystem root; a context is a directory of the backend's own files",
    ]);
  });

  it('a runtimeEnv combination that cannot be built', () => {
    expect(errorsOf(ECHO.replace('handlers/echo.js:Echo', 'x.js\n    runtimeEnv: { dockerfile: Dockerfile }'))).toEqual([
      'app.yaml:4: backends.echo.runtimeEnv.dockerfile: needs a context: the directory the Dockerfile is built from',
    ]);
  });

  it('an endpoint naming a backend the file does not define', () => {
    expect(errorsOf(ECHO.replace('backend: echo', 'backend: ech0'))).toEqual([
      "app.yaml:6: endpoints.echo.backend: backend 'ech0' is not defined under backends",
    ]);
    expect(errorsOf(`${ECHO}    traffic: { echo: 0.5, v2: 0.5 }\n    shadows: { v3: 0.1 }\n`)).toEqual([
      "app.yaml:8: endpoints.echo.traffic.v2: backend 'v2' is not defined under backends",
      "app.yaml:9: endpoints.echo.shadows.v3: backend 'v3' is not defined under backends",
    ]);
  });

  it('traffic weights that do not sum to 1, and a bad shadow proportion', () => {
    expect(errorsOf(`${ECHO}    traffic:\n      echo: 0.5\n    shadows: { echo: 2 }\n`)).toEqual([
      'app.yaml:8: endpoints.echo.traffic: weights must sum to 1, they sum to 0.5',
      'app.yaml:10: endpoints.echo.shadows.echo: must be a number from 0 to 1, got 2',
    ]);
    expect(errorsOf(`${ECHO}    traffic: { echo: -1 }\n`)).toEqual([
      'app.yaml:8: endpoints.echo.traffic.echo: must be a number >= 0, got -1',
    ]);
  });

  it('missing keys, and two endpoints on one route', () => {
    expect(errorsOf('backends:\n  echo: {}\nendpoints:\n  a: { route: /a }\n')).toEqual([
      'app.yaml:2: backends.echo: import is required',
      'app.yaml:4: endpoints.a: needs a backend, or traffic over backends',
    ]);
    expect(errorsOf(`${ECHO}  other:\n    backend: echo\n    route: /echo/\n`)).toEqual([
      "app.yaml:10: endpoints.other.route: route '/echo' is already used by endpoints.echo",
    ]);
    expect(errorsOf('backends: {}\n')).toEqual(['app.yaml:1: endpoints is required']);
    expect(errorsOf('')).toEqual(['app.yaml:1: must be a mapping of backends, endpoints']);
  });

  it('an alias bomb, as a file:line issue at the first alias', () => {
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (let n = 1; n < 9; n++)
      levels.push(
        `${String.fromCharCode(97 + n)}: &${String.fromCharCode(97 + n)} [${Array(9)
          .fill(`*${String.fromCharCode(96 + n)}`)
          .join(', ')}]`,
      );
    const issues = errorsOf(`${levels.join('\n')}\nbackends: {}\nendpoints: {}\n`);
    expect(issues).toEqual([expect.stringMatching(/^app\.yaml:2: YAML: Excessive alias count/)]);
  });

  it('more than 1000 backends or endpoints', () => {
    const backends = Array.from({ length: 1001 }, (_, n) => `  b${n}:\n    import: handlers/echo.js:Echo`).join('\n');
    expect(errorsOf(`backends:\n${backends}\nendpoints: {}\n`)).toEqual([
      'app.yaml:1: backends: at most 1000 backends per app file, not 1001',
    ]);
  });

  it('a file that cannot be read', () => {
    expect(() => loadAppFile(join(FIXTURES, 'app', 'missing.yaml'))).toThrow(/cannot read app file .*missing\.yaml/);
  });

  it('a file that is not a regular file (a directory, a FIFO), or over 4 MiB, unread', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-app-'));
    const fifo = join(dir, 'app.yaml');
    execFileSync('mkfifo', [fifo]);
    expect(() => loadAppFile(dir)).toThrow(/the app file .* is not a regular file/);
    expect(() => loadAppFile(fifo)).toThrow(/the app file .*app\.yaml is not a regular file/);
    const big = join(dir, 'big.yaml');
    writeFileSync(big, `# ${'x'.repeat(4 * 1024 * 1024)}\n`);
    expect(() => loadAppFile(big)).toThrow(/has 4194307 bytes; at most 4194304 are read/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('the compose example app file', () => {
  it('parses', () => {
    const spec = loadAppFile(join(import.meta.dirname, '..', '..', 'examples', 'compose', 'app', 'app.yaml'));
    expect(Object.keys(spec.backends)).toEqual(['hello']);
    expect(spec.endpoints.hello).toMatchObject({ route: '/hello' });
  });
});
