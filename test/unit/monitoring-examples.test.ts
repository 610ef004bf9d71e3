import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PrometheusMetrics } from '../../src/admin/metrics.js';

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples');
const dashboard = JSON.parse(readFileSync(join(EXAMPLES, 'grafana', 'flotilla-dashboard.json'), 'utf8'));

/** Every PromQL query of the dashboard: panel targets and template variable queries. */
function queries(): string[] {
  const panels = dashboard.panels as Array<{ targets?: Array<{ expr: string }> }>;
  const variables = dashboard.templating.list as Array<{ query: unknown }>;
  return [
    ...panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr)),
    ...variables.flatMap((variable) => (typeof variable.query === 'object' ? [(variable.query as { query: string }).query] : [])),
  ];
}

describe('the Grafana dashboard and the Prometheus example', () => {
  it('use only metrics and labels that Flotilla exports', () => {
    const exported = new Map<string, string[]>();
    for (const metric of new PrometheusMetrics().catalogue()) {
      const { labels } = metric;
      if (metric.type === 'histogram') {
        exported.set(`${metric.name}_bucket`, [...labels, 'le']);
        exported.set(`${metric.name}_sum`, labels);
        exported.set(`${metric.name}_count`, labels);
      } else exported.set(metric.name, labels);
    }
    const used = queries();
    expect(used.length).toBeGreaterThan(10);
    for (const query of used) {
      const names = query.match(/\b(serve|flotilla)_[a-z_]+\b/g) ?? [];
      expect(names.length, query).toBeGreaterThan(0);
      for (const name of names) {
        expect([...exported.keys()], query).toContain(name);
        const grouped = [...query.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => (m[1] ?? '').split(',').map((l) => l.trim()));
        const selected = [...query.matchAll(/([a-z_]+)=~?"/g)].map((m) => m[1] ?? '');
        const labels = new Set(names.flatMap((n) => exported.get(n) ?? []));
        for (const label of [...grouped, ...selected]) expect([...labels], `${label} in ${query}`).toContain(label);
      }
    }
  });

  it('docs/metrics.md documents every metric with its type and labels', () => {
    const doc = readFileSync(join(EXAMPLES, '..', 'docs', 'metrics.md'), 'utf8');
    for (const { name, type, labels } of new PrometheusMetrics().catalogue()) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${name}\``));
      expect(row, name).toBeDefined();
      expect(row).toContain(` ${type} `);
      for (const label of labels) expect(row, `${label} of ${name}`).toContain(`\`${label}\``);
    }
  });

  it('scrape /-/metrics, where the front door serves them', () => {
    const config = readFileSync(join(EXAMPLES, 'prometheus', 'prometheus.yml'), 'utf8');
    expect(config).toMatch(/metrics_path: \/-\/metrics/);
  });
});
