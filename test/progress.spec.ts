import test from 'ava';
import { PassThrough } from 'node:stream';
import { createProgress, detectMode, formatDuration, formatNumber } from '../src/cli/progress.js';

/** A stream that records what is written to it; `tty` makes it claim to be a terminal. */
function capture(tty = false) {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number };
  if (tty) {
    stream.isTTY = true;
    stream.columns = 120;
  }
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
}

/** A clock the test moves by hand. */
function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** Runs `fn` with process.stdout.write replaced, returning what would have gone to stdout. */
function stdoutDuring(fn: () => void): string {
  const original = process.stdout.write;
  let out = '';
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    fn();
  } finally {
    process.stdout.write = original;
  }
  return out;
}

test('mode: bar only on a terminal outside CI', (t) => {
  t.is(detectMode({ isTTY: true }, {}), 'bar');
  t.is(detectMode({ isTTY: false }, {}), 'lines');
  t.is(detectMode({}, {}), 'lines');
  t.is(detectMode({ isTTY: true }, { CI: 'true' }), 'lines');
  t.is(detectMode({ isTTY: true }, { CI: '1' }), 'lines');
  t.is(detectMode({ isTTY: true }, { CI: 'false' }), 'bar');
  t.is(detectMode({ isTTY: true }, { TERM: 'dumb' }), 'lines');
});

test('non-TTY: a line every N%, rate, ETA and payload, nothing on stdout', (t) => {
  const out = capture(false);
  const c = clock();
  const p = createProgress({ label: 'meta-train', stream: out.stream, env: {}, everyPercent: 25, now: c.now });
  t.is(p.mode, 'lines');
  const stdout = stdoutDuring(() => {
    p.start(100);
    for (let step = 1; step <= 100; step++) {
      c.advance(100); // 10 steps/s
      p.update(step, { metaLoss: 1 / step });
    }
    p.stop();
  });
  t.is(stdout, '');
  const lines = out.text().trimEnd().split('\n');
  t.deepEqual(lines, [
    'meta-train 25% 25/100 | 10 steps/s | ETA 8s | metaLoss 0.04',
    'meta-train 50% 50/100 | 10 steps/s | ETA 5s | metaLoss 0.02',
    'meta-train 75% 75/100 | 10 steps/s | ETA 3s | metaLoss 0.01333',
    'meta-train 100% 100/100 | 10 steps/s | ETA 0s | metaLoss 0.01',
    'meta-train: done 100/100 after 10s (10 steps/s)',
  ]);
});

test('non-TTY: a resumed run counts its rate from where it resumed; big jumps give one line', (t) => {
  const out = capture(false);
  const c = clock();
  const p = createProgress({ label: 'x', stream: out.stream, env: {}, everyPercent: 10, now: c.now });
  p.start(1000, 450);
  c.advance(2000);
  p.update(470); // 47%: below the next multiple of 10 above 45%
  t.is(out.text(), '');
  c.advance(3000);
  p.update(950); // 95%: one line, not five
  c.advance(1000);
  p.stop();
  const lines = out.text().trimEnd().split('\n');
  t.deepEqual(lines, ['x 95% 950/1000 | 100 steps/s | ETA 1s', 'x: stopped at 950/1000 after 6s (83.33 steps/s)']);
});

test('everyPercent 0 and silent mode write nothing at all', (t) => {
  for (const opts of [{ everyPercent: 0 }, { mode: 'silent' as const }]) {
    const out = capture(true);
    const p = createProgress({ stream: out.stream, env: { CI: 'true' }, ...opts });
    const stdout = stdoutDuring(() => {
      p.start(10);
      for (let i = 1; i <= 10; i++) p.update(i, { loss: i });
      p.stop();
    });
    t.is(out.text(), '');
    t.is(stdout, '');
  }
});

test('TTY: draws a bar with the count and payload on the given stream, not stdout', (t) => {
  const out = capture(true);
  const p = createProgress({ label: 'eval', stream: out.stream, env: {} });
  t.is(p.mode, 'bar');
  const stdout = stdoutDuring(() => {
    p.start(20, 5);
    p.update(20, { metaLoss: 0.25 });
    p.stop();
  });
  t.is(stdout, '');
  t.regex(out.text(), /eval \[.*\] 20\/20 \| [\d.-]+ steps\/s \| ETA .* \| metaLoss 0\.25/);
});

test('bad totals are refused; update before start is a bug', (t) => {
  const p = createProgress({ mode: 'silent' });
  t.throws(() => p.start(0), { message: /total/ });
  t.throws(() => p.start(10, 11), { message: /initial/ });
  t.throws(() => p.update(1), { message: /before start/ });
  t.notThrows(() => p.stop());
});

test('number and duration formatting', (t) => {
  t.is(formatNumber(0.123456), '0.1235');
  t.is(formatNumber(12), '12');
  t.is(formatNumber(1.5e-6), '1.500e-6');
  t.is(formatDuration(45.4), '45s');
  t.is(formatDuration(185), '3m05s');
  t.is(formatDuration(7620), '2h07m');
  t.is(formatDuration(Infinity), '?');
});
