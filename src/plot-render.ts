// Headless figure rendering: vega-lite spec -> vega view -> SVG (no canvas) -> PNG via resvg.
import { mkdir, readdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { renderAsync, type ResvgRenderOptions } from '@resvg/resvg-js';
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { configError } from './errors.js';
import { writeFileAtomic } from './results.js';

export interface Figure {
  /** Figure name, the stem of both files. */
  name: string;
  svg: string;
  png: string;
  /** False when no font could be found: the PNG then has marks but no text (the SVG always has it). */
  textRendered: boolean;
}

/**
 * A vega-lite specification as plain JSON (see https://vega.github.io/vega-lite/). Typed loosely on
 * purpose: vega's own typings stay out of the package's public declarations.
 */
export type VegaLiteSpec = { $schema?: string } & Record<string, unknown>;

export interface RenderOptions {
  /** PNG pixels per SVG pixel (default 2, for legible text on high-density screens and in papers). */
  scale?: number;
}

/** Compiles a vega-lite spec and writes `NAME.svg` and `NAME.png` into `dir`, each atomically. */
export async function renderFigure(spec: VegaLiteSpec, dir: string, name: string, options: RenderOptions = {}): Promise<Figure> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw configError('name', `figure name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-'`);
  }
  const scale = options.scale ?? 2;
  if (!(scale > 0 && scale <= 16)) throw configError('scale', `must be in (0, 16], got ${scale}`);
  const svg = await specToSvg(spec);
  const fonts = await fontSetup();
  const image = await renderAsync(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: scale },
    font: fonts.options,
    logLevel: 'off',
  });
  await mkdir(dir, { recursive: true });
  const svgPath = join(dir, `${name}.svg`);
  const pngPath = join(dir, `${name}.png`);
  await writeFileAtomic(svgPath, svg);
  await writeFileAtomic(pngPath, image.asPng());
  return { name, svg: svgPath, png: pngPath, textRendered: fonts.text };
}

/** The SVG text of a vega-lite spec, rendered without a browser or canvas. */
export async function specToSvg(spec: VegaLiteSpec): Promise<string> {
  const view = new View(parse(compile(spec as unknown as TopLevelSpec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// ---------------------------------------------------------------------------------------------
// Fonts. resvg draws text only with fonts it can load; vega's SVG asks for the generic
// "sans-serif", which resvg maps to its default family. We point that at a sans face that is
// installed (DejaVu on the Debian image), let METAPLASTIC_FONT add a file or folder, and when no
// font exists at all we still render (marks only) and warn once rather than fail.

interface FontSetup {
  options: NonNullable<ResvgRenderOptions['font']>;
  text: boolean;
}

// Preferred sans faces, recognised by the file name their packages install.
const SANS_FACES: [RegExp, string][] = [
  [/^DejaVuSans\.ttf$/i, 'DejaVu Sans'],
  [/^LiberationSans-Regular\.ttf$/i, 'Liberation Sans'],
  [/^NotoSans-Regular\.(ttf|otf)$/i, 'Noto Sans'],
  [/^Arial\.ttf$/i, 'Arial'],
  [/^Helvetica\.ttc$/i, 'Helvetica'],
];
const FONT_FILE = /\.(ttf|otf|ttc)$/i;

let fontSetupPromise: Promise<FontSetup> | undefined;

function fontSetup(): Promise<FontSetup> {
  fontSetupPromise ??= findFonts();
  return fontSetupPromise;
}

function systemFontDirs(): string[] {
  const home = homedir();
  return [
    '/usr/share/fonts',
    '/usr/local/share/fonts',
    join(home, '.local', 'share', 'fonts'),
    join(home, '.fonts'),
    '/System/Library/Fonts',
    '/Library/Fonts',
    'C:\\Windows\\Fonts',
  ];
}

async function findFonts(): Promise<FontSetup> {
  const options: FontSetup['options'] = { loadSystemFonts: true };
  const extra = process.env.METAPLASTIC_FONT;
  const searchDirs = systemFontDirs();
  if (extra) {
    const info = await stat(extra).catch(() => undefined);
    if (info?.isDirectory()) {
      options.fontDirs = [extra];
      searchDirs.unshift(extra);
    } else if (info?.isFile()) {
      options.fontFiles = [extra];
    } else {
      process.emitWarning(`METAPLASTIC_FONT=${extra} is neither a font file nor a folder; ignoring it`, 'MetaplasticWarning');
    }
  }
  const files: string[] = [];
  for (const dir of searchDirs) await listFontFiles(dir, 4, files);
  const names = files.map((f) => basename(f));
  const family = SANS_FACES.find(([re]) => names.some((n) => re.test(n)))?.[1];
  if (family) {
    options.defaultFontFamily = family;
    options.sansSerifFamily = family;
  }
  const text = files.length > 0 || options.fontFiles !== undefined;
  if (!text) {
    process.emitWarning(
      'no fonts found: PNG figures will have no text (the SVG files keep it). Install a font package ' +
        '(e.g. fonts-dejavu-core) or set METAPLASTIC_FONT to a .ttf file.',
      'MetaplasticWarning',
    );
  }
  return { options, text };
}

async function listFontFiles(dir: string, depth: number, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory() && depth > 0) await listFontFiles(path, depth - 1, out);
    else if ((e.isFile() || e.isSymbolicLink()) && FONT_FILE.test(e.name)) out.push(path);
  }
}
