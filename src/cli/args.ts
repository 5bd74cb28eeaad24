// Option parsers shared by the CLI's commands. Commander reports a parser's InvalidArgumentError as
// "option '--steps <n>' argument '-1' is invalid. <our message>", so messages say what was expected.
import { InvalidArgumentError } from 'commander';
import { readFile } from 'node:fs/promises';
import { configError, MetaplasticError } from '../errors.js';
import { checkConfigData, FORBIDDEN_KEYS } from '../validate.js';

/** Ends a command with a specific exit code (main() prints `message`, if any, and returns the code). */
export class CliExit extends Error {
  constructor(
    readonly exitCode: number,
    message = '',
  ) {
    super(message);
    this.name = 'CliExit';
  }
}

export function usageError(message: string): MetaplasticError {
  return new MetaplasticError('E_USAGE', message);
}

function integer(value: string, min: number, what: string): number {
  const n = /^[+-]?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected ${what}, got '${value}'`);
  return n;
}

export const positiveInt = (value: string): number => integer(value, 1, 'a positive integer');
export const nonNegativeInt = (value: string): number => integer(value, 0, 'a non-negative integer');
export const seedInt = (value: string): number => integer(value, 0, 'a non-negative integer seed');

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got '${value}'`);
  return n;
}

/** "10,50,100" → [10, 50, 100]. */
export function intList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) {
    throw new InvalidArgumentError(`expected a comma-separated list of positive integers (e.g. 10,50,100), got '${value}'`);
  }
  return parts.map(Number);
}

/** "0.5,0.25" → [0.5, 0.25]. */
export function positiveNumberList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  const n = parts.map(Number);
  if (parts.some((p, i) => p === '' || !Number.isFinite(n[i]) || n[i] <= 0)) {
    throw new InvalidArgumentError(`expected a comma-separated list of positive numbers (e.g. 0.5,0.25), got '${value}'`);
  }
  return n;
}

/** Repeatable option: collects every occurrence. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Applies one `--set key.path=value` to a configuration in place. The value is read as JSON when it
 * parses (numbers, booleans, null, arrays, objects), else taken as a string, so `rule.type=oja` works
 * unquoted. Numeric path segments index arrays (`learner.layers.0.units=64`).
 */
export function applySet(config: Record<string, unknown>, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw usageError(`--set expects key.path=value, got '${assignment}'`);
  const path = assignment.slice(0, eq).trim().split('.');
  if (path.some((p) => p === '')) throw usageError(`--set: empty segment in key path '${assignment.slice(0, eq)}'`);
  const forbidden = path.find((p) => FORBIDDEN_KEYS.has(p));
  if (forbidden !== undefined) throw usageError(`--set ${assignment.slice(0, eq)}: '${forbidden}' is not a configuration field`);
  const raw = assignment.slice(eq + 1);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  let node: unknown = config;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i];
    const parent = node as Record<string, unknown>;
    if (!Object.hasOwn(parent, key) || parent[key] === undefined || parent[key] === null) parent[key] = /^\d+$/.test(path[i + 1]) ? [] : {};
    node = parent[key];
    if (typeof node !== 'object') {
      throw usageError(`--set ${path.join('.')}: ${path.slice(0, i + 1).join('.')} is ${JSON.stringify(node)}, not an object`);
    }
  }
  (node as Record<string, unknown>)[path[path.length - 1]] = value;
}

/** Reads a JSON configuration file (a full configuration, or overrides when a preset is also given). */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new MetaplasticError('E_IO', `--config ${path}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw configError(path, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw configError(path, 'expected a JSON object');
  try {
    checkConfigData(data, '');
  } catch (e) {
    throw e instanceof MetaplasticError ? new MetaplasticError(e.code, `${path}: ${e.message}`) : e;
  }
  return data as Record<string, unknown>;
}

