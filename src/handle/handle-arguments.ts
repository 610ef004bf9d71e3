import { invalid, isPlainObject } from '../common/checks.js';

/** The arguments of a handle call that arrived as JSON (admin API, handle socket): undefined when it has none. */
export function handleArguments(args: unknown, kwargs: unknown, input: unknown): [unknown[], Record<string, unknown>] | undefined {
  if (args === undefined && kwargs === undefined) return undefined;
  if (input !== undefined) throw invalid('a handle call takes either input (the request body) or args and kwargs, not both');
  if (args !== undefined && !Array.isArray(args)) throw invalid('args must be a list of JSON values');
  if (kwargs !== undefined && !isPlainObject(kwargs)) throw invalid('kwargs must be an object of JSON values');
  return [(args ?? []) as unknown[], (kwargs ?? {}) as Record<string, unknown>];
}
