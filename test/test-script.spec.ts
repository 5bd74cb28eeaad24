import test from 'ava';
// @ts-expect-error: a plain ES module of the build scripts, without declarations.
import { countCargo, countTap } from '../scripts/test-counts.mjs';

test('npm test counts ava from TAP: passed tests count even when others fail', (t) => {
  const tap = ['TAP version 13', 'ok 1 - a › one', 'not ok 2 - a › two', '  ---', 'ok 3 - b › three # SKIP', 'ok 4 - b › four', 'not ok 5 - uncaught exception', '1..5'].join('\n');
  t.deepEqual(countTap(tap), { passed: 2, failed: 2, skipped: 1 });
});

test('npm test counts cargo results; self-skipped tests are not passes', (t) => {
  const text = [
    'test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out',
    '---- real_zips stdout ----',
    'SKIPPED real_zips: the full Omniglot set is not in /x',
    'test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out',
  ].join('\n');
  t.deepEqual(countCargo(text), { passed: 7, failed: 2, skipped: 2 });
});
