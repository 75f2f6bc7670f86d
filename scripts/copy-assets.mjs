// Copies what tsc does not: the stores' SQL migrations, next to the compiled modules
// (dist/store/, or with `bench` the benchmark build's build/bench/src/store/), and for the
// benchmark build the package.json its compiled CLI reads its version from (../../ of src/cli/).
import { cpSync } from 'node:fs';
import { argv } from 'node:process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new globalThis.URL('..', import.meta.url));
const bench = argv[2] === 'bench';
const target = bench ? 'build/bench/src/store/migrations' : 'dist/store/migrations';
cpSync(`${root}src/store/migrations`, `${root}${target}`, { recursive: true });
if (bench) cpSync(`${root}package.json`, `${root}build/bench/package.json`);
