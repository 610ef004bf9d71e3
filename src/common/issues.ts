import { FlotillaError, isFlotillaError } from './errors.js';

export type PathItem = string | number;

/**
 * One problem with an argument: `path` is the list of keys and array indexes
 * from the argument that was checked to the offending value (e.g.
 * ['config', 'numReplicas'] of createBackend's options, ['methods', 1]); []
 * is the argument itself. `message` does not repeat the path.
 */
export interface Issue {
  path: PathItem[];
  message: string;
}

/** 'config.numReplicas', 'methods[1]', 'env["bad name"]'. */
export function formatPath(path: readonly PathItem[]): string {
  return path
    .map((item, index) => {
      if (typeof item === 'number') return `[${item}]`;
      if (/^[A-Za-z0-9_$-]+$/.test(item)) return index === 0 ? item : `.${item}`;
      return `[${JSON.stringify(item)}]`;
    })
    .join('');
}

/** Collects issues under a path prefix; `at` gives a scope for a nested value sharing the same list. */
export class Issues {
  constructor(
    readonly list: Issue[] = [],
    private readonly prefix: readonly PathItem[] = [],
  ) {}

  at(...path: PathItem[]): Issues {
    return new Issues(this.list, [...this.prefix, ...path]);
  }

  add(message: string, ...path: PathItem[]): void {
    this.list.push({ path: [...this.prefix, ...path], message });
  }

  get count(): number {
    return this.list.length;
  }

  /**
   * Throws INVALID_ARGUMENT with `details.issues` when any were found. The
   * message lists them joined with '; ', each as `subject.path: message`, or
   * `subject message` for the argument itself ('traffic weights must sum to 1').
   */
  throwIfAny(subject = ''): void {
    if (this.list.length === 0) return;
    const lines = this.list.map(({ path, message }) => {
      if (path.length === 0) return subject === '' ? message : `${subject} ${message}`;
      const at = formatPath(path);
      return `${subject === '' || at.startsWith('[') ? `${subject}${at}` : `${subject}.${at}`}: ${message}`;
    });
    throw new FlotillaError('INVALID_ARGUMENT', lines.join('; '), { issues: this.list });
  }
}

/** Runs `check` against a fresh issue list and throws INVALID_ARGUMENT (see Issues.throwIfAny) if it found any. */
export function checked<T>(check: (issues: Issues) => T, subject?: string): T {
  const issues = new Issues();
  const value = check(issues);
  issues.throwIfAny(subject);
  return value;
}

/**
 * The issues of an INVALID_ARGUMENT error: its `details.issues`, or one issue
 * at [] with its message when it has none. Undefined for any other error.
 */
export function issuesOf(error: unknown): Issue[] | undefined {
  if (!isFlotillaError(error, 'INVALID_ARGUMENT')) return undefined;
  const issues = error.details?.issues;
  if (Array.isArray(issues) && issues.every(isIssue)) return issues;
  return [{ path: [], message: error.message }];
}

function isIssue(value: unknown): value is Issue {
  const issue = value as Partial<Issue> | null;
  return (
    typeof issue === 'object' &&
    issue !== null &&
    typeof issue.message === 'string' &&
    Array.isArray(issue.path) &&
    issue.path.every((item) => typeof item === 'string' || typeof item === 'number')
  );
}
