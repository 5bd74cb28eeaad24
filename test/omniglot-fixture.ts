// Omniglot for the tests. A fresh clone has no data set, so the tests build a small one in the official
// zip layout (alphabets/characters/drawings as PNGs); the checks that need the full set run only when the
// data is found where users put it (METAPLASTIC_DATA or the default data folder), and say so when skipped.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { Resvg } from '@resvg/resvg-js';
import { native } from '../src/native.js';

export const FIXTURE_DRAWINGS = 20;

/** A 105×105 drawing, white background, one black bar whose position and length identify it. */
function drawing(cls: number, d: number): Uint8Array {
  const x = 10 + (cls * 7) % 60;
  const y = 10 + (d * 4) % 80;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="105" height="105"><rect width="105" height="105" fill="#fff"/><rect x="${x}" y="${y}" width="${25 + cls}" height="16" fill="#000"/></svg>`;
  return new Resvg(svg).render().asPng();
}

/** Writes images_<split>.zip with `alphabets` × `characters` classes of 20 drawings into `dir`. */
export function writeOmniglotZip(dir: string, split: 'background' | 'evaluation', alphabets: number, characters: number): string {
  const top = `images_${split}`;
  const files: Record<string, Uint8Array> = {};
  let cls = 0;
  for (let a = 0; a < alphabets; a++) {
    for (let c = 0; c < characters; c++, cls++) {
      for (let d = 0; d < FIXTURE_DRAWINGS; d++) {
        const name = `${String(cls + 1).padStart(4, '0')}_${String(d + 1).padStart(2, '0')}.png`;
        files[`${top}/Alphabet_${a}/character${String(c + 1).padStart(2, '0')}/${name}`] = drawing(cls, d);
      }
    }
  }
  const path = join(dir, `${top}.zip`);
  writeFileSync(path, zipSync(files, { level: 0, mtime: new Date('2020-01-01T00:00:00Z') }));
  return path;
}

/** Background: 2 alphabets × 15 characters (30 classes); evaluation: 2 × 6 (12 classes). */
export const FIXTURE = { background: { alphabets: 2, characters: 15 }, evaluation: { alphabets: 2, characters: 6 } } as const;

/** A fresh folder holding both fixture zips (byte-identical every time, so the decode cache is reused). */
export function omniglotFixture(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mp-omniglot-fixture-'));
  for (const split of ['background', 'evaluation'] as const) writeOmniglotZip(dir, split, FIXTURE[split].alphabets, FIXTURE[split].characters);
  return dir;
}

/** The folder holding the full official zips, found the way users point at it, or null. */
export function fullOmniglot(): string | null {
  const root = native.omniglotPaths(null).dataRoot;
  for (const d of [root, join(root, 'omniglot')]) {
    if (existsSync(join(d, 'images_background.zip')) && existsSync(join(d, 'images_evaluation.zip'))) return d;
  }
  return null;
}

export const FULL_DATA_NOTE = 'needs the full Omniglot set: skipped unless METAPLASTIC_DATA (or the default data folder) holds it';
