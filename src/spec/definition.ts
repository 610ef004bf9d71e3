import { createHash } from 'node:crypto';
import { Script } from 'node:vm';
import { FlotillaError } from '../common/errors.js';
import type { BackendConfig, BackendDefinition, DefinitionSummary } from '../api.js';

/** A backend definition in a form that can be stored and handed to a replica. */
export type ShippableDefinition =
  | { kind: 'function' | 'class'; name: string; source: string; hasReconfigure: boolean; acceptsBatch: boolean }
  | { kind: 'import'; module: string; exportName: string }
  | PickledDefinition;

/**
 * A Python function or class shipped by value: `pickle` is cloudpickle's bytes in base64, made by the Python client
 * (python/flotilla) under Python `pythonVersion` ('3.11'), which the replica image's Python must match.
 */
export interface PickledDefinition {
  kind: 'pickled';
  name: string;
  isClass: boolean;
  pickle: string;
  pythonVersion: string;
  hasReconfigure: boolean;
  acceptsBatch: boolean;
}

const PYTHON_VERSION = /^3\.\d{1,2}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Marks a function or class as taking an array of requests and returning an array of results (config.maxBatchSize). */
export function acceptBatch<T extends BackendDefinition & object>(definition: T): T {
  (definition as { acceptsBatch?: boolean }).acceptsBatch = true;
  return definition;
}

function unshippable(what: string, why: string): FlotillaError {
  return new FlotillaError(
    'UNSHIPPABLE_DEFINITION',
    `${what} cannot be shipped to a replica: ${why}. Shipped functions and classes must be self-contained source ` +
      '(no closures over outer variables, no imports); put larger code in a context directory and use an import path.',
  );
}

/**
 * Turns what the caller passed to createBackend into something a replica can
 * load. Functions and classes travel as their source text; import paths are
 * only parsed here, never resolved in the caller's process.
 */
export function toShippable(definition: BackendDefinition): ShippableDefinition {
  if (typeof definition === 'string') return parseImportPath(definition);
  if (typeof definition !== 'function') {
    throw new FlotillaError('INVALID_ARGUMENT', `a backend is a function, a class or an import path, not ${typeof definition}`);
  }
  const what = `backend ${definition.name ? `'${definition.name}'` : '(anonymous)'}`;
  const source = Function.prototype.toString.call(definition);
  if (definition.name.startsWith('bound ')) throw unshippable(what, 'it is a bound function');
  if (/\{\s*\[native code\]\s*\}\s*$/.test(source)) throw unshippable(what, 'it is native code');
  try {
    new Script(`(${source})`);
  } catch {
    throw unshippable(what, 'its source is not a standalone expression (a method shorthand?)');
  }
  const kind = /^class[\s{]/.test(source) ? 'class' : 'function';
  return {
    kind,
    name: definition.name,
    source,
    hasReconfigure: kind === 'class' && typeof (definition.prototype as { reconfigure?: unknown })?.reconfigure === 'function',
    acceptsBatch: (definition as { acceptsBatch?: unknown }).acceptsBatch === true,
  };
}

function parseImportPath(path: string): ShippableDefinition {
  const match = /^([^:]+?)(?::([A-Za-z_$][\w$]*))?$/.exec(path.trim());
  if (match === null || match[1] === undefined) {
    throw new FlotillaError('INVALID_ARGUMENT', `import path '${path}' is not of the form 'path/in/image.js:Export'`);
  }
  return { kind: 'import', module: match[1], exportName: match[2] ?? 'default' };
}

/** esbuild's keepNames helper (tsx, esbuild-based runners), which their output calls as __name(fn, "name"). */
const NAME_HELPER = "const __name = (target, value) => Object.defineProperty(target, 'name', { value, configurable: true });\n";

/** The name of the file a shipped definition is written to in the image's /app/.flotilla. */
export function shippedFileName(definition: Exclude<ShippableDefinition, { kind: 'import' }>): string {
  return definition.kind === 'pickled' ? 'definition.pkl' : 'definition.mjs';
}

/** The file a shipped definition is written to, and its content; none for an import path. */
export function shippedFile(definition: ShippableDefinition): { name: string; content: string | Buffer } | undefined {
  if (definition.kind === 'import') return undefined;
  const content = definition.kind === 'pickled' ? Buffer.from(definition.pickle, 'base64') : (shippedModuleText(definition) as string);
  return { name: shippedFileName(definition), content };
}

/** The JavaScript module a function or class backend is shipped as; none for an import path or a pickle. */
export function shippedModuleText(definition: ShippableDefinition): string | undefined {
  if (definition.kind === 'import' || definition.kind === 'pickled') return undefined;
  const prelude = /\b__name\(/.test(definition.source) ? NAME_HELPER : '';
  const mark = definition.acceptsBatch ? 'backend.acceptsBatch = true;\n' : '';
  return `${prelude}const backend = (${definition.source});\n${mark}export default backend;\n`;
}

/**
 * Refuses a definition that the backend's runtime cannot load (JavaScript source on the Python runtime, a pickle on
 * Node's), and a config that a shipped definition cannot honour; import paths are checked by the replica.
 */
export function checkSupports(backend: string, definition: ShippableDefinition, config: BackendConfig, runtime: string): void {
  if (definition.kind === 'import') return;
  const pickled = definition.kind === 'pickled';
  if (pickled !== (runtime === 'python')) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      pickled
        ? `backend '${backend}': a pickled Python ${definition.isClass ? 'class' : 'function'} needs replicaOptions.runtimeEnv.runtime 'python'`
        : `backend '${backend}': a Python backend is an import path such as 'model.py:Predictor' in its context, or a function or class shipped by the Python client (python/flotilla), not a JavaScript function or class`,
    );
  }
  const what = `${pickled ? (definition.isClass ? 'class' : 'function') : definition.kind} ${definition.name || '(anonymous)'}`;
  if (config.userConfig !== null && !definition.hasReconfigure) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' cannot take userConfig: it needs a class with a reconfigure(userConfig) method, and ${what} has none`,
    );
  }
  if (config.maxBatchSize > 1 && !definition.acceptsBatch) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' cannot batch (maxBatchSize ${config.maxBatchSize}): mark ${what} with ` +
        (pickled ? '@serve.accept_batch so that it takes a list of requests' : 'serve.acceptBatch so that it takes an array of requests'),
    );
  }
}

/** Checks a definition that arrived over the admin API (already shipped by a remote client). */
export function parseShippable(value: unknown): ShippableDefinition {
  const bad = (why: string) => new FlotillaError('INVALID_ARGUMENT', `definition ${why}`);
  if (typeof value !== 'object' || value === null) throw bad('must be an object with a kind');
  const definition = value as Record<string, unknown>;
  if (definition.kind === 'import') {
    if (typeof definition.module !== 'string' || typeof definition.exportName !== 'string')
      throw bad('of kind import needs module and exportName strings');
    return parseImportPath(`${definition.module}:${definition.exportName}`);
  }
  if (definition.kind === 'pickled') return parsePickled(definition, bad);
  if (definition.kind !== 'function' && definition.kind !== 'class')
    throw bad(`kind must be import, function, class or pickled, not ${JSON.stringify(definition.kind)}`);
  const { name, source, hasReconfigure, acceptsBatch } = definition;
  if (typeof name !== 'string' || typeof source !== 'string' || typeof hasReconfigure !== 'boolean' || typeof acceptsBatch !== 'boolean') {
    throw bad('of kind function or class needs name and source strings and hasReconfigure and acceptsBatch booleans');
  }
  try {
    new Script(`(${source})`);
  } catch (error) {
    throw bad(`source does not parse: ${(error as Error).message}`);
  }
  return { kind: definition.kind, name, source, hasReconfigure, acceptsBatch };
}

function parsePickled(definition: Record<string, unknown>, bad: (why: string) => FlotillaError): PickledDefinition {
  const { name, isClass, pickle, pythonVersion, hasReconfigure, acceptsBatch } = definition;
  const extra = Object.keys(definition).filter(
    (key) => !['kind', 'name', 'isClass', 'pickle', 'pythonVersion', 'hasReconfigure', 'acceptsBatch'].includes(key),
  );
  if (extra.length > 0) throw bad(`of kind pickled has unknown fields: ${extra.join(', ')}`);
  if (
    typeof name !== 'string' ||
    typeof isClass !== 'boolean' ||
    typeof hasReconfigure !== 'boolean' ||
    typeof acceptsBatch !== 'boolean'
  ) {
    throw bad('of kind pickled needs a name string and isClass, hasReconfigure and acceptsBatch booleans');
  }
  if (typeof pickle !== 'string' || pickle === '' || !BASE64.test(pickle))
    throw bad('of kind pickled needs pickle: cloudpickle bytes in base64');
  if (typeof pythonVersion !== 'string' || !PYTHON_VERSION.test(pythonVersion)) {
    throw bad(`of kind pickled needs pythonVersion, the caller's Python as '3.11', not ${JSON.stringify(pythonVersion)}`);
  }
  return { kind: 'pickled', name, isClass, pickle, pythonVersion, hasReconfigure, acceptsBatch };
}

/** What listBackends shows of a definition: its import path, or its name and a hash of its source (or pickle). */
export function summarize(definition: ShippableDefinition): DefinitionSummary {
  if (definition.kind === 'import') return { kind: 'import', module: definition.module, exportName: definition.exportName };
  const pickled = definition.kind === 'pickled';
  return {
    kind: pickled ? (definition.isClass ? 'class' : 'function') : definition.kind,
    name: definition.name,
    sourceHash: createHash('sha256')
      .update(pickled ? definition.pickle : definition.source)
      .digest('hex')
      .slice(0, 16),
  };
}
