/**
 * The node's own certificate: issued at start by the infrastructure CA, or read from files and reloaded
 * (on SIGHUP, or when the files change) without dropping sessions; and the TLS server options every broker
 * node uses.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { hostname } from 'node:os';
import type { SecureContextOptions, TlsOptions, Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import type { CertificateAuthority } from '../pki/ca.ts';
import { certToPem } from '../pki/x509.ts';

export interface ServerCredentials {
  /** PEM: the server certificate followed by its issuing CA (servers send the full chain). */
  readonly cert: string;
  readonly key: string;
  readonly notAfter: Date;
  readonly serial: string;
}

const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The names a local broker is dialled by: localhost, the loopback addresses, this host's name. */
export function defaultServerNames(extra: readonly string[] = []): { dns: string[]; ips: string[] } {
  const dns = new Set(['localhost']);
  const ips = new Set(['127.0.0.1', '::1']);
  for (const n of [hostname(), ...extra]) {
    if (/^[0-9.]+$/.test(n) || n.includes(':')) ips.add(n);
    else if (DNS_NAME.test(n)) dns.add(n);
  }
  return { dns: [...dns], ips: [...ips] };
}

/** Issues a fresh server certificate from the infrastructure CA, with a new P-256 key kept in memory. */
export function issueServerCredentials(
  ca: CertificateAuthority,
  nodeId: string,
  names: { dns: string[]; ips: string[] },
): ServerCredentials {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const issued = ca.issue({
    profile: 'broker',
    id: nodeId,
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    dns: names.dns,
    ips: names.ips,
  });
  return Object.freeze({
    cert: [issued.der, ...ca.chainFor('broker')].map(certToPem).join(''),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    notAfter: issued.notAfter,
    serial: issued.serial,
  });
}

/**
 * Reads and checks a certificate chain and key from files: the key must match the first certificate, the
 * certificate must be current. Throws with a clear reason; the caller keeps the old credentials then.
 */
export function readServerCredentials(certFile: string, keyFile: string): ServerCredentials {
  const cert = readFileSync(certFile, 'utf8');
  const key = readFileSync(keyFile, 'utf8');
  const leaf = new X509Certificate(cert);
  const pub = createPublicKey(createPrivateKey(key)).export({ type: 'spki', format: 'der' });
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(pub)) {
    throw new Error(`the key in ${keyFile} does not match the certificate in ${certFile}`);
  }
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() < Date.now()) throw new Error(`the certificate in ${certFile} has expired`);
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+-----BEGIN CERTIFICATE-----/.test(cert)) {
    // A missing intermediate is the most common mTLS failure: refuse to serve a lone leaf.
    throw new Error(`${certFile} must hold the full chain: the server certificate and its issuing CA`);
  }
  return Object.freeze({ cert, key, notAfter, serial: leaf.serialNumber.toLowerCase() });
}

export interface TlsSettings {
  /** PEM trust list: root and issuing CAs (also names them in the CertificateRequest). */
  trustPem: string;
  handshakeTimeoutMs: number;
  /** 48 bytes shared by every node so tickets resume across nodes; random per process when absent. */
  ticketKeys?: Buffer | undefined;
  sessionTimeoutS: number;
  /**
   * The broker decides client certificates itself after the handshake (client-verify.ts), and `trustPem`
   * holds the name-only stand-ins for the CertificateRequest: OpenSSL's verdict is then not used.
   */
  verifyClientsInJs?: boolean;
}

export function secureContextOptions(creds: ServerCredentials, s: TlsSettings): SecureContextOptions {
  return {
    cert: creds.cert,
    key: creds.key,
    ca: s.trustPem,
    minVersion: 'TLSv1.2',
    sessionTimeout: s.sessionTimeoutS,
    // Node's default is a hash of process.argv, so nodes started from different paths or commands would
    // refuse each other's tickets even with shared ticket keys (measured): one fixed context for all nodes.
    sessionIdContext: 'fleet-mqtt',
    ...(s.ticketKeys ? { ticketKeys: s.ticketKeys } : {}),
  };
}

export function serverOptions(creds: ServerCredentials, s: TlsSettings): TlsOptions & { noDelay: boolean } {
  return {
    ...secureContextOptions(creds, s),
    // Never disable verification: a client without a certificate chaining to the fleet root is refused
    // in the handshake, by OpenSSL, or (verifyClientsInJs) right after it by ClientCertVerifier, before
    // any MQTT byte is read (client-verify.ts says why that is safe).
    requestCert: true,
    rejectUnauthorized: !s.verifyClientsInJs,
    handshakeTimeout: s.handshakeTimeoutMs,
    // Without it every connect waits ≈ 40 ms on Nagle and the client's delayed ACK (measured).
    noDelay: true,
  };
}

/** Polls cert/key files and calls `onChange` (debounced) when either changes. Returns the stop function. */
export function watchFiles(files: readonly string[], intervalMs: number, onChange: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const listener = (cur: { mtimeMs: number }, prev: { mtimeMs: number }) => {
    if (cur.mtimeMs === prev.mtimeMs) return;
    clearTimeout(timer);
    // Both files are usually replaced one after the other: wait for the pair.
    timer = setTimeout(onChange, Math.min(500, intervalMs));
    timer.unref();
  };
  for (const f of files) watchFile(f, { interval: intervalMs, persistent: false }, listener);
  return () => {
    clearTimeout(timer);
    for (const f of files) unwatchFile(f, listener);
  };
}

export interface ServerCertificateDeps {
  readonly ca: CertificateAuthority;
  readonly nodeId: string;
  readonly tls: {
    /** PEM chain and key files; when absent a certificate is issued at start (and on each reload). */
    readonly certFile?: string | undefined;
    readonly keyFile?: string | undefined;
    readonly serverNames: readonly string[];
    readonly watchIntervalMs: number;
  };
  readonly settings: TlsSettings;
  readonly log: Logger;
}

/** The node's server certificate, held for the TLS server, swapped in on reload. */
export class ServerCertificate {
  private current: ServerCredentials;
  private stopWatching: (() => void) | undefined;

  constructor(private readonly d: ServerCertificateDeps) {
    this.current = this.load();
  }

  get credentials(): ServerCredentials {
    return this.current;
  }

  /** Options for the TLS server, with the current credentials. */
  serverOptions(): ReturnType<typeof serverOptions> {
    return serverOptions(this.current, this.d.settings);
  }

  private load(): ServerCredentials {
    const t = this.d.tls;
    return t.certFile && t.keyFile
      ? readServerCredentials(t.certFile, t.keyFile)
      : issueServerCredentials(this.d.ca, this.d.nodeId, defaultServerNames(t.serverNames));
  }

  /** Re-reads the certificate files (or issues a fresh certificate) and swaps them into `server`. */
  reload(server: TlsServer): boolean {
    const { settings, log } = this.d;
    try {
      const next = this.load();
      // Keep the ticket keys, so sessions resumed from earlier tickets still resume.
      server.setSecureContext(
        secureContextOptions(next, {
          ...settings,
          ticketKeys: settings.ticketKeys ?? server.getTicketKeys(),
        }),
      );
      this.current = next;
      log.info({ event: 'tls_certificate_reloaded', serial: next.serial, not_after: next.notAfter });
      return true;
    } catch (err) {
      log.error({ event: 'tls_certificate_reload_failed', err }, 'kept the old certificate');
      return false;
    }
  }

  /** Reloads into `server` whenever the certificate files change (nothing to watch when it is issued). */
  watch(server: TlsServer): void {
    const t = this.d.tls;
    if (t.certFile && t.keyFile) {
      this.stopWatching = watchFiles([t.certFile, t.keyFile], t.watchIntervalMs, () => this.reload(server));
    }
  }

  unwatch(): void {
    this.stopWatching?.();
  }
}
