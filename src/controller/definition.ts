import { Script } from 'node:vm';
import { FlotillaError } from '../common/errors.js';
import type { BackendDefinition } from '../api.js';

/** A backend definition in a form that can be stored and handed to a replica. */
export type ShippableDefinition =
  { kind: 'function' | 'class'; name: string; source: string } | { kind: 'import'; module: string; exportName: string };

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
  return { kind: /^class[\s{]/.test(source) ? 'class' : 'function', name: definition.name, source };
}

function parseImportPath(path: string): ShippableDefinition {
  const match = /^([^:]+?)(?::([A-Za-z_$][\w$]*))?$/.exec(path.trim());
  if (match === null || match[1] === undefined) {
    throw new FlotillaError('INVALID_ARGUMENT', `import path '${path}' is not of the form 'path/in/image.js:Export'`);
  }
  return { kind: 'import', module: match[1], exportName: match[2] ?? 'default' };
}

export function shippedModuleText(definition: ShippableDefinition): string | undefined {
  return definition.kind === 'import' ? undefined : `export default (${definition.source});\n`;
}
