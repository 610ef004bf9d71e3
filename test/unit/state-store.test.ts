import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StateStore } from '../../src/controller/state-store.js';

describe('StateStore', () => {
  const path = () => join(mkdtempSync(join(tmpdir(), 'flt-state-')), 'nested', 'state.json');

  it('loads nothing before the first save, then what was saved', () => {
    const store = new StateStore(path());
    expect(store.load()).toBeUndefined();
    store.save({ n: 1 });
    store.save({ n: 2 });
    expect(store.load()).toEqual({ n: 2 });
  });

  it('leaves no temporary file behind', () => {
    const file = path();
    new StateStore(file).save({ ok: true });
    expect(readdirSync(join(file, '..'))).toEqual(['state.json']);
  });

  it('refuses a torn or foreign file with a clear error', () => {
    const file = path();
    new StateStore(file).save({});
    writeFileSync(file, '{"backends": [');
    expect(() => new StateStore(file).load()).toThrow(/not valid JSON.*move it away/);
  });

  it('clears', () => {
    const store = new StateStore(path());
    store.save({});
    store.clear();
    expect(store.load()).toBeUndefined();
  });
});
