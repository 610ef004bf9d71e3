import { describe, expect, it } from 'vitest';
import { Scheduler, type NodeCapacity, type ResourceRequest } from '../../src/resources/scheduler.js';

const ask = (numCpus: number, numGpus = 0, memoryMb: number | null = null): ResourceRequest => ({ numCpus, numGpus, memoryMb });
const twoGpus = () => new Scheduler({ cpus: 8, memoryMb: 4096, gpus: [{ id: '0' }, { id: '1' }] });

describe('Scheduler', () => {
  it('packs fractional GPUs onto one device before using the next', () => {
    const scheduler = twoGpus();
    expect(scheduler.reserve('a', ask(1, 0.5)).gpuIds).toEqual(['0']);
    expect(scheduler.reserve('b', ask(1, 0.5)).gpuIds).toEqual(['0']);
    expect(scheduler.reserve('c', ask(1, 0.5)).gpuIds).toEqual(['1']);
    expect(scheduler.free().gpus).toEqual({ '0': 0, '1': 0.5 });
  });

  it('puts a small fraction on the fullest GPU it fits (best fit)', () => {
    const scheduler = twoGpus();
    scheduler.reserve('a', ask(0, 0.25));
    scheduler.reserve('b', ask(0, 1));
    scheduler.release('b');
    scheduler.reserve('c', ask(0, 0.5));
    expect(scheduler.reserve('d', ask(0, 0.25)).gpuIds).toEqual(['0']);
    expect(scheduler.free().gpus).toEqual({ '0': 0, '1': 1 });
  });

  it('gives whole GPUs only from idle devices, despite fragmentation', () => {
    const scheduler = twoGpus();
    scheduler.reserve('a', ask(0, 0.25));
    scheduler.reserve('b', ask(0, 0.25));
    scheduler.release('a');
    expect(scheduler.reserve('c', ask(0, 1)).gpuIds).toEqual(['1']);
    expect(() => scheduler.reserve('d', ask(0, 1))).toThrow(/GPU 0: 0.75 free, GPU 1: 0 free/);
  });

  it('takes several whole GPUs at once', () => {
    const scheduler = twoGpus();
    expect(scheduler.reserve('a', ask(1, 2))).toMatchObject({ gpuIds: ['0', '1'], gpuShare: 1 });
    expect(() => scheduler.reserve('b', ask(1, 0.1))).toThrow(expect.objectContaining({ code: 'INSUFFICIENT_RESOURCES' }));
  });

  it('refuses what does not fit, saying what was asked and what is free, and changes nothing', () => {
    const scheduler = new Scheduler({ cpus: 2, memoryMb: 1000, gpus: [] });
    scheduler.reserve('a', ask(1.5, 0, 600));
    const before = scheduler.free();
    expect(() => scheduler.reserve('b', ask(1, 0, 500))).toThrow(
      'not enough resources: a replica needs 1 CPU, 0.5 of 2 free and 500 MB of memory, 400 of 1000 MB free',
    );
    expect(() => scheduler.reserve('c', ask(0.5, 1))).toThrow(/this machine has no GPUs/);
    expect(scheduler.free()).toEqual(before);
  });

  it('frees a reservation on release', () => {
    const scheduler = new Scheduler({ cpus: 1, memoryMb: 100, gpus: [{ id: '0' }] });
    scheduler.reserve('a', ask(1, 1, 100));
    scheduler.release('a');
    scheduler.release('a');
    expect(scheduler.free()).toEqual({ cpus: 1, memoryMb: 100, gpus: { '0': 1 } });
  });

  it('adopts existing placements, e.g. after a restart', () => {
    const scheduler = twoGpus();
    scheduler.adopt('old', { cpus: 2, memoryMb: 1024, gpuIds: ['1'], gpuShare: 0.5 });
    expect(scheduler.free()).toEqual({ cpus: 6, memoryMb: 3072, gpus: { '0': 1, '1': 0.5 } });
    expect(scheduler.reserve('new', ask(1, 0.5)).gpuIds).toEqual(['1']);
  });

  it('handles fractions that do not add up exactly in floating point', () => {
    const scheduler = new Scheduler({ cpus: 1, memoryMb: 0, gpus: [{ id: '0' }] });
    for (const id of ['a', 'b', 'c']) scheduler.reserve(id, ask(0.1, 0.1));
    expect(scheduler.reserve('d', ask(0.7, 0.7)).gpuIds).toEqual(['0']);
    expect(scheduler.free()).toEqual({ cpus: 0, memoryMb: 0, gpus: { '0': 0 } });
  });
});

const node = (name: string, cpus: number, gpus: string[] = [], ready = true): NodeCapacity => ({
  name,
  capacity: { cpus, memoryMb: 4096, gpus: gpus.map((id) => ({ id })) },
  ready,
});

describe('Scheduler on a cluster', () => {
  it('spreads replicas over the nodes by free CPUs and runs more replicas than one node fits', () => {
    const scheduler = Scheduler.ofNodes([node('w1', 2), node('w2', 2)]);
    const nodes = ['a', 'b', 'c', 'd'].map((id) => scheduler.reserve(id, ask(1)).node);
    expect(nodes).toEqual(['w1', 'w2', 'w1', 'w2']);
    expect(() => scheduler.reserve('e', ask(1))).toThrow(expect.objectContaining({ code: 'INSUFFICIENT_RESOURCES' }));
  });

  it('reports the capacity of the ready nodes in all, GPUs named by node', () => {
    const scheduler = Scheduler.ofNodes([node('w1', 2, ['g0']), node('w2', 4, ['g0', 'g1']), node('w3', 8, [], false)]);
    expect(scheduler.capacity).toEqual({ cpus: 6, memoryMb: 8192, gpus: [{ id: 'w1/g0' }, { id: 'w2/g0' }, { id: 'w2/g1' }] });
  });

  it('refuses a replica bigger than every node, naming the largest node', () => {
    const scheduler = Scheduler.ofNodes([node('small', 1), node('big', 2)]);
    expect(() => scheduler.reserve('a', ask(3))).toThrow(
      'not enough resources on any of 2 ready node(s): a replica needs 3 CPUs, 2 of 2 free on the largest node, big (2 CPUs, 4096 MB and 0 GPU)',
    );
    expect(scheduler.free()).toEqual({ cpus: 3, memoryMb: 8192, gpus: {} });
  });

  it('packs fractional GPUs per node and never splits a replica over two nodes', () => {
    const scheduler = Scheduler.ofNodes([node('w1', 8, ['g0']), node('w2', 4, ['g0', 'g1'])]);
    expect(scheduler.reserve('a', ask(1, 0.5))).toMatchObject({ node: 'w1', gpuIds: ['g0'] });
    expect(scheduler.reserve('b', ask(1, 0.5))).toMatchObject({ node: 'w1', gpuIds: ['g0'] });
    expect(scheduler.reserve('c', ask(1, 2))).toMatchObject({ node: 'w2', gpuIds: ['g0', 'g1'] });
    expect(() => scheduler.reserve('d', ask(0, 0.1))).toThrow(/GPU/);
  });

  it('places nothing new on a node that went down, and keeps what an adopted replica holds', () => {
    const scheduler = Scheduler.ofNodes([node('w1', 2), node('w2', 2)]);
    scheduler.adopt('old', { cpus: 1, memoryMb: null, gpuIds: [], gpuShare: 1, node: 'w2' });
    scheduler.setNodes([node('w1', 2), node('w2', 2, [], false)]);
    expect(scheduler.reserve('a', ask(1)).node).toBe('w1');
    expect(scheduler.reserve('b', ask(1)).node).toBe('w1');
    expect(() => scheduler.reserve('c', ask(1))).toThrow(/1 ready node/);
    scheduler.setNodes([node('w1', 2), node('w2', 2)]);
    expect(scheduler.reserve('c', ask(1)).node).toBe('w2');
    expect(() => scheduler.reserve('d', ask(1))).toThrow(/largest node/);
  });

  it('places a replacement away from the node its predecessor failed on while another node fits', () => {
    const scheduler = Scheduler.ofNodes([node('w1', 2), node('w2', 1)]);
    expect(scheduler.reserve('a', ask(1), 'w1').node).toBe('w2');
    expect(scheduler.reserve('b', ask(1), 'w2').node).toBe('w1');
    expect(scheduler.reserve('c', ask(1), 'w1').node).toBe('w1');
  });

  it('places replicas only on nodes that meet their placement constraints', () => {
    const zoned = (name: string, zone: string): NodeCapacity => ({
      ...node(name, 2),
      attributes: { 'node.labels.zone': zone, 'node.role': 'worker' },
    });
    const scheduler = Scheduler.ofNodes([zoned('w1', 'a'), zoned('w2', 'b'), zoned('w3', 'b')]);
    const inB = { ...ask(1), placementConstraints: ['node.labels.zone==b', 'node.hostname!=w3'] };
    expect([scheduler.reserve('a', inB).node, scheduler.reserve('b', inB).node]).toEqual(['w2', 'w2']);
    expect(() => scheduler.reserve('c', inB)).toThrow('on any of 1 ready node(s) that meet the placement constraints');
    expect(() => scheduler.reserve('d', { ...ask(1), placementConstraints: ['node.role==manager'] })).toThrow(
      'no ready node meets the placement constraints node.role==manager',
    );
  });

  it('refuses placement constraints on one machine', () => {
    expect(() =>
      new Scheduler({ cpus: 2, memoryMb: 100, gpus: [] }).reserve('a', { ...ask(1), placementConstraints: ['node.role==worker'] }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('runtime swarm') }));
  });
});
