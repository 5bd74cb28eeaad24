// The call surface between Rust and TypeScript is declared once, by napi-rs from the #[napi] items
// (binding.d.ts); src/native.ts and the public carrier types take theirs from it. These tests hold that in
// place: the declarations are complete and compile on their own, and a change on the Rust side fails `tsc`
// at the TypeScript that disagrees with it.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { root } from './helpers.js';

const BINDING = join(root, 'binding.d.ts');
const binding = readFileSync(BINDING, 'utf8');

const config = ts.getParsedCommandLineOfConfigFile(join(root, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })!;

/** Type errors of `files` (and what they import) as the project compiles them, with binding.d.ts read as `text`. */
function typeErrors(files: string[], text: string, options: ts.CompilerOptions = {}, oldProgram?: ts.Program): { program: ts.Program; errors: string[] } {
  const compilerOptions = { ...config.options, ...options, noEmit: true };
  const host = ts.createCompilerHost(compilerOptions);
  const readFile = host.readFile.bind(host);
  host.readFile = (path) => (path === BINDING ? text : readFile(path));
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (path, language, onError) =>
    path === BINDING ? ts.createSourceFile(path, text, language) : getSourceFile(path, language, onError);
  const program = ts.createProgram(files.map((f) => join(root, f)), compilerOptions, host, oldProgram);
  const errors = files.flatMap((f) => [...program.getSyntacticDiagnostics(program.getSourceFile(join(root, f))), ...program.getSemanticDiagnostics(program.getSourceFile(join(root, f)))]);
  return { program, errors: errors.map((d) => `${d.file ? `${d.file.fileName.slice(root.length + 1)}: ` : ''}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`) };
}

test('binding.d.ts types every export: no unknown or any, the engine types by their Rust names', (t) => {
  const declarations = binding.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
  t.notRegex(declarations, /\bunknown\b|\bany\b/);
  t.regex(binding, /^import type \{[^}]*\bStepRecord\b[^}]*\} from '#engine-types'/m);
  t.regex(binding, /progress\(\): \[number, number, number\]/);
  t.regex(binding, /createExperiment\(config: ExperimentConfig\): Promise<NativeExperiment>/);
});

test('binding.d.ts compiles on its own, every name it uses resolved (no skipLibCheck to hide one)', (t) => {
  t.deepEqual(typeErrors(['binding.d.ts'], binding, { skipLibCheck: false }).errors, []);
});

test('a Rust signature that changes fails tsc where the TypeScript disagrees with it', (t) => {
  const callers = ['src/tasks/images.ts', 'src/tasks/sine.ts'];
  const current = typeErrors(callers, binding);
  t.deepEqual(current.errors, [], 'the checked-in binding compiles');
  // As napi-rs would write it if the sampler's Rust return type lost its class ids.
  const changed = binding.replace(/^(\s*sample\(\): )ImageEpisode$/m, '$1EpisodeData');
  t.not(changed, binding);
  const { errors } = typeErrors(callers, changed, {}, current.program);
  t.true(errors.some((e) => e.startsWith('src/tasks/images.ts: ') && /classIds/.test(e)), errors.join('\n'));
});
