/**
 * Small checks for user options: each names the option, what was expected and what came
 * (`Expected \`limits.maxAgents\` to be an integer from 1 to 1000000, got 0 (number)`).
 */
import { invalidOption } from './errors.js';

/** Rejects a non-object and any key of `value` not in `allowed`. Returns the object. */
export function checkObject(field: string, value: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidOption(field, 'an object', value);
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw invalidOption(`${field}.${key}`, `absent (unknown option; known: ${allowed.join(', ')})`, (value as Record<string, unknown>)[key]);
    }
  }
  return value as Record<string, unknown>;
}

function path(field: string, key: string): string {
  return field === '' ? key : `${field}.${key}`;
}

/** An integer in [min, max], or `fallback` when absent. */
export function optInt(field: string, obj: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(path(field, key), `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** A number in [min, max], or `fallback` when absent. */
export function optNumber(field: string, obj: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalidOption(path(field, key), `a number from ${min} to ${max}`, value);
  }
  return value;
}

/** One of `choices`, or `fallback` when absent. */
export function optEnum<T extends string>(field: string, obj: Record<string, unknown>, key: string, choices: readonly T[], fallback: T): T {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw invalidOption(path(field, key), `one of ${choices.map((c) => `"${c}"`).join(', ')}`, value);
  }
  return value as T;
}

/** A boolean, or `fallback` when absent. */
export function optBool(field: string, obj: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidOption(path(field, key), 'a boolean', value);
  return value;
}

/** A function, or undefined when absent. */
export function optFunction<F>(field: string, obj: Record<string, unknown>, key: string): F | undefined {
  const value = obj[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw invalidOption(path(field, key), 'a function', value);
  return value as F;
}
