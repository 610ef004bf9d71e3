import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FlotillaError, isFlotillaError } from '../common/errors.js';

/** What a backend's image was built from, to find the file a failed build comes from. */
export interface BuildSource {
  contextDir?: string;
  /** The user's Dockerfile in contextDir, when the backend has one. */
  dockerfile?: string;
}

/** The logical lines of a Dockerfile (continuations joined), each with the line it starts at. */
function instructions(text: string): Array<{ line: number; text: string }> {
  const found: Array<{ line: number; text: string }> = [];
  let current: { line: number; text: string } | undefined;
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (current === undefined && (line === '' || line.startsWith('#'))) return;
    if (current === undefined) current = { line: index + 1, text: '' };
    if (line.startsWith('#')) return;
    const continued = line.endsWith('\\');
    current.text += `${continued ? line.slice(0, -1) : line} `;
    if (!continued) {
      found.push({ line: current.line, text: current.text.trim() });
      current = undefined;
    }
  });
  return found;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The 1-based line of `file` where `name` appears as a whole word, if any. */
function lineNaming(text: string, name: string): number | undefined {
  const pattern = new RegExp(`(^|[^\\w.-])${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|[^\\w.-])`, 'i');
  const index = text.split(/\r?\n/).findIndex((line) => pattern.test(line.replace(/#.*/, '')));
  return index === -1 ? undefined : index + 1;
}

/** The package a failed install names, by the installer's own words. */
function failedPackage(log: string): string | undefined {
  const patterns = [
    /Unable to locate package (\S+)/,
    /No matching distribution found for ([A-Za-z0-9._-]+)/,
    /Could not find a version that satisfies the requirement ([A-Za-z0-9._-]+)/,
    /404 Not Found - GET \S+\/([^/\s]+)/,
    /'((?:@[^/\s]+\/)?[^@'\s]+)@[^']*' is not in (?:this|the npm) registry/,
    /No matching version found for ((?:@[^/\s]+\/)?[^@\s]+)@/,
  ];
  for (const pattern of patterns) {
    const match = pattern.exec(log);
    if (match?.[1] === undefined) continue;
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return match[1];
    }
  }
  return undefined;
}

/**
 * Where a failed build is to be fixed: the user's Dockerfile at the failing step's instruction, or the file whose
 * packages the failing step installs (package.json, requirements.txt, apt.txt), at the line of the package the
 * installer could not get when it names one. Undefined when the failing step is none of these.
 */
export function fileToFix(source: BuildSource, log: readonly string[]): string | undefined {
  const context = source.contextDir;
  if (context === undefined) return undefined;
  const steps = log.filter((line) => /^Step \d+\/\d+ :/.test(line));
  const step = steps.at(-1);
  if (step === undefined) return undefined;
  const text = log.join('\n');
  if (source.dockerfile !== undefined) {
    const number = Number(/^Step (\d+)\//.exec(step)?.[1]);
    const dockerfile = read(join(context, source.dockerfile));
    const instruction = dockerfile === undefined ? undefined : instructions(dockerfile)[number - 1];
    const path = join(context, source.dockerfile);
    return instruction === undefined ? path : `${path}:${instruction.line}: ${instruction.text}`;
  }
  const file = /\bnpm (ci|install)\b/.test(step)
    ? 'package.json'
    : /\bpip install\b/.test(step)
      ? 'requirements.txt'
      : /\bapt-get install\b/.test(step) && !/python3-pip|command -v python3/.test(step)
        ? 'apt.txt'
        : undefined;
  if (file === undefined) return undefined;
  const path = join(context, file);
  const name = failedPackage(text);
  const content = read(path);
  const line = name === undefined || content === undefined ? undefined : lineNaming(content, name);
  return line === undefined ? path : `${path}:${line}: ${name as string}`;
}

/** A BUILD_FAILED error that starts by naming the file to fix (fileToFix), when there is one. */
export function blameFile(error: unknown, source: BuildSource): unknown {
  if (!isFlotillaError(error, 'BUILD_FAILED')) return error;
  const log = Array.isArray(error.details?.log) ? (error.details.log as string[]) : [];
  const file = fileToFix(source, log);
  if (file === undefined || error.message.startsWith('fix ') || error.message.includes('FLOTILLA_BUILD_CA_FILE')) return error;
  return new FlotillaError('BUILD_FAILED', `fix ${file}\n${error.message}`, { ...error.details, file });
}
