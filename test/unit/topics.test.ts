/** Topic notation: checking, matching, escaping names, the NATS mapping, hidden passwords. */
import { describe, expect, it } from 'vitest';
import { natsSubject } from '../../src/transport/nats.js';
import { shownUrl, topicMatches, topicSegment, topicSegments } from '../../src/transport/transport.js';

describe('topics', () => {
  it('match + and a final #', () => {
    const m = (p: string, t: string): boolean => topicMatches(topicSegments(p, true), topicSegments(t, false));
    expect(m('a/+/c', 'a/b/c')).toBe(true);
    expect(m('a/+', 'a/b/c')).toBe(false);
    expect(m('a/#', 'a/b/c')).toBe(true);
    expect(m('a/#', 'a')).toBe(true); // as MQTT: # matches the parent level too
    expect(m('a/b', 'a/b')).toBe(true);
    expect(m('a/b', 'a/c')).toBe(false);
  });

  it('escape a name into one segment, reversibly', () => {
    expect(topicSegment('billing.v2')).toBe('billing%2Ev2');
    expect(topicSegment('a/b c%')).toBe('a%2Fb%20c%25');
    expect(decodeURIComponent(topicSegment('x.y/ü'))).toBe('x.y/ü');
    expect(() => topicSegments(topicSegment('any.name/at all'), false)).not.toThrow();
  });

  it('map to NATS subjects, and hide passwords', () => {
    expect(natsSubject(topicSegments('a/+/#', true))).toBe('a.*.>');
    expect(shownUrl('mqtt://roost:s3cret@broker:1883')).toBe('mqtt://roost:***@broker:1883');
    expect(shownUrl('nats://a:b@h1:4222,nats://c:d@h2:4222')).toBe('nats://a:***@h1:4222,nats://c:***@h2:4222');
    expect(shownUrl('nats://h:4222')).toBe('nats://h:4222');
  });
});
