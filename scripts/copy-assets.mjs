// Copies what tsc does not: the stores' SQL migrations, next to the compiled modules.
import { cpSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new globalThis.URL('..', import.meta.url));
cpSync(`${root}src/store/migrations`, `${root}dist/store/migrations`, { recursive: true });
