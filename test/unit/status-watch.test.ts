import { describe, expect, it } from 'vitest';
import type { BackendInfo, Client, ReplicaInfo, RolloutStatus } from '../../src/api.js';
import { watchStatus } from '../../src/cli/status.js';

/** What the control plane reports at one poll: the backend's rollout and its ready replicas' versions. */
interface Poll {
  rollout: RolloutStatus | null;
  version: string;
  ready: string[];
  /** Backends whose image is being built. */
  building?: string[];
}

/** A client that answers each poll of `watchStatus` (listBackends, listReplicas) with the next of `polls`, then the last. */
function scripted(polls: Poll[]): Client {
  let at = -1;
  const current = () => polls[Math.min(at, polls.length - 1)]!;
  return {
    httpUrl: 'http://127.0.0.1:8000',
    listEndpoints: async () => ({}),
    listBackends: async () => {
      at += 1;
      const { rollout, version } = current();
      return { greeter: { numReplicas: 2, rollout, version, autoscaling: null, autoscalingStatus: null } as unknown as BackendInfo };
    },
    listBuilds: async () =>
      (current().building ?? []).map((backend) => ({ backend, image: 'i', step: 'Step 2/4 : RUN npm ci', startedAt: '' })),
    listReplicas: async () =>
      current().ready.map((version, i) => ({ id: `r${i}`, state: 'ready', version, containerId: 'c', restarts: 0 }) as ReplicaInfo),
  } as unknown as Client;
}

const rolling = (state: RolloutStatus['state'], reason: string | null = null): RolloutStatus => ({
  state,
  fromVersion: 'v1',
  targetVersion: 'v2',
  reason,
});

describe('flotilla status --watch', () => {
  it('prints a line when a backend progresses, none when nothing changed, and stops once the rollout is done', async () => {
    const client = scripted([
      { rollout: rolling('rolling'), version: 'v2', ready: ['v1', 'v1'] },
      { rollout: rolling('rolling'), version: 'v2', ready: ['v1', 'v1'] },
      { rollout: rolling('rolling'), version: 'v2', ready: ['v1', 'v2'] },
      { rollout: rolling('completed'), version: 'v2', ready: ['v2', 'v2'] },
    ]);
    const out: string[] = [];
    expect(await watchStatus(client, { tty: false, write: (text) => out.push(text), intervalMs: 1 })).toBe(true);
    expect(out).toEqual([
      'greeter: rolling v1 → v2, 0/2 ready of version v2, 2 of older versions\n',
      'greeter: rolling v1 → v2, 1/2 ready of version v2, 1 of older versions\n',
      'greeter: completed v1 → v2, 2/2 ready of version v2\n',
    ]);
  });

  it('answers false when a rollout it saw under way rolled back, with the reason on the last line', async () => {
    const client = scripted([
      { rollout: rolling('rolling'), version: 'v2', ready: ['v1', 'v1'] },
      {
        rollout: { ...rolling('rolled-back', 'constructor threw'), fromVersion: 'v2', targetVersion: 'v1' },
        version: 'v1',
        ready: ['v1', 'v1'],
      },
    ]);
    const out: string[] = [];
    expect(await watchStatus(client, { tty: false, write: (text) => out.push(text), intervalMs: 1 })).toBe(false);
    expect(out.at(-1)).toBe('greeter: rolled-back v2 → v1, 2/2 ready of version v1 (constructor threw)\n');
  });

  it('prints once and answers true when no rollout is under way, even after an old rollback', async () => {
    const client = scripted([{ rollout: rolling('rolled-back', 'old news'), version: 'v1', ready: ['v1', 'v1'] }]);
    const out: string[] = [];
    expect(await watchStatus(client, { tty: false, write: (text) => out.push(text), intervalMs: 1 })).toBe(true);
    expect(out).toHaveLength(1);
  });

  it('started while a deploy builds the image, waits for the rollout that follows instead of reporting the previous one', async () => {
    const previous = { ...rolling('completed'), fromVersion: 'v0', targetVersion: 'v1' };
    const client = scripted([
      { rollout: previous, version: 'v1', ready: ['v1', 'v1'], building: ['greeter'] },
      { rollout: previous, version: 'v1', ready: ['v1', 'v1'] },
      { rollout: rolling('rolling'), version: 'v2', ready: ['v1', 'v2'] },
      { rollout: rolling('completed'), version: 'v2', ready: ['v2', 'v2'] },
    ]);
    const out: string[] = [];
    expect(await watchStatus(client, { tty: false, write: (text) => out.push(text), intervalMs: 1 })).toBe(true);
    expect(out).toEqual([
      'greeter: building image, Step 2/4 : RUN npm ci\n',
      'greeter: waiting for its rollout to start\n',
      'greeter: rolling v1 → v2, 1/2 ready of version v2, 1 of older versions\n',
      'greeter: completed v1 → v2, 2/2 ready of version v2\n',
    ]);
  });

  it('stops waiting for a rollout when the build ended and the version stayed (a failed build)', async () => {
    const client = scripted([
      { rollout: null, version: 'v1', ready: ['v1', 'v1'], building: ['greeter'] },
      { rollout: null, version: 'v1', ready: ['v1', 'v1'] },
    ]);
    const out: string[] = [];
    expect(await watchStatus(client, { tty: false, write: (text) => out.push(text), intervalMs: 1 })).toBe(true);
    expect(out.slice(-2)).toEqual(['greeter: waiting for its rollout to start\n', 'greeter: 2/2 ready of version v1\n']);
  });

  it('on a terminal, redraws the whole status in place with a ROLLOUTS section at each poll', async () => {
    const client = scripted([
      { rollout: rolling('in-place'), version: 'v2', ready: ['v1'] },
      { rollout: rolling('completed'), version: 'v2', ready: ['v2', 'v2'] },
    ]);
    const out: string[] = [];
    await watchStatus(client, { tty: true, write: (text) => out.push(text), intervalMs: 1 });
    expect(out).toHaveLength(2);
    expect(out.every((screen) => screen.startsWith('\x1b[H\x1b[2JHTTP: http://127.0.0.1:8000\n'))).toBe(true);
    expect(out[0]).toContain('\nROLLOUTS\ngreeter: in-place v1 → v2, 0/2 ready of version v2, 1 of older versions\n');
    expect(out[1]).toContain('\nROLLOUTS\ngreeter: completed v1 → v2, 2/2 ready of version v2\n');
  });
});
