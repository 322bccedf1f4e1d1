// Determinism rules follow Temporal's samples: workflow code must not touch Node built-ins,
// and every promise must be awaited or explicitly handed off.
const tseslint = require('typescript-eslint');
const { builtinModules } = require('node:module');

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

module.exports = tseslint.config(
  { ignores: ['node_modules/**', '.katafleet/**', 'coverage/**', '*.config.js'] },
  ...tseslint.configs.recommended,
  {
    // Plain CommonJS that runs before dependencies are installed (setup) or loads tsx (bin).
    files: ['**/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: __dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Workflows must be deterministic: no Node built-ins.' })),
          patterns: [
            { group: ['@temporalio/activity', '@temporalio/client', '@temporalio/worker', 'node-ssh', '@iarna/toml'], message: 'Workflows import only @temporalio/workflow, pure modules and activity *types*.' },
            { group: ['../activities/*', '../activities'], allowTypeImports: true, message: 'Import activity types only: `import type { ... }`.' },
          ],
        },
      ],
      'no-restricted-globals': ['error', { name: 'setTimeout', message: 'Use sleep() from @temporalio/workflow.' }, { name: 'process', message: 'Workflows must not read the environment.' }],
    },
  },
);
