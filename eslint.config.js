import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'test/fixtures/', 'examples/compose/app/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'dockerode', message: 'Only src/runtime/docker/ talks to the engine.' },
            { name: 'http-proxy', message: 'Only src/front-door/proxy-engine.ts uses http-proxy.' },
            { name: 'winston', message: 'Use the Logger from src/common/logger.ts.' },
            { name: 'convict', message: 'Configuration is read in src/config/config.ts.' },
            { name: 'tar-fs', message: 'Build contexts are packed in src/runtime/build-context.ts.' },
            { name: 'commander', message: 'The CLI is parsed in src/cli/main.ts.' },
            { name: 'yaml', message: 'App files are parsed in src/cli/app-file.ts.' },
            { name: 'prom-client', message: 'Metrics are defined in src/admin/metrics.ts.' },
            { name: '@balena/dockerignore', message: 'Build contexts are packed in src/runtime/build-context.ts.' },
            { name: 'playwright-core', message: 'Only test/integration/browser.ts drives the browser.' },
          ],
        },
      ],
    },
  },
  {
    files: [
      'src/runtime/docker/**',
      'src/front-door/proxy-engine.ts',
      'src/common/logger.ts',
      'src/config/config.ts',
      'src/runtime/build-context.ts',
      'src/cli/main.ts',
      'src/cli/app-file.ts',
      'src/admin/metrics.ts',
      'test/integration/browser.ts',
      'bench/servers/bare-proxy.ts',
    ],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    files: ['dashboard/**/*.js'],
    languageOptions: {
      sourceType: 'module',
      globals: {
        document: 'readonly',
        fetch: 'readonly',
        setTimeout: 'readonly',
        location: 'readonly',
        history: 'readonly',
        URLSearchParams: 'readonly',
        addEventListener: 'readonly',
      },
    },
  },
);
