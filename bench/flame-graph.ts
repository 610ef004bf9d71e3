import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Frame {
  name: string;
  us: number;
  children: Map<string, Frame>;
}

const WIDTH = 1200;
const ROW = 16;
const MIN_SHARE = 0.002;

/** Renders the `node --cpu-prof` profiles in a directory as one SVG flame graph (stacks merged by function, idle left out). */
const [dir, out] = process.argv.slice(2);
if (dir === undefined || out === undefined) throw new Error('usage: flame-graph PROFILE_DIR OUT.svg');
const root: Frame = { name: 'all', us: 0, children: new Map() };
for (const file of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  profile.samples.forEach((id, i) => {
    const stack: string[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const { functionName, url, lineNumber } = byId.get(at)!.callFrame;
      if (functionName === '(root)') break;
      const file = url.startsWith('node:') ? url : url.split('/').slice(-2).join('/');
      stack.push(`${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`);
    }
    if (stack[0]?.startsWith('(idle)')) return;
    const us = profile.timeDeltas[i] ?? 0;
    root.us += us;
    let frame = root;
    for (const name of stack.reverse()) {
      let child = frame.children.get(name);
      if (child === undefined) frame.children.set(name, (child = { name, us: 0, children: new Map() }));
      child.us += us;
      frame = child;
    }
  });
}
const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const rects: string[] = [];
let depth = 0;
const draw = (frame: Frame, x: number, level: number): void => {
  const width = (frame.us / root.us) * WIDTH;
  if (frame.us / root.us < MIN_SHARE) return;
  depth = Math.max(depth, level);
  const hue = frame.name.includes('dist/src') || frame.name.includes('proxy/') ? 200 : frame.name.includes('node:') ? 30 : 10;
  const label = `${frame.name} (${((100 * frame.us) / root.us).toFixed(1)}%)`;
  rects.push(
    `<g><title>${escape(label)}</title><rect x="${x.toFixed(1)}" y="LEVEL${level}" width="${width.toFixed(1)}" height="${ROW - 1}" fill="hsl(${hue},70%,${60 + (level % 3) * 6}%)"/>` +
      (width > 40
        ? `<text x="${(x + 3).toFixed(1)}" y="LEVEL${level}T" font-size="11">${escape(label.slice(0, Math.floor(width / 6.5)))}</text>`
        : '') +
      '</g>',
  );
  let childX = x;
  for (const child of [...frame.children.values()].sort((a, b) => b.us - a.us)) {
    draw(child, childX, level + 1);
    childX += (child.us / root.us) * WIDTH;
  }
};
draw(root, 0, 0);
const height = (depth + 1) * ROW;
const svg = rects
  .join('\n')
  .replace(/LEVEL(\d+)(T?)/g, (_, level: string, text: string) => String(height - (Number(level) + 1) * ROW + (text ? 11 : 0)));
writeFileSync(
  out,
  `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="monospace">\n${svg}\n</svg>\n`,
);
