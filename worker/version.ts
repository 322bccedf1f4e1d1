import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** katafleet's version from package.json. */
export function katafleetVersion(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}
