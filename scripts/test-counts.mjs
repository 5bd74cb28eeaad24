// Counting `npm test`'s results from the runners' machine-readable output (kept apart so it is testable).

const sum = (text, re) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);

/**
 * cargo test: every "test result:" line; tests that skipped themselves (no data) print "SKIPPED <name>"
 * and count as skipped, not passed.
 */
export function countCargo(text) {
  const skipped = [...text.matchAll(/^SKIPPED \S+/gm)].length;
  return {
    passed: sum(text, /test result: \w+\. (\d+) passed/g) - skipped,
    failed: sum(text, /test result: \w+\. \d+ passed; (\d+) failed/g),
    skipped: skipped + sum(text, /test result: \w+\. \d+ passed; \d+ failed; (\d+) ignored/g),
  };
}

/**
 * ava's TAP reporter: one "ok"/"not ok" line per test (skips carry "# SKIP"), plus uncaught exceptions
 * and unhandled rejections as "not ok" lines of their own. Counted per line so that a run that failed,
 * timed out or crashed still counts what passed.
 */
export function countTap(text) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const line of text.split('\n')) {
    const m = /^(not ok|ok) \d+(.*)$/.exec(line);
    if (!m) continue;
    if (/#\s*(SKIP|TODO)\b/i.test(m[2])) skipped++;
    else if (m[1] === 'ok') passed++;
    else failed++;
  }
  return { passed, failed, skipped };
}
