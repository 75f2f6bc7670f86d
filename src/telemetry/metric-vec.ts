/**
 * Counters and histograms with labels whose hot path is a lookup in nested maps and an add.
 * prom-client's own hash and validate the label object on every `inc` and `observe`, which cost
 * the service about a tenth of its CPU per request (`npm run bench`, http). These register in a
 * prom-client `Registry` and export in exactly its shapes (text and JSON), so `/metrics` and
 * `/metrics.json` read the same; label values are given positionally, in `labelNames` order.
 */
import type { Registry } from 'prom-client';

interface Cell {
  readonly labels: Record<string, string>;
  value: number;
}

interface HistogramCell {
  readonly labels: Record<string, string>;
  /** Observations per bucket (not cumulative): `counts[i]` for `value <= bounds[i]`, the last for +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** What prom-client's registry reads of a metric. */
interface Exported {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly values: { labels: Record<string, string | number>; value: number; metricName?: string; exemplar?: null }[];
  readonly aggregator: 'sum';
}

/** The cell of `values` under `root`, made by `make` the first time. */
function cellOf<C>(root: Map<string, unknown>, labelNames: readonly string[], values: readonly string[], make: (labels: Record<string, string>) => C): C {
  let level = root;
  const last = labelNames.length - 1;
  for (let i = 0; i < last; i++) {
    const v = values[i] ?? '';
    let next = level.get(v) as Map<string, unknown> | undefined;
    if (next === undefined) {
      next = new Map();
      level.set(v, next);
    }
    level = next;
  }
  const key = last < 0 ? '' : (values[last] ?? '');
  let cell = level.get(key) as C | undefined;
  if (cell === undefined) {
    const labels: Record<string, string> = {};
    for (let i = 0; i < labelNames.length; i++) labels[labelNames[i]!] = values[i] ?? '';
    cell = make(labels);
    level.set(key, cell);
  }
  return cell;
}

/** Every cell under `root`, depth first. */
function* cells<C>(root: Map<string, unknown>, depth: number): Generator<C> {
  for (const v of root.values()) {
    if (depth <= 1) yield v as C;
    else yield* cells<C>(v as Map<string, unknown>, depth - 1);
  }
}

/** What the two kinds share: a name, help, label names, and cells under nested maps. */
abstract class MetricVec<L extends string> {
  readonly aggregator = 'sum';
  protected root = new Map<string, unknown>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never); // duck-typed: the registry reads name, help, type and get()
  }

  reset(): void {
    this.root = new Map();
  }
}

/** A monotonic counter with labels. */
export class CounterVec<L extends string> extends MetricVec<L> {
  readonly type = 'counter';

  constructor(name: string, help: string, labelNames: readonly L[], registry: Registry) {
    super(name, help, labelNames, registry);
    this.reset();
  }

  /** Adds `by` (default 1) to the series of these label values. */
  inc(values: readonly string[], by = 1): void {
    cellOf<Cell>(this.root, this.labelNames, values, (labels) => ({ labels, value: 0 })).value += by;
  }

  /** The series' value (0 when it has none yet; reading does not make one). */
  value(values: readonly string[]): number {
    let level: unknown = this.root;
    const path = this.labelNames.length === 0 ? [''] : values;
    for (const v of path) level = level instanceof Map ? level.get(v) : undefined;
    return (level as Cell | undefined)?.value ?? 0;
  }

  get(): Promise<Exported> {
    const values = [...cells<Cell>(this.root, Math.max(1, this.labelNames.length))].map((c) => ({ labels: { ...c.labels }, value: c.value }));
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  override reset(): void {
    super.reset();
    if (this.labelNames.length === 0) this.inc([], 0); // as prom-client: a series without labels is there from the start
  }
}

/** A histogram with labels and fixed buckets. */
export class HistogramVec<L extends string> extends MetricVec<L> {
  readonly type = 'histogram';

  constructor(
    name: string,
    help: string,
    labelNames: readonly L[],
    readonly buckets: readonly number[],
    registry: Registry,
  ) {
    super(name, help, labelNames, registry);
  }

  /** Records `value` in the series of these label values. */
  observe(values: readonly string[], value: number): void {
    if (!Number.isFinite(value)) return; // a clock that jumped: not an observation
    const cell = cellOf<HistogramCell>(this.root, this.labelNames, values, (labels) => ({ labels, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 }));
    const bounds = this.buckets;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    cell.counts[i]! += 1;
    cell.sum += value;
    cell.count += 1;
  }

  get(): Promise<Exported> {
    const values: Exported['values'] = [];
    const bucketName = `${this.name}_bucket`;
    for (const c of cells<HistogramCell>(this.root, Math.max(1, this.labelNames.length))) {
      let acc = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        acc += c.counts[i]!;
        values.push({ labels: { le: this.buckets[i]!, ...c.labels }, value: acc, metricName: bucketName, exemplar: null });
      }
      values.push({ labels: { le: '+Inf', ...c.labels }, value: c.count, metricName: bucketName, exemplar: null });
      values.push({ labels: { ...c.labels }, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...c.labels }, value: c.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }
}
