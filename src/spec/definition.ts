import { createHash } from 'node:crypto';
import { Script } from 'node:vm';
import { FlotillaError } from '../common/errors.js';
import type { BackendConfig, BackendDefinition, DefinitionSummary } from '../api.js';

/** A backend definition in a form that can be stored and handed to a replica. */
export type ShippableDefinition =
  | { kind: 'function' | 'class'; name: string; source: string; hasReconfigure: boolean; acceptsBatch: boolean }
  | { kind: 'import'; module: string; exportName: string };

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

export function shippedModuleText(definition: ShippableDefinition): string | undefined {
  if (definition.kind === 'import') return undefined;
  const prelude = /\b__name\(/.test(definition.source) ? NAME_HELPER : '';
  const mark = definition.acceptsBatch ? 'backend.acceptsBatch = true;\n' : '';
  return `${prelude}const backend = (${definition.source});\n${mark}export default backend;\n`;
}

/** Refuses a config that a shipped definition cannot honour; import paths are checked by the replica. */
export function checkSupports(backend: string, definition: ShippableDefinition, config: BackendConfig): void {
  if (definition.kind === 'import') return;
  const what = `${definition.kind} ${definition.name || '(anonymous)'}`;
  if (config.userConfig !== null && !definition.hasReconfigure) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' cannot take userConfig: it needs a class with a reconfigure(userConfig) method, and ${what} has none`,
    );
  }
  if (config.maxBatchSize > 1 && !definition.acceptsBatch) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' cannot batch (maxBatchSize ${config.maxBatchSize}): mark ${what} with serve.acceptBatch so that it takes an array of requests`,
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
  if (definition.kind !== 'function' && definition.kind !== 'class')
    throw bad(`kind must be import, function or class, not ${JSON.stringify(definition.kind)}`);
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

/** What listBackends shows of a definition: its import path, or its name and a hash of its source. */
export function summarize(definition: ShippableDefinition): DefinitionSummary {
  if (definition.kind === 'import') return { kind: 'import', module: definition.module, exportName: definition.exportName };
  return {
    kind: definition.kind,
    name: definition.name,
    sourceHash: createHash('sha256').update(definition.source).digest('hex').slice(0, 16),
  };
}
