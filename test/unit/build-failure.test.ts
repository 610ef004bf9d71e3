import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blameFile, fileToFix } from '../../src/runtime/build-failure.js';
import { FlotillaError } from '../../src/common/errors.js';

function context(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'flt-blame-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe('the file a failed build comes from', () => {
  it("names the user's Dockerfile at the failing step's instruction, continuations and comments counted right", () => {
    const dir = context({
      Dockerfile:
        'ARG FLOTILLA_BASE_IMAGE\n# base\nFROM ${FLOTILLA_BASE_IMAGE}\n\nRUN apt-get update && \\\n  apt-get install -y nothing\nRUN exit 3\n',
    });
    const log = [
      'Step 1/4 : ARG FLOTILLA_BASE_IMAGE',
      'Step 2/4 : FROM x',
      'Step 3/4 : RUN apt-get update &&   apt-get install -y nothing',
      'E: Unable to locate package nothing',
    ];
    expect(fileToFix({ contextDir: dir, dockerfile: 'Dockerfile' }, log)).toBe(
      `${join(dir, 'Dockerfile')}:5: RUN apt-get update &&  apt-get install -y nothing`,
    );
  });

  it('names apt.txt, requirements.txt and package.json at the line of the package the installer could not get', () => {
    const dir = context({
      'apt.txt': '# tools\ncurl\nlibnothing-dev\n',
      'requirements.txt': 'numpy\nnopkg==9.9  # pinned\n',
      'package.json': '{\n  "dependencies": {\n    "left-pad": "1.3.0",\n    "@acme/missing": "2.0.0"\n  }\n}\n',
    });
    const apt = ['Step 2/3 : RUN apt-get update && apt-get install -y curl libnothing-dev', 'E: Unable to locate package libnothing-dev'];
    expect(fileToFix({ contextDir: dir }, apt)).toBe(`${join(dir, 'apt.txt')}:3: libnothing-dev`);
    const pip = [
      'Step 6/9 : RUN python3 -m pip install -r /tmp/flotilla-build/requirements.txt',
      'ERROR: No matching distribution found for nopkg==9.9',
    ];
    expect(fileToFix({ contextDir: dir }, pip)).toBe(`${join(dir, 'requirements.txt')}:2: nopkg`);
    const npm = [
      'Step 4/7 : RUN cp /tmp/flotilla-build/deps/* /app/ && npm install --omit=dev',
      'npm error 404 Not Found - GET https://registry.npmjs.org/@acme%2fmissing - Not found',
    ];
    expect(fileToFix({ contextDir: dir }, npm)).toBe(`${join(dir, 'package.json')}:4: @acme/missing`);
    expect(fileToFix({ contextDir: dir }, ['Step 4/7 : RUN npm ci --omit=dev', 'npm error something else'])).toBe(
      join(dir, 'package.json'),
    );
  });

  it('names nothing for a step of Flotilla its own, and puts the file first in the error', () => {
    const dir = context({ 'apt.txt': 'curl\n' });
    expect(fileToFix({ contextDir: dir }, ['Step 2/5 : COPY replica/ /opt/flotilla/replica/'])).toBeUndefined();
    const failed = new FlotillaError('BUILD_FAILED', 'building image x failed: exit 100', {
      log: ['Step 2/3 : RUN apt-get update && apt-get install -y curl', 'E: Unable to locate package curl'],
    });
    expect(blameFile(failed, { contextDir: dir })).toMatchObject({
      code: 'BUILD_FAILED',
      message: `fix ${join(dir, 'apt.txt')}:1: curl\nbuilding image x failed: exit 100`,
    });
  });
});
