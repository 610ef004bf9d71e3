import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/**
 * Summarises `node --cpu-prof` profiles (every .cpuprofile in the directory given): the functions with the most
 * self time, and the share of all samples under each (inclusive), for the top of docs/benchmarks.md's table.
 */
const dir = process.argv[2];
const top = Number(process.argv[3] ?? 25);
if (dir === undefined) throw new Error('usage: profile-summary DIR [TOP]');
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;
const label = (node: ProfileNode): string => {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url === '' ? '' : relative(process.cwd(), url.replace(/^file:\/\//, '')).replace(/^node_modules\//, '');
  return `${functionName || '(anonymous)'} ${file}${file === '' ? '' : `:${lineNumber + 1}`}`.trim();
};
for (const name of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
  const profile = JSON.parse(readFileSync(join(dir, name), 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const counts = new Map<number, number>();
  profile.samples.forEach((id, i) => counts.set(id, (counts.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  for (const [id, us] of counts) {
    const node = byId.get(id)!;
    const name = label(node);
    if (name.startsWith('(idle)')) continue;
    total += us;
    self.set(name, (self.get(name) ?? 0) + us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const ancestor = label(byId.get(at)!);
      if (seen.has(ancestor)) continue;
      seen.add(ancestor);
      inclusive.set(ancestor, (inclusive.get(ancestor) ?? 0) + us);
    }
  }
}
const pct = (us: number): string => `${((100 * us) / total).toFixed(1)}%`;
process.stdout.write(`busy samples: ${(total / 1000).toFixed(0)} ms\n\nself time\n`);
for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(us).padStart(6)}  ${name}\n`);
process.stdout.write('\ninclusive time\n');
for (const [name, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top))
  process.stdout.write(`${pct(us).padStart(6)}  ${name}\n`);
