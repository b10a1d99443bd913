/**
 * The broker's Prometheus metrics, on their own prom-client registry (no global registered as a side
 * effect of importing this module), served over plain HTTP.
 */
import { createServer, type Server } from 'node:http';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export type AuthFailureReason =
  | 'no_certificate'
  | 'not_authorized_tls'
  | 'certificate_invalid'
  | 'kind_not_allowed'
  | 'client_id_mismatch'
  | 'client_id_conflict'
  | 'unknown_identity'
  | 'suspended'
  | 'revoked'
  | 'certificate_revoked'
  | 'certificate_superseded'
  | 'will_denied'
  | 'keepalive_out_of_bounds'
  | 'registry_unavailable'
  | 'internal_error';

export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'fleet_broker_' });
  const m = {
    registry,
    connections: new Gauge({
      name: 'fleet_mqtt_connections',
      help: 'Authenticated MQTT connections now open',
      registers: [registry],
    }),
    handshakes: new Counter({
      name: 'fleet_tls_handshakes_total',
      help: 'TLS handshakes by outcome (ok, or the failure reason)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    admissionRefused: new Counter({
      name: 'fleet_mqtt_admission_refused_total',
      help: 'TCP connections refused before the TLS handshake, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    connects: new Counter({
      name: 'fleet_mqtt_connects_total',
      help: 'MQTT CONNECTs accepted',
      registers: [registry],
    }),
    authFailures: new Counter({
      name: 'fleet_mqtt_auth_failures_total',
      help: 'MQTT CONNECTs refused, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    aclDenials: new Counter({
      name: 'fleet_mqtt_acl_denials_total',
      help: 'Publishes and subscriptions denied by the topic policy',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    aclDisconnects: new Counter({
      name: 'fleet_mqtt_acl_disconnects_total',
      help: 'Clients disconnected for repeated ACL denials',
      registers: [registry],
    }),
    messagesIn: new Counter({
      name: 'fleet_mqtt_messages_in_total',
      help: 'PUBLISH packets accepted from clients',
      registers: [registry],
    }),
    messagesOut: new Counter({
      name: 'fleet_mqtt_messages_out_total',
      help: 'PUBLISH packets forwarded to subscribers',
      registers: [registry],
    }),
    takeovers: new Counter({
      name: 'fleet_mqtt_takeovers_total',
      help: 'Connections closed because the same identity connected again [MQTT-3.1.4-2]',
      registers: [registry],
    }),
    possibleClones: new Counter({
      name: 'fleet_mqtt_possible_clones_total',
      help: 'Identities seen flapping between source addresses (a copied certificate and key?)',
      registers: [registry],
    }),
    revocationKicks: new Counter({
      name: 'fleet_mqtt_revocation_kicks_total',
      help: 'Live connections closed because their identity or certificate was revoked or suspended',
      registers: [registry],
    }),
    revocationLatency: new Histogram({
      name: 'fleet_mqtt_revocation_close_seconds',
      help: 'From the status change (its commit time, else its arrival) to the connection closed',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30],
      registers: [registry],
    }),
    revocationGeneration: new Gauge({
      name: 'fleet_revocation_generation',
      help: 'Generation (registry change seq) of the in-memory revoked set',
      registers: [registry],
    }),
    revocationResyncs: new Counter({
      name: 'fleet_revocation_resyncs_total',
      help: 'Full resyncs of the revoked set, by outcome',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    presenceWrites: new Counter({
      name: 'fleet_presence_records_total',
      help: 'Presence records written to the registry (in batches), by outcome',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
  };
  return m;
}

export type BrokerMetrics = ReturnType<typeof createMetrics>;

/** Serves `GET /metrics` (and `/healthz`) on `port`; 0 picks a free port. */
export async function serveMetrics(
  metrics: BrokerMetrics,
  port: number,
  host: string,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      metrics.registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        },
        () => {
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : port };
}
