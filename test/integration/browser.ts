import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';

export type { Page };

/** Where browser tests leave their screenshots (git-ignored). */
export const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-results');

/**
 * Debian's Chromium, headless, with a fresh profile (its --user-data-dir) and none of its background connections (this
 * machine's closed network refuses them). `errors` collects every console error and page error.
 */
export async function openBrowser(): Promise<{ page: Page; errors: string[]; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'flt-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    viewport: { width: 1366, height: 768 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => errors.push(error.message));
  mkdirSync(ARTIFACTS, { recursive: true });
  return {
    page,
    errors,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
