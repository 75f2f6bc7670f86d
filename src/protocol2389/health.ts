/**
 * The 2389-shaped health server (off by default; 8080 is the 2389 convention): `/health` with
 * the `mqtt` and `task_processing` checks, `/ready` (connected and taking tasks), `/live`, and
 * `/metrics` as 2389 agents serve it (JSON: `tasks{…}`, `mqtt{…}`, `tools{…}`,
 * `lifecycle{uptime_seconds}`), so json_exporter configurations written for 2389 agents keep
 * working. Roost's own Prometheus `/metrics` stays on the main HTTP port.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RoostError } from '../errors.js';

/** What the server shows (from Protocol2389.snapshot()). */
export interface Health2389Snapshot {
  /** The first exposed agent's id (2389 agents are one per process), or null. */
  readonly agentId: string | null;
  readonly agents: readonly { readonly id: string; readonly flow: string; readonly connected: boolean }[];
  readonly uptimeSeconds: number;
  /** Every connection of the protocol is up. */
  readonly mqttConnected: boolean;
  /** Started, not closing, connected. */
  readonly ready: boolean;
  readonly lastTaskAt: number | null;
  readonly tasks: {
    readonly received: number;
    readonly processing: number;
    readonly completed: number;
    readonly failed: number;
    readonly rejected: number;
    readonly duplicates: number;
    readonly ignored_retained: number;
    readonly avg_processing_time_ms: number;
    readonly current_pipeline_depth: number;
  };
  readonly mqtt: Readonly<Record<string, number | boolean>>;
  readonly tools: Readonly<Record<string, number>>;
}

/** Tasks processing with no task finished for this long: `task_processing` is degraded. */
const STALLED_MS = 300_000;

export class Health2389Server {
  private readonly server: Server;
  private bound: number | null = null;

  constructor(
    private readonly options: { readonly port: number; readonly host: string },
    private readonly snapshot: () => Health2389Snapshot,
  ) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (status: number, body: unknown): void => {
        const text = JSON.stringify(body);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : text);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { error: 'method not allowed' });
      try {
        switch (path) {
          case '/health':
            return this.health(send);
          case '/ready': {
            const s = this.snapshot();
            return send(s.ready ? 200 : 503, { status: s.ready ? 'ready' : 'not_ready', mqtt_connected: s.mqttConnected });
          }
          case '/live':
            return send(200, { status: 'alive' });
          case '/metrics':
            return send(200, this.metrics());
          default:
            return send(404, { error: 'not found', paths: ['/health', '/ready', '/live', '/metrics'] });
        }
      } catch (error) {
        return send(500, { error: (error as Error).message });
      }
    });
  }

  private health(send: (status: number, body: unknown) => void): void {
    const s = this.snapshot();
    const now = Date.now();
    const seconds = Math.floor(now / 1000);
    const stalled = s.tasks.processing > 0 && s.lastTaskAt !== null && now - s.lastTaskAt > STALLED_MS;
    const mqtt = s.mqttConnected ? { status: 'healthy', message: 'MQTT connection established' } : { status: 'unhealthy', message: 'MQTT connection lost' };
    const tasks = stalled
      ? { status: 'degraded', message: `${s.tasks.processing} task(s) processing and none finished for ${Math.round(STALLED_MS / 1000)} s` }
      : { status: 'healthy', message: s.lastTaskAt === null ? 'No tasks yet' : 'Recent task activity' };
    const status = !s.mqttConnected ? 'unhealthy' : stalled ? 'degraded' : 'healthy';
    send(status === 'unhealthy' ? 503 : 200, {
      status,
      timestamp: seconds,
      agent_id: s.agentId,
      uptime_seconds: s.uptimeSeconds,
      checks: { mqtt: { ...mqtt, last_check: seconds }, task_processing: { ...tasks, last_check: seconds } },
    });
  }

  private metrics(): Record<string, unknown> {
    const s = this.snapshot();
    return {
      timestamp: Math.floor(Date.now() / 1000),
      agent_id: s.agentId,
      agents: s.agents,
      uptime_seconds: s.uptimeSeconds,
      // `tasks_processing` too: the json_exporter configuration of the 2389 guide reads that name.
      tasks: { ...s.tasks, tasks_processing: s.tasks.processing },
      mqtt: s.mqtt,
      tools: s.tools,
      lifecycle: { uptime_seconds: s.uptimeSeconds },
    };
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (error) =>
        reject(
          new RoostError('ROOST_ERR_INVALID_OPTION', `protocol2389.health: cannot listen on ${this.options.host}:${this.options.port}: ${error.message}`, {
            field: 'protocol2389.health.port',
            expected: 'a free port',
            received: String(this.options.port),
            cause: error,
          }),
        ),
      );
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.bound = (this.server.address() as AddressInfo).port;
  }

  /** The port it listens on (0 asked: the one chosen), or null before listen(). */
  get port(): number | null {
    return this.bound;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
