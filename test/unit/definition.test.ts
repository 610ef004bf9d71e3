import { describe, expect, it } from 'vitest';
import {
  acceptBatch,
  checkSupports,
  parseShippable,
  shippedFile,
  shippedModuleText,
  summarize,
  toShippable,
  type PickledDefinition,
} from '../../src/spec/definition.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/spec/validation.js';

function handleRequest() {
  return 'hello world';
}

class RequestHandler {
  constructor(private readonly msg: string) {}
  call() {
    return this.msg;
  }
}

describe('toShippable', () => {
  it('ships a function as source', () => {
    const shipped = toShippable(handleRequest);
    expect(shipped).toMatchObject({ kind: 'function', name: 'handleRequest' });
    expect(shippedModuleText(shipped)).toMatch(/^const backend = \(function handleRequest/);
  });

  it('ships a class as source', () => {
    expect(toShippable(RequestHandler)).toMatchObject({
      kind: 'class',
      name: 'RequestHandler',
      hasReconfigure: false,
      acceptsBatch: false,
    });
  });

  it('notes reconfigure and batch support, and keeps the batch mark in the shipped module', () => {
    class Tunable {
      reconfigure() {}
      call() {}
    }
    expect(toShippable(Tunable)).toMatchObject({ hasReconfigure: true });
    const batched = toShippable(acceptBatch((requests: Request[]) => requests.map(() => 1)));
    expect(batched).toMatchObject({ acceptsBatch: true });
    expect(shippedModuleText(batched)).toMatch(/backend\.acceptsBatch = true;/);
  });

  it('refuses configs a shipped definition cannot honour', () => {
    const config = { ...DEFAULT_BACKEND_CONFIG };
    expect(() => checkSupports('b', toShippable(handleRequest), { ...config, userConfig: { x: 1 } }, 'node')).toThrow(/reconfigure/);
    expect(() => checkSupports('b', toShippable(RequestHandler), { ...config, userConfig: 1 }, 'node')).toThrow(
      /class RequestHandler has none/,
    );
    expect(() => checkSupports('b', toShippable(handleRequest), { ...config, maxBatchSize: 4 }, 'node')).toThrow(/serve.acceptBatch/);
    expect(() => checkSupports('b', toShippable('x.js:X'), { ...config, userConfig: 1, maxBatchSize: 4 }, 'node')).not.toThrow();
  });

  it('ships arrow functions', () => {
    expect(toShippable(async (request: Request) => request.url)).toMatchObject({ kind: 'function' });
  });

  it('parses import paths without resolving them', () => {
    expect(toShippable('handlers/echo.js:Echo')).toEqual({ kind: 'import', module: 'handlers/echo.js', exportName: 'Echo' });
    expect(toShippable('model.js')).toEqual({ kind: 'import', module: 'model.js', exportName: 'default' });
    expect(shippedModuleText(toShippable('model.js'))).toBeUndefined();
  });

  it.each([
    ['a bound function', handleRequest.bind(null), /bound function/],
    ['a native function', Math.max as never, /native code/],
    [
      'a method shorthand',
      {
        call(request: Request) {
          return request.url;
        },
      }.call,
      /standalone expression/,
    ],
  ])('refuses %s', (_what, definition, message) => {
    expect(() => toShippable(definition)).toThrow(
      expect.objectContaining({ code: 'UNSHIPPABLE_DEFINITION', message: expect.stringMatching(message) }),
    );
  });

  it('refuses malformed import paths and non-functions', () => {
    expect(() => toShippable('a.js:not-an-identifier')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => toShippable(42 as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('code from esbuild-based runners (tsx)', () => {
  const evaluate = (text: string) =>
    new Function(text.replace('export default backend;', 'return backend;'))() as new () => { call(): string };

  it("defines esbuild's __name helper for a shipped class that calls it", () => {
    const source = 'class Counter{static{__name(this,"Counter")}call(){const step=__name(n=>n+1,"step");return `${step(1)} ${step.name}`}}';
    const text = shippedModuleText({ kind: 'class', name: 'Counter', source, hasReconfigure: false, acceptsBatch: false }) as string;
    const Counter = evaluate(text);
    expect(Counter.name).toBe('Counter');
    expect(new Counter().call()).toBe('2 step');
  });

  it('adds nothing to code that does not call it', () => {
    expect(shippedModuleText(toShippable(handleRequest))).not.toMatch(/__name/);
  });
});

describe('pickled Python definitions', () => {
  const pickled = {
    kind: 'pickled',
    name: 'Threshold',
    isClass: true,
    pickle: Buffer.from('cloudpickle bytes').toString('base64'),
    pythonVersion: '3.11',
    hasReconfigure: true,
    acceptsBatch: false,
  };

  it('are taken from the admin API, written as definition.pkl and summarized by a hash of the pickle', () => {
    const definition = parseShippable(pickled);
    expect(definition).toEqual(pickled);
    expect(shippedFile(definition)).toEqual({ name: 'definition.pkl', content: Buffer.from('cloudpickle bytes') });
    expect(summarize(definition)).toEqual({ kind: 'class', name: 'Threshold', sourceHash: expect.stringMatching(/^[0-9a-f]{16}$/) });
  });

  it('refuse malformed fields', () => {
    expect(() => parseShippable({ ...pickled, pythonVersion: '3' })).toThrow(/pythonVersion, the caller's Python as '3.11'/);
    expect(() => parseShippable({ ...pickled, pickle: 'not base64!' })).toThrow(/cloudpickle bytes in base64/);
    expect(() => parseShippable({ ...pickled, source: 'x' })).toThrow(/unknown fields: source/);
    expect(() => parseShippable({ ...pickled, isClass: 'yes' })).toThrow(/isClass, hasReconfigure and acceptsBatch booleans/);
  });

  it('need the python runtime, and JavaScript needs node', () => {
    const config = { ...DEFAULT_BACKEND_CONFIG };
    const definition = parseShippable(pickled) as PickledDefinition;
    expect(() => checkSupports('b', definition, config, 'python')).not.toThrow();
    expect(() => checkSupports('b', definition, config, 'node')).toThrow(/needs replicaOptions.runtimeEnv.runtime 'python'/);
    expect(() => checkSupports('b', toShippable(handleRequest), config, 'python')).toThrow(/not a JavaScript function or class/);
    expect(() => checkSupports('b', { ...definition, hasReconfigure: false }, { ...config, userConfig: 1 }, 'python')).toThrow(
      /class Threshold has none/,
    );
    expect(() => checkSupports('b', definition, { ...config, maxBatchSize: 2 }, 'python')).toThrow(/@serve.accept_batch/);
  });
});
