import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Range } from 'yaml';
import type { BackendConfig, ReplicaOptions, ReplicaResources, RuntimeEnv } from '../api.js';
import { errorMessage, FlotillaError, isFlotillaError } from '../common/errors.js';
import { formatPath, issuesOf, type Issue, type PathItem } from '../common/issues.js';
import { toShippable } from '../spec/definition.js';
import {
  validateBackendOptions,
  validateMethods,
  validateAllowCallMethod,
  validateName,
  validateProportion,
  validateRoute,
  validateTraffic,
} from '../spec/validation.js';
import { isPlainObject } from '../common/checks.js';
import { didYouMean } from '../common/closest.js';
import { contextDirProblem } from '../runtime/build-context.js';

/** What an app file may hold: checking grows with its size, so a mistake (or a generated file gone wrong) is refused early. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
const MAX_ENTRIES = 1000;

/** A backend as an app file declares it, checked and with every default filled in. */
export interface BackendSpec {
  /** The import path as written, e.g. 'handlers/echo.js:Echo'. */
  import: string;
  definition: { kind: 'import'; module: string; exportName: string };
  /** Every key the file sets, checked; `runtime` is always set, `context` is an absolute path. */
  runtimeEnv: RuntimeEnv;
  initArgs: unknown[];
  config: BackendConfig;
  resources: ReplicaResources;
  /** What createBackend gets as replicaOptions: every key the file's replicaOptions has, and runtimeEnv. */
  replicaOptions: ReplicaOptions;
}

export interface EndpointSpec {
  /** The backend the endpoint is created with: `backend` unless its traffic weight is 0, else the heaviest of `traffic`. */
  backend: string;
  route: string | null;
  methods: string[];
  traffic: Record<string, number>;
  shadows: Record<string, number>;
  allowCallMethod?: true;
}

/** The whole desired state an app file describes. */
export interface AppSpec {
  /** The file's name as given, used in messages. */
  file: string;
  backends: Record<string, BackendSpec>;
  endpoints: Record<string, EndpointSpec>;
  /** Line of each backend and endpoint name, keyed 'backends.<name>' and 'endpoints.<name>'. */
  lines: Record<string, number>;
}

/** An Issue of the file: `path` from its root, e.g. ['backends', 'echo', 'config', 'numReplicas']; [] for the file itself. */
export interface AppFileIssue extends Issue {
  file: string;
  line: number;
}

type Part = 'key' | 'value';

const ROOT_KEYS = ['backends', 'endpoints'];
const BACKEND_KEYS = ['import', 'runtimeEnv', 'initArgs', 'config', 'replicaOptions'];
const ENDPOINT_KEYS = ['backend', 'route', 'methods', 'traffic', 'shadows', 'allowCallMethod'];

/** Where an issue of createBackend's options is in an app file's backend: runtimeEnv sits beside replicaOptions there. */
function backendPath(path: readonly PathItem[]): PathItem[] {
  return path[0] === 'replicaOptions' && path[1] === 'runtimeEnv' ? path.slice(1) : [...path];
}

/** Collects every problem of an app file, each with its key path and line. */
class Checker {
  readonly issues: AppFileIssue[] = [];

  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly lineCounter: LineCounter,
  ) {}

  add(path: readonly PathItem[], message: string, part: Part = 'value'): void {
    this.issues.push({ file: this.file, line: this.lineOf(path, part), path: [...path], message });
  }

  /**
   * Runs a validator; each issue of an INVALID_ARGUMENT it throws is added at
   * `at` + the issue's path (mapped by `map`). Returns undefined when it threw.
   */
  check<T>(at: readonly PathItem[], run: () => T, part: Part = 'value', map = (path: readonly PathItem[]) => [...path]): T | undefined {
    try {
      return run();
    } catch (error) {
      const issues = issuesOf(error);
      if (issues === undefined) throw error;
      for (const issue of issues) this.add([...at, ...map(issue.path)], issue.message, issue.path.length === 0 ? part : 'value');
      return undefined;
    }
  }

  /** Checks that `value` is a mapping without unknown keys; reports missing required keys. */
  mapping(
    path: readonly PathItem[],
    value: unknown,
    allowed: readonly string[] | 'any',
    required: readonly string[] = [],
  ): value is Record<string, unknown> {
    if (!isPlainObject(value)) {
      this.add(path, allowed === 'any' ? 'must be a mapping' : `must be a mapping of ${allowed.join(', ')}`);
      return false;
    }
    if (allowed === 'any') return true;
    for (const key of Object.keys(value).filter((key) => !allowed.includes(key))) {
      this.add([...path, key], `unknown key${didYouMean(key, allowed)}; allowed: ${allowed.join(', ')}`, 'key');
    }
    for (const key of required.filter((key) => value[key] === undefined)) {
      this.add(path, `${key} is required`, 'key');
    }
    return true;
  }

  /** Line (1-based) of a key or of its value; the nearest enclosing node when the path does not reach that far. */
  lineOf(path: readonly PathItem[], part: Part): number {
    let node: unknown = this.doc.contents;
    let range: Range | null | undefined = isScalar(node) || isMap(node) || isSeq(node) ? node.range : undefined;
    for (const item of path) {
      if (isAlias(node)) node = node.resolve(this.doc);
      let keyRange: Range | null | undefined;
      if (isMap(node)) {
        const pair = node.items.find((candidate) => String(isScalar(candidate.key) ? candidate.key.value : candidate.key) === String(item));
        if (pair === undefined) break;
        keyRange = isScalar(pair.key) ? pair.key.range : undefined;
        node = pair.value;
      } else if (isSeq(node) && typeof item === 'number' && item < node.items.length) {
        node = node.items[item];
      } else {
        break;
      }
      const valueRange = isScalar(node) && node.source === '' ? undefined : (node as { range?: Range | null } | null)?.range;
      const atKey = part === 'key' || isMap(node) || isSeq(node);
      range = atKey ? (keyRange ?? valueRange ?? range) : (valueRange ?? keyRange ?? range);
    }
    return range === undefined || range === null ? 1 : this.lineCounter.linePos(range[0]).line;
  }

  error(): FlotillaError {
    this.issues.sort((a, b) => a.line - b.line);
    const lines = this.issues.map(formatIssue);
    return new FlotillaError('INVALID_ARGUMENT', lines.join('\n'), { issues: this.issues });
  }
}

export function formatIssue(issue: AppFileIssue): string {
  return `${issue.file}:${issue.line}: ${issue.path.length === 0 ? '' : `${formatPath(issue.path)}: `}${issue.message}`;
}

export interface ParseOptions {
  /** The file's name in messages. Default 'app.yaml'. */
  file?: string;
  /** Directory that relative context paths resolve against. Default: the current directory. */
  baseDir?: string;
}

/**
 * Parses and checks an app file (YAML, or JSON). Every problem is reported at
 * once, each as `file:line: key.path: message`, in one INVALID_ARGUMENT error
 * whose details.issues lists them.
 */
export function parseAppFile(text: string, options: ParseOptions = {}): AppSpec {
  const file = options.file ?? 'app.yaml';
  const baseDir = resolve(options.baseDir ?? '.');
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const checker = new Checker(file, doc, lineCounter);
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const message = error.message.split('\n')[0] ?? error.message;
      checker.issues.push({ file, line: lineCounter.linePos(error.pos[0]).line, path: [], message: `YAML syntax: ${message}` });
    }
    throw checker.error();
  }
  let root: unknown;
  try {
    root = doc.toJS();
  } catch (error) {
    // yaml refuses aliases that expand too far (an alias bomb): reported at the first alias.
    let line = 1;
    visit(doc, {
      Alias(_, node) {
        line = lineCounter.linePos(node.range?.[0] ?? 0).line;
        return visit.BREAK;
      },
    });
    checker.issues.push({ file, line, path: [], message: `YAML: ${errorMessage(error)}` });
    throw checker.error();
  }
  if (!checker.mapping([], root, ROOT_KEYS, ROOT_KEYS)) throw checker.error();

  const spec: AppSpec = { file, backends: {}, endpoints: {}, lines: {} };
  const backends = root.backends ?? {};
  const endpoints = root.endpoints ?? {};
  const backendNames = isPlainObject(backends) ? Object.keys(backends) : [];
  for (const [key, value] of [
    ['backends', backends],
    ['endpoints', endpoints],
  ] as const)
    if (isPlainObject(value) && Object.keys(value).length > MAX_ENTRIES)
      checker.add([key], `at most ${MAX_ENTRIES} ${key} per app file, not ${Object.keys(value).length}`);
  if (checker.issues.length > 0) throw checker.error();
  if (checker.mapping(['backends'], backends, 'any')) {
    for (const [name, value] of Object.entries(backends)) {
      spec.lines[`backends.${name}`] = checker.lineOf(['backends', name], 'key');
      const backend = checkBackend(checker, name, value, baseDir);
      if (backend !== undefined) spec.backends[name] = backend;
    }
  }
  if (checker.mapping(['endpoints'], endpoints, 'any')) {
    const routes = new Map<string, string>();
    for (const [name, value] of Object.entries(endpoints)) {
      spec.lines[`endpoints.${name}`] = checker.lineOf(['endpoints', name], 'key');
      const endpoint = checkEndpoint(checker, name, value, backendNames);
      if (endpoint === undefined) continue;
      const owner = endpoint.route === null ? undefined : routes.get(endpoint.route);
      if (owner !== undefined) {
        checker.add(['endpoints', name, 'route'], `route '${endpoint.route}' is already used by endpoints.${owner}`);
        continue;
      }
      if (endpoint.route !== null) routes.set(endpoint.route, name);
      spec.endpoints[name] = endpoint;
    }
  }
  if (checker.issues.length > 0) throw checker.error();
  return spec;
}

/** Reads and parses an app file; relative contexts resolve against the file's directory. */
export function loadAppFile(path: string): AppSpec {
  let text: string;
  try {
    const stats = statSync(path);
    if (!stats.isFile()) throw new FlotillaError('INVALID_ARGUMENT', `the app file ${path} is not a regular file`);
    if (stats.size > MAX_FILE_BYTES)
      throw new FlotillaError('INVALID_ARGUMENT', `the app file ${path} has ${stats.size} bytes; at most ${MAX_FILE_BYTES} are read`);
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (isFlotillaError(error)) throw error;
    throw new FlotillaError('INVALID_ARGUMENT', `cannot read app file ${path}: ${errorMessage(error)}`);
  }
  return parseAppFile(text, { file: path, baseDir: dirname(resolve(path)) });
}

function checkBackend(checker: Checker, name: string, value: unknown, baseDir: string): BackendSpec | undefined {
  const path = ['backends', name];
  const before = checker.issues.length;
  checker.check(path, () => validateName(name, 'backend'), 'key');
  if (!checker.mapping(path, value, BACKEND_KEYS, ['import'])) return undefined;

  let definition: BackendSpec['definition'] | undefined;
  if (value.import !== undefined) {
    if (typeof value.import !== 'string' || value.import.trim() === '') {
      checker.add([...path, 'import'], "must be an import path such as 'handlers/echo.js:Echo' (a file in the image, and its export)");
    } else {
      definition = checker.check([...path, 'import'], () => toShippable(value.import as string)) as BackendSpec['definition'] | undefined;
    }
  }
  const replicaOptions = value.replicaOptions ?? {};
  if (isPlainObject(replicaOptions) && replicaOptions.runtimeEnv !== undefined) {
    checker.add(
      [...path, 'replicaOptions', 'runtimeEnv'],
      `goes beside replicaOptions in an app file: ${formatPath([...path, 'runtimeEnv'])}`,
      'key',
    );
  }
  const written = isPlainObject(value.runtimeEnv) ? value.runtimeEnv.context : undefined;
  const context = typeof written === 'string' && written !== '' ? resolve(baseDir, written) : undefined;
  const runtimeEnv = context === undefined ? value.runtimeEnv : { ...(value.runtimeEnv as object), context };
  const options = {
    initArgs: value.initArgs,
    config: value.config,
    replicaOptions: isPlainObject(replicaOptions) ? { ...replicaOptions, runtimeEnv } : replicaOptions,
  };
  const validated = checker.check(path, () => validateBackendOptions(options), 'value', backendPath);
  if (context !== undefined) {
    const problem = statSync(context, { throwIfNoEntry: false })?.isDirectory()
      ? contextDirProblem(context)
      : `'${written as string}' is not a directory (resolved to ${context})`;
    if (problem !== undefined) checker.add([...path, 'runtimeEnv', 'context'], problem);
  }

  if (checker.issues.length > before || validated === undefined) return undefined;
  const checkedEnv = Object.fromEntries(Object.entries(validated.runtimeEnv).filter(([, item]) => item !== undefined)) as RuntimeEnv;
  return {
    import: (value.import as string).trim(),
    definition: definition as BackendSpec['definition'],
    runtimeEnv: checkedEnv,
    initArgs: validated.initArgs,
    config: validated.config,
    resources: validated.resources,
    replicaOptions: { ...(replicaOptions as ReplicaOptions), runtimeEnv: checkedEnv },
  };
}

function checkEndpoint(checker: Checker, name: string, value: unknown, backends: string[]): EndpointSpec | undefined {
  const path = ['endpoints', name];
  const before = checker.issues.length;
  checker.check(path, () => validateName(name, 'endpoint'), 'key');
  if (!checker.mapping(path, value, ENDPOINT_KEYS)) return undefined;
  const known = (at: PathItem[], backend: string, part: Part): void => {
    if (!backends.includes(backend)) checker.add(at, `backend '${backend}' is not defined under backends`, part);
  };

  if (value.backend === undefined && value.traffic === undefined) checker.add(path, 'needs a backend, or traffic over backends', 'key');
  const backend =
    value.backend === undefined ? undefined : checker.check([...path, 'backend'], () => validateName(value.backend, 'backend'));
  if (backend !== undefined) known([...path, 'backend'], backend, 'value');
  const route =
    value.route === undefined || value.route === null ? null : checker.check([...path, 'route'], () => validateRoute(value.route));
  const methods = checker.check([...path, 'methods'], () => validateMethods(value.methods));
  const allowCallMethod = checker.check([...path, 'allowCallMethod'], () => validateAllowCallMethod(value.allowCallMethod));

  let traffic: Record<string, number> | undefined;
  if (value.traffic !== undefined) {
    traffic = checker.check([...path, 'traffic'], () => validateTraffic(value.traffic));
    for (const target of Object.keys(traffic ?? {})) known([...path, 'traffic', target], target, 'key');
    if (traffic !== undefined && backend !== undefined && !(backend in traffic)) {
      checker.add([...path, 'backend'], `'${backend}' is not one of traffic's backends (${Object.keys(traffic).join(', ')})`);
    }
  }
  const shadows: Record<string, number> = {};
  if (value.shadows !== undefined && value.shadows !== null && checker.mapping([...path, 'shadows'], value.shadows, 'any')) {
    for (const [target, proportion] of Object.entries(value.shadows)) {
      known([...path, 'shadows', target], target, 'key');
      const share = checker.check([...path, 'shadows', target], () => validateProportion(proportion));
      if (share !== undefined && share > 0) shadows[target] = share;
    }
  }

  if (checker.issues.length > before) return undefined;
  const weights = traffic ?? { [backend as string]: 1 };
  return {
    backend: backend !== undefined && (weights[backend] ?? 0) > 0 ? backend : heaviest(weights),
    route: route as string | null,
    methods: methods as string[],
    traffic: weights,
    shadows,
    ...(allowCallMethod === true ? { allowCallMethod } : {}),
  };
}

function heaviest(weights: Record<string, number>): string {
  return Object.entries(weights).reduce((best, entry) => (entry[1] > best[1] ? entry : best))[0];
}
