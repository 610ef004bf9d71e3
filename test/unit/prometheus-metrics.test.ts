import { describe, expect, it } from 'vitest';
import type { Client } from '../../src/api.js';
import { PrometheusMetrics } from '../../src/admin/metrics.js';

/** The rendered samples of one metric family, as `name{labels} value` lines. */
async function samples(metrics: PrometheusMetrics, family: string): Promise<string[]> {
  const { body } = await metrics.render();
  return body.split('\n').filter((line) => line.startsWith(family) && !line.startsWith('#'));
}

describe('PrometheusMetrics: what the front door answered', () => {
  it('counts requests per endpoint, backend and status, and errors only from 400 up', async () => {
    const metrics = new PrometheusMetrics();
    metrics.request('hello', 'v1', 200, 0.001);
    metrics.request('hello', 'v1', 200, 0.001);
    metrics.request('hello', 'v1', 503, 0.001);
    metrics.request('hello', 'v2', 404, 0.001);
    expect(await samples(metrics, 'serve_num_http_requests_total')).toEqual([
      'serve_num_http_requests_total{endpoint="hello",backend="v1",status_code="200"} 2',
      'serve_num_http_requests_total{endpoint="hello",backend="v1",status_code="503"} 1',
      'serve_num_http_requests_total{endpoint="hello",backend="v2",status_code="404"} 1',
    ]);
    expect(await samples(metrics, 'serve_num_http_error_requests_total')).toEqual([
      'serve_num_http_error_requests_total{endpoint="hello",backend="v1",error_code="503"} 1',
      'serve_num_http_error_requests_total{endpoint="hello",backend="v2",error_code="404"} 1',
    ]);
  });

  it('renders latency as a cumulative histogram: a bucket holds what is at most its bound, +Inf everything', async () => {
    const metrics = new PrometheusMetrics();
    for (const seconds of [0.005, 0.006, 0.3, 31]) metrics.request('hello', 'v1', 200, seconds);
    const lines = await samples(metrics, 'serve_http_request_latency_seconds');
    const of = (suffix: string) => lines.find((line) => line.startsWith(`serve_http_request_latency_seconds${suffix}`))?.split(' ')[1];
    expect(of('_bucket{le="0.005",endpoint="hello",backend="v1"}')).toBe('1');
    expect(of('_bucket{le="0.01",endpoint="hello",backend="v1"}')).toBe('2');
    expect(of('_bucket{le="0.5",endpoint="hello",backend="v1"}')).toBe('3');
    expect(of('_bucket{le="30",endpoint="hello",backend="v1"}')).toBe('3');
    expect(of('_bucket{le="+Inf",endpoint="hello",backend="v1"}')).toBe('4');
    expect(Number(of('_sum{endpoint="hello",backend="v1"}'))).toBeCloseTo(31.311);
    expect(of('_count{endpoint="hello",backend="v1"}')).toBe('4');
  });

  it('counts on across scrapes', async () => {
    const metrics = new PrometheusMetrics();
    metrics.request('hello', 'v1', 200, 0.001);
    await metrics.render();
    metrics.request('hello', 'v1', 200, 0.001);
    expect(await samples(metrics, 'serve_num_http_requests_total')).toEqual([
      'serve_num_http_requests_total{endpoint="hello",backend="v1",status_code="200"} 2',
    ]);
    expect(await samples(metrics, 'serve_http_request_latency_seconds_count')).toEqual([
      'serve_http_request_latency_seconds_count{endpoint="hello",backend="v1"} 2',
    ]);
  });

  it('quotes label values in the latency histogram as prom-client does in its counters', async () => {
    const metrics = new PrometheusMetrics();
    metrics.request('a"b\\c', 'v1', 200, 0.001);
    const counted = (await samples(metrics, 'serve_num_http_requests_total'))[0];
    const timed = (await samples(metrics, 'serve_http_request_latency_seconds_count'))[0];
    expect(counted).toContain('endpoint="a\\"b\\\\c"');
    expect(timed).toBe('serve_http_request_latency_seconds_count{endpoint="a\\"b\\\\c",backend="v1"} 1');
  });
});

describe('PrometheusMetrics: what the client reports', () => {
  it('reads backends and replicas once per scrape, and once for the scrapes within a second of it', async () => {
    let now = 0;
    let reads = 0;
    let state = 'starting';
    const client = {
      listBackends: async () => {
        reads++;
        return { hello: { rollout: null, autoscalingStatus: null } };
      },
      listReplicas: async () => [{ id: 'r1', state }],
    } as unknown as Client;
    const metrics = new PrometheusMetrics({ now: () => now });
    metrics.countReplicasOf(client);
    expect(await samples(metrics, 'flotilla_replicas')).toEqual(['flotilla_replicas{backend="hello",state="starting"} 1']);
    expect(reads).toBe(1);
    state = 'ready';
    now += 999;
    await Promise.all([metrics.render(), metrics.render()]);
    expect(reads).toBe(1);
    now += 1;
    expect(await samples(metrics, 'flotilla_replicas')).toEqual(['flotilla_replicas{backend="hello",state="ready"} 1']);
    expect(reads).toBe(2);
  });
});
