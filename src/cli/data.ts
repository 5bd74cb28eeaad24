/**
 * `metaplastic data omniglot`: shows where the Omniglot data is looked for and, with --download, fetches
 * the two official zips, verifies them structurally and moves them into place atomically.
 */
import type { Command } from 'commander';
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { MetaplasticError } from '../errors.js';
import { omniglotPaths, verifyOmniglotZip, type OmniglotSplit, type ZipSummary } from '../tasks/index.js';

export const OMNIGLOT_BASE_URL = 'https://github.com/brendenlake/omniglot/raw/master/python';
const SPLITS: OmniglotSplit[] = ['background', 'evaluation'];

export interface DownloadOptions {
  /** Target directory (default: `$METAPLASTIC_DATA/omniglot` or `~/.local/share/metaplastic/omniglot`). */
  dir?: string;
  /** Where images_{background,evaluation}.zip are fetched from: http(s):// or file://. */
  baseUrl?: string;
  /** Download even when a valid copy is already in place. */
  force?: boolean;
  log?: (line: string) => void;
}

export interface DownloadedFile {
  split: OmniglotSplit;
  path: string;
  status: 'downloaded' | 'present';
  summary: ZipSummary;
}

async function fetchTo(url: string, dest: string): Promise<void> {
  if (url.startsWith('file:')) {
    const src = fileURLToPath(url);
    try {
      await copyFile(src, dest);
    } catch (e) {
      throw new MetaplasticError('E_IO', `cannot read ${src}: ${(e as Error).message}`, { cause: e });
    }
    return;
  }
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow' });
  } catch (e) {
    const why = (e as { cause?: Error }).cause?.message ?? (e as Error).message;
    throw new MetaplasticError('E_IO', `cannot download ${url}: ${why}`, { cause: e });
  }
  if (!res.ok || !res.body) {
    throw new MetaplasticError('E_IO', `cannot download ${url}: HTTP ${res.status} ${res.statusText}`);
  }
  try {
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(dest));
  } catch (e) {
    throw new MetaplasticError('E_IO', `download of ${url} failed: ${(e as Error).message}`, { cause: e });
  }
}

async function validExisting(path: string, split: OmniglotSplit): Promise<ZipSummary | null> {
  if (!existsSync(path)) return null;
  try {
    return await verifyOmniglotZip(path, split);
  } catch {
    return null;
  }
}

/** Fetches and verifies both official zips; each is renamed into place only after it verified. */
export async function downloadOmniglot(options: DownloadOptions = {}): Promise<{ dir: string; files: DownloadedFile[] }> {
  const dir = omniglotPaths(options.dir).downloadDir;
  const base = (options.baseUrl ?? process.env.METAPLASTIC_OMNIGLOT_URL ?? OMNIGLOT_BASE_URL).replace(/\/+$/, '');
  const log = options.log ?? (() => {});
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new MetaplasticError('E_IO', `cannot create ${dir}: ${(e as Error).message}`, { cause: e });
  }
  const files: DownloadedFile[] = [];
  for (const split of SPLITS) {
    const name = `images_${split}.zip`;
    const target = join(dir, name);
    const present = options.force ? null : await validExisting(target, split);
    if (present) {
      log(`${name}: already in place and valid (${target})`);
      files.push({ split, path: target, status: 'present', summary: present });
      continue;
    }
    const url = `${base}/${name}`;
    const tmp = join(dir, `.${name}.part-${process.pid}`);
    log(`${name}: downloading ${url}`);
    try {
      await fetchTo(url, tmp);
      const size = (await stat(tmp)).size;
      let summary: ZipSummary;
      try {
        summary = await verifyOmniglotZip(tmp, split);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new MetaplasticError('E_DATA', `${url} is not a valid Omniglot ${split} archive: ${msg}`, { cause: e });
      }
      await rename(tmp, target);
      log(`${name}: ${(size / 2 ** 20).toFixed(1)} MiB, ${summary.alphabets} alphabets, ${summary.classes} characters, ${summary.images} images -> ${target}`);
      files.push({ split, path: target, status: 'downloaded', summary });
    } finally {
      await rm(tmp, { force: true });
    }
  }
  return { dir, files };
}

function located(root: string, split: OmniglotSplit): string | null {
  for (const base of [root, join(root, 'omniglot')]) {
    for (const p of [join(base, `images_${split}.zip`), join(base, `images_${split}`)]) {
      if (existsSync(p)) return p;
    }
  }
  return null;
}

export function registerData(program: Command): void {
  const data = program.command('data').description('Manage benchmark data sets.');
  data
    .command('omniglot')
    .description('Show where Omniglot is looked for; with --download, fetch and verify the official zips.')
    .option('--download', 'download images_background.zip and images_evaluation.zip')
    .option('--dir <dir>', 'data directory (default: $METAPLASTIC_DATA, else ~/.local/share/metaplastic)')
    .option('--base-url <url>', `where the zips are fetched from (default ${OMNIGLOT_BASE_URL}; env METAPLASTIC_OMNIGLOT_URL)`)
    .option('--force', 'download even when valid files are in place')
    .option('--verify', 'verify the zips found (without --download)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { download?: boolean; dir?: string; baseUrl?: string; force?: boolean; verify?: boolean; json?: boolean }) => {
      const out = (s: string) => process.stdout.write(s + '\n');
      if (opts.download) {
        const r = await downloadOmniglot({ dir: opts.dir, baseUrl: opts.baseUrl, force: opts.force, log: opts.json ? undefined : out });
        if (opts.json) out(JSON.stringify(r));
        else out(`Omniglot is ready in ${r.dir}`);
        return;
      }
      const paths = omniglotPaths(opts.dir);
      const splits: Record<string, { path: string | null; summary?: ZipSummary }> = {};
      for (const split of SPLITS) {
        const path = located(paths.dataRoot, split);
        splits[split] = { path };
        if (opts.verify && path?.endsWith('.zip')) splits[split].summary = await verifyOmniglotZip(path, split);
      }
      // Verifying nothing is a failure, not a pass: say what is missing and exit with the data code.
      const missing = SPLITS.filter((s) => !splits[s].path);
      if (opts.verify && missing.length > 0) {
        throw new MetaplasticError('E_DATA', `Omniglot ${missing.join(' and ')} not found under ${paths.dataRoot}; run \`metaplastic data omniglot --download\` or set METAPLASTIC_DATA`);
      }
      if (opts.json) {
        out(JSON.stringify({ ...paths, splits }));
        return;
      }
      out(`data root     ${paths.dataRoot}`);
      out(`cache root    ${paths.cacheRoot}`);
      for (const split of SPLITS) {
        const s = splits[split];
        const v = s.summary ? `  (verified: ${s.summary.classes} characters, ${s.summary.images} images)` : '';
        out(`${split.padEnd(13)} ${s.path ?? 'not found (run `metaplastic data omniglot --download`)'}${v}`);
      }
    });
}
