import { describe, expect, it } from 'vitest';
import { InstanceClaim } from '../../src/controller/instance-claim.js';
import type { ContainerRuntime, InstanceOwner } from '../../src/runtime/container-runtime.js';

function engine() {
  const markers = new Map<string, InstanceOwner>();
  const runtime = {
    readInstanceOwner: (instance: string) => Promise.resolve(markers.get(instance)),
    writeInstanceOwner: (instance: string, owner: InstanceOwner) => Promise.resolve(void markers.set(instance, owner)),
    removeInstanceOwner: (instance: string, nonce: string) =>
      Promise.resolve(void (markers.get(instance)?.nonce === nonce && markers.delete(instance))),
  } as unknown as ContainerRuntime;
  return { runtime, markers };
}

const alive = () => Promise.resolve(true);
const dead = () => Promise.resolve(false);

describe('one control plane per instance on an engine', () => {
  it('refuses a start while the recorded owner answers, naming it', async () => {
    const { runtime } = engine();
    await (await InstanceClaim.check(runtime, 'shop', dead)).take('http://127.0.0.1:8001', 'http://127.0.0.1:8000');
    await expect(InstanceClaim.check(runtime, 'shop', alive)).rejects.toMatchObject({
      code: 'INSTANCE_RUNNING',
      message: expect.stringMatching(
        /instance 'shop' is already run by process \d+ on this Docker engine \(admin API http:\/\/127.0.0.1:8001/,
      ),
    });
    await expect(InstanceClaim.check(runtime, 'other', alive)).resolves.toBeInstanceOf(InstanceClaim);
  });

  it("takes over a dead owner's marker, and releases only its own", async () => {
    const { runtime, markers } = engine();
    const first = await InstanceClaim.check(runtime, 'shop', dead);
    await first.take('http://127.0.0.1:8001', 'http://127.0.0.1:8000');
    const second = await InstanceClaim.check(runtime, 'shop', dead);
    await second.take('http://127.0.0.1:9001', 'http://127.0.0.1:9000');
    await first.release();
    expect(markers.get('shop')?.adminUrl).toBe('http://127.0.0.1:9001');
    await second.release();
    expect(markers.has('shop')).toBe(false);
  });
});
