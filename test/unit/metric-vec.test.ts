/**
 * CounterVec and HistogramVec export exactly what prom-client's Counter and Histogram export
 * for the same observations, as text and as JSON.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CounterVec, HistogramVec } from '../../src/telemetry/metric-vec.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];

function pair(): { ours: Registry; theirs: Registry; counter: CounterVec<'flow' | 'node'>; histogram: HistogramVec<'flow'>; bare: CounterVec<never>; c: Counter<'flow' | 'node'>; h: Histogram<'flow'>; b: Counter } {
  const ours = new Registry();
  const theirs = new Registry();
  return {
    ours,
    theirs,
    counter: new CounterVec('t_runs_total', 'Runs.', ['flow', 'node'], ours),
    histogram: new HistogramVec('t_seconds', 'Time.', ['flow'], BUCKETS, ours),
    bare: new CounterVec('t_plain_total', 'Plain.', [], ours),
    c: new Counter({ name: 't_runs_total', help: 'Runs.', labelNames: ['flow', 'node'], registers: [theirs] }),
    h: new Histogram({ name: 't_seconds', help: 'Time.', labelNames: ['flow'], buckets: BUCKETS, registers: [theirs] }),
    b: new Counter({ name: 't_plain_total', help: 'Plain.', registers: [theirs] }),
  };
}

describe('CounterVec and HistogramVec', () => {
  it('export what prom-client exports', async () => {
    const m = pair();
    const observations: [string, string, number][] = [
      ['a', 'x', 0.0004],
      ['a', 'y', 0.02],
      ['b', 'x', 0.5],
      ['a', 'x', 5],
      ['a', 'x', 0.001],
      ['b "q"', 'new\nline', 0.1],
    ];
    for (const [flow, node, v] of observations) {
      m.counter.inc([flow, node]);
      m.c.inc({ flow, node });
      m.histogram.observe([flow], v);
      m.h.observe({ flow }, v);
    }
    m.counter.inc(['a', 'x'], 2.5);
    m.c.inc({ flow: 'a', node: 'x' }, 2.5);
    m.bare.inc([]);
    m.b.inc();
    expect(await m.ours.metrics()).toBe(await m.theirs.metrics());
    expect(await m.ours.getMetricsAsJSON()).toEqual(await m.theirs.getMetricsAsJSON());
    expect(m.counter.value(['a', 'x'])).toBe(5.5);
    expect(m.counter.value(['no', 'such'])).toBe(0);
    expect(await m.ours.metrics()).not.toContain('flow="no"'); // reading made no series
    expect(m.bare.value([])).toBe(1);
  });

  it('reset with the registry', async () => {
    const m = pair();
    m.counter.inc(['a', 'x']);
    m.histogram.observe(['a'], 1);
    m.ours.resetMetrics();
    m.theirs.resetMetrics();
    expect(await m.ours.metrics()).toBe(await m.theirs.metrics());
  });
});
