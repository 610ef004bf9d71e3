import type { Client, EndpointInfo } from '../api.js';
import { invalid } from '../common/checks.js';
import { didYouMean } from '../common/closest.js';
import { errorMessage, FlotillaError } from '../common/errors.js';

export interface CallFlags {
  /** A class backend's method: called through a handle. */
  method?: string;
  stream?: boolean;
  handle?: boolean;
  /** HTTP method (-X). */
  request?: string;
  query?: string;
  header?: string[];
}

export interface CallOutput {
  stdout(chunk: string | Uint8Array): void;
  stderr(line: string): void;
}

const WITH_BODY = ['POST', 'PUT', 'PATCH', 'DELETE'];

/** The endpoint's info; an unknown name lists the endpoints and suggests the closest. */
export function endpointNamed(endpoints: Record<string, EndpointInfo>, name: string): EndpointInfo {
  const info = endpoints[name];
  if (info !== undefined) return info;
  const names = Object.keys(endpoints);
  throw new FlotillaError(
    'ENDPOINT_NOT_FOUND',
    `no endpoint '${name}'${didYouMean(name, names)}; ${names.length === 0 ? 'none is defined yet' : `endpoints: ${names.join(', ')}`}`,
  );
}

/** The HTTP method of a call: -X if the endpoint accepts it; else GET without input, and the endpoint's first method with a body with. */
export function httpMethodOf(name: string, info: EndpointInfo, requested: string | undefined, hasInput: boolean): string {
  const accepted = `endpoint ${name} (${info.route ?? 'no route'}) accepts ${info.methods.join(', ')}`;
  if (requested !== undefined) {
    const method = requested.toUpperCase();
    if (!info.methods.includes(method))
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${accepted}, not ${method}${didYouMean(method, info.methods)}`);
    return method;
  }
  if (!hasInput) return info.methods.includes('GET') ? 'GET' : (info.methods[0] ?? 'GET');
  const method = WITH_BODY.find((candidate) => info.methods.includes(candidate));
  if (method === undefined)
    throw new FlotillaError(
      'METHOD_NOT_ALLOWED',
      `${accepted}, which carry no input: pass it in the query (--query), add POST to the endpoint's methods, or call through a handle (--handle)`,
    );
  return method;
}

/** `-H 'name: value'` flags as headers. */
export function parseHeaders(list: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const item of list) {
    const match = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*(.*)$/.exec(item);
    if (match === null) throw invalid(`-H '${item}' is not a header: give it as 'Name: value'`);
    headers[(match[1] as string).toLowerCase()] = match[2] as string;
  }
  return headers;
}

function parseInput(input: string | undefined): unknown {
  if (input === undefined) return undefined;
  try {
    return JSON.parse(input);
  } catch {
    return input;
  }
}

function printed(value: unknown): string | Uint8Array {
  return typeof value === 'string' || value instanceof Uint8Array ? value : `${JSON.stringify(value)}\n`;
}

async function throughHandle(client: Client, endpoint: string, input: string | undefined, flags: CallFlags, out: CallOutput) {
  const handle = client.getHandle(endpoint).options(flags.method === undefined ? {} : { methodName: flags.method });
  if (flags.stream !== true) {
    out.stdout(printed(await handle.remote(parseInput(input))));
    return;
  }
  for await (const chunk of handle.stream(parseInput(input))) out.stdout(printed(chunk));
}

/**
 * `flotilla call`: over HTTP to the endpoint's route (the status on stderr, the body on stdout as it comes), or through
 * a handle for a class method (--method), an endpoint without a route, or --handle. Resolves with the exit status:
 * 1 for a 4xx or 5xx answer.
 */
export async function callEndpoint(client: Client, endpoint: string, input: string | undefined, flags: CallFlags, out: CallOutput) {
  const info = endpointNamed(await client.listEndpoints(), endpoint);
  const http = flags.request !== undefined || flags.query !== undefined || (flags.header ?? []).length > 0;
  if (flags.handle === true || flags.method !== undefined || info.route === null) {
    if (http) {
      const why = info.route === null ? `endpoint ${endpoint} has no route` : 'a handle call (--method, --handle) is not HTTP';
      throw invalid(`-X, --query and -H shape an HTTP request, and ${why}`);
    }
    await throughHandle(client, endpoint, input, flags, out);
    return 0;
  }
  const method = httpMethodOf(endpoint, info, flags.request, input !== undefined);
  const headers = parseHeaders(flags.header ?? []);
  if (input !== undefined && headers['content-type'] === undefined)
    headers['content-type'] = parseInput(input) === input ? 'text/plain; charset=utf-8' : 'application/json';
  const query = flags.query === undefined || flags.query === '' ? '' : `?${flags.query.replace(/^\?/, '')}`;
  const url = `${client.httpUrl}${info.route}${query}`;
  let response: Response;
  try {
    response = await fetch(url, { method, headers, ...(input === undefined ? {} : { body: input }) });
  } catch (error) {
    throw new Error(`the front door at ${client.httpUrl} did not answer ${method} ${info.route}: ${errorMessage(error)}`);
  }
  out.stderr(`HTTP ${response.status} ${response.statusText}`);
  let last = 10;
  const reader = response.body?.getReader();
  for (let read = await reader?.read(); read !== undefined && !read.done; read = await reader?.read()) {
    if (read.value.length > 0) last = read.value[read.value.length - 1] as number;
    out.stdout(read.value);
  }
  if (last !== 10 && /json/.test(response.headers.get('content-type') ?? '')) out.stdout('\n');
  return response.status >= 400 ? 1 : 0;
}
