// The hand-written type definitions compile and describe the documented usage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('index.d.ts type-checks the documented usage', () => {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const out = execFileSync(
    process.execPath,
    [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'test/usage.ts'],
    { cwd: root, encoding: 'utf8' },
  );
  assert.equal(out.trim(), '');
});
