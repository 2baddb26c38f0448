// Runs a WASI build of examples/pipeline_bench.rs inside Node.js's V8:
//   node run.mjs pipeline_bench.wasm ROUTE.json
// The library's proxy-wasm imports are never called by the example; they get stubs.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import path from 'node:path';

const [file, route] = process.argv.slice(2);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
const wasi = new WASI({
  version: 'preview1',
  args: ['pipeline_bench', route],
  env: process.env,
  preopens: { [root]: root },
});
const module = await WebAssembly.compile(await readFile(file));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const entry of WebAssembly.Module.imports(module)) {
  if (entry.module !== 'wasi_snapshot_preview1') {
    imports[entry.module] ??= {};
    imports[entry.module][entry.name] = () => 0;
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// The library also exports `_initialize`, which WASI.start refuses next to `_start`.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
