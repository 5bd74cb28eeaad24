import test from 'ava';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import { loadOmniglot, loadImageFolder, validateEpisode, type MetaplasticError } from '../src/index.js';
import { FIXTURE, FULL_DATA_NOTE, fullOmniglot, omniglotFixture } from './omniglot-fixture.js';

// A small data set in the official zip layout, built here (a fresh clone has no Omniglot).
const omniglotDir = omniglotFixture();
const cache = mkdtempSync(join(tmpdir(), 'mp-omniglot-cache-'));
const background = loadOmniglot('background', { dir: omniglotDir, cache });
const evaluation = loadOmniglot('evaluation', { dir: omniglotDir, cache });

test('Omniglot zips load class by class, 20 drawings each, ink = 1', async (t) => {
  const [bg, ev] = await Promise.all([background, evaluation]);
  t.is(bg.numClasses, FIXTURE.background.alphabets * FIXTURE.background.characters);
  t.is(ev.numClasses, FIXTURE.evaluation.alphabets * FIXTURE.evaluation.characters);
  t.true(bg.info.classSizes.every((n) => n === 20) && ev.info.classSizes.every((n) => n === 20));
  t.is(bg.info.classNames[0], 'Alphabet_0/character01');
  t.is(bg.info.classNames[bg.numClasses - 1], 'Alphabet_1/character15');
  t.deepEqual(bg.info.imageShape, [1, 28, 28]);
  t.is(bg.info.split, 'background');
  t.true(['hit', 'built', 'rebuilt'].includes(bg.info.cache.status));
  t.is((await loadOmniglot('background', { dir: omniglotDir, cache })).info.cache.status, 'hit');
  const x = ev.images(ev.numClasses - 1);
  t.deepEqual(x.shape, [20, 1, 28, 28]);
  const mean = x.data.reduce((a, b) => a + b, 0) / x.data.length;
  t.true(x.data.every((v) => v >= 0 && v <= 1));
  t.true(mean > 0.02 && mean < 0.4, `ink = 1 on a 0 background, mean ${mean}`);
});

const full = fullOmniglot();
(full ? test : test.skip)(`the full Omniglot splits have the standard classes (${FULL_DATA_NOTE})`, async (t) => {
  const [bg, ev] = await Promise.all([loadOmniglot('background', { dir: full! }), loadOmniglot('evaluation', { dir: full! })]);
  t.is(bg.numClasses, 964);
  t.is(ev.numClasses, 659);
  t.true(bg.info.classSizes.every((n) => n === 20) && ev.info.classSizes.every((n) => n === 20));
  t.is(bg.info.classNames[0], 'Alphabet_of_the_Magi/character01');
  const x = ev.images(658);
  const mean = x.data.reduce((a, b) => a + b, 0) / x.data.length;
  t.true(mean > 0.02 && mean < 0.4, `ink = 1 on a 0 background, mean ${mean}`);
});

test('episodes: N-way k-shot, label permutation, fresh query, determinism', async (t) => {
  const bg = await background;
  const sampler = bg.episodeSampler({ ways: 5, shots: 3, queryShots: 2, seed: 11 });
  const ep = sampler.sample();
  validateEpisode(ep, { inputShape: [1, 28, 28], outputs: 5, classification: true });
  t.deepEqual(ep.supportX.shape, [15, 1, 1, 28, 28]);
  t.deepEqual(ep.queryX.shape, [10, 1, 28, 28]);
  t.deepEqual([...ep.classes!].sort(), [0, 1, 2, 3, 4]);
  t.is(new Set(ep.classIds).size, 5);
  // Continual: class after class.
  t.deepEqual(Array.from(ep.supportY.data), ep.classes!.flatMap((c) => [c, c, c]));
  t.deepEqual(Array.from(ep.queryY.data), ep.classes!.flatMap((c) => [c, c]));
  const again = bg.episodeSampler({ ways: 5, shots: 3, queryShots: 2, seed: 11 }).sample();
  t.deepEqual(again.supportX.data, ep.supportX.data);
  t.deepEqual(again.classIds, ep.classIds);
  const iid = bg.episodeSampler({ ways: 4, shots: 5, order: 'iid', seed: 1 }).sample();
  t.notDeepEqual(Array.from(iid.supportY.data), iid.classes!.flatMap((c) => [c, c, c, c, c]));
  const orders = new Set(Array.from({ length: 6 }, () => sampler.sample().classes!.join(',')));
  t.true(orders.size > 1, 'the label permutation changes between episodes');
  const remember = bg.episodeSampler({ ways: 2, shots: 1, remember: 4, labels: 'classId', seed: 2 }).sample();
  t.deepEqual(remember.queryX.shape, [6, 1, 28, 28]);
  t.deepEqual(remember.classes, remember.classIds);
});

test('meta-test stream: drawings 1-15 train class by class, 16-20 held out; validation split', async (t) => {
  const ev = await evaluation;
  const s = ev.metaTestStream(10, 5);
  t.deepEqual(s.trainX.shape, [150, 1, 28, 28]);
  t.deepEqual(s.testX.shape, [50, 1, 28, 28]);
  t.deepEqual(Array.from(s.trainY.data), Array.from({ length: 150 }, (_, i) => Math.floor(i / 15)));
  // The first training image of the stream is drawing 1 of its class; the first test image is drawing 16.
  const imgs = ev.images(s.classIds[0]);
  const per = 28 * 28;
  t.deepEqual(s.trainX.data.subarray(0, per), imgs.data.subarray(0, per));
  t.deepEqual(s.testX.data.subarray(0, per), imgs.data.subarray(15 * per, 16 * per));
  const v = ev.validationStream(10, 5, 5);
  t.deepEqual(v.classIds, s.classIds);
  t.deepEqual(v.trainX.shape, [100, 1, 28, 28]);
  t.deepEqual(v.testX.data.subarray(0, per), imgs.data.subarray(10 * per, 11 * per));
  const all = ev.metaTestStream(ev.numClasses);
  t.deepEqual([...all.classIds].sort((a, b) => a - b), Array.from({ length: ev.numClasses }, (_, i) => i));
});

test('bad requests fail with coded errors that name the parameter or path', async (t) => {
  const bg = await background;
  const code = async (p: Promise<unknown> | (() => unknown), c: string, re: RegExp) => {
    const e = (typeof p === 'function' ? t.throws(p) : await t.throwsAsync(p)) as MetaplasticError;
    t.is(e.code, c);
    t.regex(e.message, re);
  };
  await code(loadOmniglot('background', { dir: '/no/such/omniglot' }), 'E_IO', /\/no\/such\/omniglot/);
  await code(loadOmniglot('train' as any, { dir: omniglotDir }), 'E_CONFIG', /split/);
  await code(loadOmniglot('background', { dir: omniglotDir, size: 0 }), 'E_CONFIG', /size/);
  const empty = mkdtempSync(join(tmpdir(), 'mp-empty-'));
  await code(loadOmniglot('background', { dir: empty }), 'E_DATA', /images_background\.zip/);
  const corrupt = mkdtempSync(join(tmpdir(), 'mp-corrupt-'));
  writeFileSync(join(corrupt, 'images_background.zip'), 'this is not a zip');
  await code(loadOmniglot('background', { dir: corrupt, cache: false }), 'E_DATA', /images_background\.zip: not a readable zip/);
  await code(() => bg.episodeSampler({ ways: bg.numClasses + 1 }), 'E_CONFIG', /ways/);
  await code(() => bg.episodeSampler({ shots: 15, queryShots: 6 }), 'E_CONFIG', /shots.*needs 21 images/);
  await code(() => bg.metaTestStream(bg.numClasses + 1), 'E_CONFIG', /classes/);
  await code(() => bg.validationStream(5, 15), 'E_CONFIG', /validation/);
  await code(() => bg.images(bg.numClasses), 'E_CONFIG', new RegExp(`class ${bg.numClasses}`));
  await code(() => bg.episodeSampler({ ways: 'five' as any }), 'E_CONFIG', /ways/);
});

function png(color: string, w = 30, h = 20): Buffer {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><rect width="${w}" height="${h}" fill="${color}"/></svg>`;
  return new Resvg(svg).render().asPng();
}

test('image folders: RGB or gray, resized, with the same samplers', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'mp-folder-'));
  const colors: Record<string, string> = { blue: '#0000ff', red: '#ff0000', white: '#ffffff' };
  for (const [name, color] of Object.entries(colors)) {
    mkdirSync(join(root, name));
    for (let i = 0; i < 6; i++) writeFileSync(join(root, name, `im${i}.png`), png(color));
  }
  const rgb = await loadImageFolder({ root, size: 8, channels: 'rgb', cache: false });
  t.deepEqual(rgb.info.classNames, ['blue', 'red', 'white']);
  t.deepEqual(rgb.info.imageShape, [3, 8, 8]);
  const red = rgb.images(1);
  t.deepEqual(red.shape, [6, 3, 8, 8]);
  t.is(red.data[0], 1);
  t.is(red.data[64], 0);
  const gray = await loadImageFolder({ root, size: 4, channels: 'gray', cache: false });
  t.deepEqual(gray.images(2).shape, [6, 1, 4, 4]);
  t.is(gray.images(2).data[0], 1);
  const ep = rgb.episodeSampler({ ways: 3, shots: 2, seed: 1 }).sample();
  validateEpisode(ep, { inputShape: [3, 8, 8], outputs: 3, classification: true });
  const s = rgb.continualStream({ classes: 3, trainPerClass: 4, testPerClass: 2 });
  t.deepEqual(s.testX.shape, [6, 3, 8, 8]);
  writeFileSync(join(root, 'red', 'broken.png'), 'not a png');
  const e = (await t.throwsAsync(loadImageFolder({ root, size: 8, cache: false }))) as MetaplasticError;
  t.is(e.code, 'E_DATA');
  t.regex(e.message, /broken\.png/);
  await t.throwsAsync(loadImageFolder({ root: '' }), { message: /root/ });
});
