/** Passwords are hidden the same way wherever a URL is shown. */
import { describe, expect, it } from 'vitest';
import { hidePassword } from '../../src/redact.js';

describe('hidePassword', () => {
  it('hides the password of each URL and leaves the rest', () => {
    expect(hidePassword('postgres://roost:s3cret@db:5432/app?schema=x')).toBe('postgres://roost:***@db:5432/app?schema=x');
    expect(hidePassword('mqtt://user:p%40ss@broker')).toBe('mqtt://user:***@broker');
    expect(hidePassword('nats://a:one@h1:4222,nats://b:two@h2:4222')).toBe('nats://a:***@h1:4222,nats://b:***@h2:4222');
    expect(hidePassword('redis://:token@cache')).toBe('redis://:***@cache');
    expect(hidePassword('postgres://roost@db/app')).toBe('postgres://roost@db/app');
    expect(hidePassword('sqlite:.roost/roost.db')).toBe('sqlite:.roost/roost.db');
    expect(hidePassword('memory:')).toBe('memory:');
  });
});
