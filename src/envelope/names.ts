/**
 * Names of tenants, agents and nodes: `[A-Za-z0-9._-]{1,64}`. Short and safe in a topic, a
 * metric label, a file name and a SQL identifier alike.
 */
import { invalidOption } from '../errors.js';

/** The pattern every tenant, agent and node name matches. */
export const NAME_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
const NAME_RE = new RegExp(NAME_PATTERN);

/** A destination: a name, or a topic of names joined by `/` (up to 256 characters). */
export const ADDRESS_PATTERN = '^(?=.{1,256}$)/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$';

/** The tenant of an envelope that names none. */
export const DEFAULT_TENANT = 'default';

/** True when `value` is a valid name. */
export function isName(value: unknown): value is string {
  return typeof value === 'string' && NAME_RE.test(value);
}

/** Returns `value` when it is a valid name, else throws `ROOST_ERR_INVALID_OPTION` for `field`. */
export function assertName(field: string, value: unknown): string {
  if (!isName(value)) throw invalidOption(field, 'a name matching [A-Za-z0-9._-]{1,64}', value);
  return value;
}
