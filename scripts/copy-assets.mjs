// Copies what tsc does not: the stores' SQL migrations, next to the compiled modules
// (dist/store/, or with `bench` the benchmark build's build/bench/src/store/).
import { cpSync } from 'node:fs';
import { argv } from 'node:process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new globalThis.URL('..', import.meta.url));
const target = argv[2] === 'bench' ? 'build/bench/src/store/migrations' : 'dist/store/migrations';
cpSync(`${root}src/store/migrations`, `${root}${target}`, { recursive: true });
