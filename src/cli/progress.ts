// Progress for long commands (meta-training, evaluation): a live bar on an interactive terminal,
// and on a pipe, a log file or CI only an occasional plain line, so logs stay readable.
import cliProgress from 'cli-progress';
import { configError } from '../errors.js';

/** Extra values shown after the rate and ETA, e.g. { metaLoss: 0.35 }. */
export type ProgressPayload = Record<string, number | string>;

export type ProgressMode = 'bar' | 'lines' | 'silent';

export interface ProgressOptions {
  /** Shown in front of the bar or line, e.g. "meta-train". */
  label?: string;
  /** Where progress goes (default process.stderr, so stdout stays clean for results). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** 'auto' (default): a bar on a terminal, lines otherwise (and whenever CI is set). */
  mode?: ProgressMode | 'auto';
  /** Lines mode: one line each time progress crosses a multiple of this percentage (default 10; 0 = none). */
  everyPercent?: number;
  /** Environment consulted for CI / TERM (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Clock in milliseconds (default Date.now); lets tests control rates. */
  now?: () => number;
}

/** Chooses how to report: a live bar needs an interactive terminal and no CI log capturing it. */
export function detectMode(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): ProgressMode {
  const ci = env.CI !== undefined && env.CI !== '' && env.CI !== '0' && env.CI.toLowerCase() !== 'false';
  if (ci || env.TERM === 'dumb' || stream.isTTY !== true) return 'lines';
  return 'bar';
}

export class ProgressReporter {
  readonly mode: ProgressMode;
  private readonly label: string;
  private readonly stream: NodeJS.WritableStream;
  private readonly everyPercent: number;
  private readonly now: () => number;
  private bar: cliProgress.SingleBar | undefined;
  private total = 0;
  private initial = 0;
  private step = 0;
  private startedAt = 0;
  private nextLinePercent = 0;
  private running = false;

  constructor(options: ProgressOptions = {}) {
    this.stream = options.stream ?? process.stderr;
    const mode = options.mode ?? 'auto';
    this.mode = mode === 'auto' ? detectMode(this.stream as { isTTY?: boolean }, options.env ?? process.env) : mode;
    this.label = options.label ?? 'progress';
    this.everyPercent = options.everyPercent ?? 10;
    if (!(this.everyPercent >= 0 && this.everyPercent <= 100)) {
      throw configError('everyPercent', `must be in [0, 100], got ${this.everyPercent}`);
    }
    this.now = options.now ?? Date.now;
  }

  /** Begins a run of `total` steps, `initial` of which are already done (a resumed run). */
  start(total: number, initial = 0): void {
    if (!(Number.isInteger(total) && total > 0)) throw configError('total', `must be a positive integer, got ${total}`);
    if (!(Number.isInteger(initial) && initial >= 0 && initial <= total)) {
      throw configError('initial', `must be an integer in [0, ${total}], got ${initial}`);
    }
    if (this.running) this.stop();
    this.total = total;
    this.initial = initial;
    this.step = initial;
    this.startedAt = this.now();
    this.running = true;
    // The first line is due at the first multiple of everyPercent above where we start.
    const startPercent = (100 * initial) / total;
    this.nextLinePercent = this.everyPercent > 0 ? (Math.floor(startPercent / this.everyPercent) + 1) * this.everyPercent : Infinity;
    if (this.mode === 'bar') {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: `${this.label} [{bar}] {value}/{total} | {rate} steps/s | ETA {eta_formatted}{extra}`,
          hideCursor: true,
          etaBuffer: 100,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, initial, { rate: '-', extra: '' });
    }
  }

  /** Reports that `step` steps are done (absolute, not an increment), with optional extra values. */
  update(step: number, payload: ProgressPayload = {}): void {
    if (!this.running) throw new Error('ProgressReporter.update() called before start()');
    this.step = Math.min(Math.max(step, 0), this.total);
    const rate = this.rate();
    const extra = formatPayload(payload);
    if (this.mode === 'bar') {
      this.bar?.update(this.step, { rate: rate === undefined ? '-' : formatNumber(rate), extra: extra && ` | ${extra}` });
    } else if (this.mode === 'lines') {
      const percent = (100 * this.step) / this.total;
      if (percent >= this.nextLinePercent) {
        this.nextLinePercent = (Math.floor(percent / this.everyPercent) + 1) * this.everyPercent;
        this.writeLine(`${Math.floor(percent)}%`, rate, extra);
      }
    }
  }

  /** Ends the run: the bar is finalized; in lines mode a summary line (steps, time, rate) is written. */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    if (this.bar) {
      this.bar.stop();
      this.bar = undefined;
    } else if (this.mode === 'lines' && this.everyPercent > 0) {
      const seconds = (this.now() - this.startedAt) / 1000;
      const rate = this.rate();
      this.stream.write(
        `${this.label}: ${this.step === this.total ? 'done' : 'stopped at'} ${this.step}/${this.total} after ${formatDuration(seconds)}` +
          (rate === undefined ? '' : ` (${formatNumber(rate)} steps/s)`) +
          '\n',
      );
    }
  }

  /** Steps per second since start (counting only steps done in this run). */
  private rate(): number | undefined {
    const seconds = (this.now() - this.startedAt) / 1000;
    const done = this.step - this.initial;
    return seconds > 0 && done > 0 ? done / seconds : undefined;
  }

  private writeLine(percent: string, rate: number | undefined, extra: string): void {
    const parts = [`${this.label} ${percent} ${this.step}/${this.total}`];
    if (rate !== undefined) {
      parts.push(`${formatNumber(rate)} steps/s`);
      parts.push(`ETA ${formatDuration((this.total - this.step) / rate)}`);
    }
    if (extra) parts.push(extra);
    this.stream.write(parts.join(' | ') + '\n');
  }
}

function formatPayload(payload: ProgressPayload): string {
  return Object.entries(payload)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? formatNumber(v) : v}`)
    .join(' | ');
}

/** Four significant digits, without exponent noise for everyday magnitudes. */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const a = Math.abs(x);
  return a >= 1e-3 && a < 1e6 ? String(Number(x.toPrecision(4))) : x.toExponential(3);
}

/** "45s", "3m05s", "2h07m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** A reporter for a command; see ProgressOptions for how the mode is chosen. */
export function createProgress(options: ProgressOptions = {}): ProgressReporter {
  return new ProgressReporter(options);
}

/**
 * Undoes what a live bar does to a terminal (hidden cursor, line wrap off) when the process must quit
 * without stopping the bar (a second Ctrl-C). Nothing is written to a pipe or file.
 */
export function restoreTerminal(stream: NodeJS.WritableStream & { isTTY?: boolean }): void {
  if (stream.isTTY) stream.write('\x1b[?25h\x1b[?7h\n');
}
