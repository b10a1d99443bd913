/**
 * Station enrollment: who may get a device certificate (a station, within its product scope and hourly
 * quota) is decided here; how it is made and recorded is provisioning/issuance.ts (step-ca's split).
 *
 * Single enrollments that arrive together are recorded together (group commit): while one transaction
 * runs, the next requests queue and go into the next one. A group is all or nothing in the registry, so
 * when it fails (a retry of an enrolled device, a key conflict, …) each of its requests is redone on its
 * own, which gives each its own answer. A certificate is handed out only after its row is committed.
 */
import type { CheckedCsr } from '../pki/csr.ts';
import type { FleetError } from '../pki/errors.ts';
import type { Identity } from '../pki/ids.ts';
import { certToPem } from '../pki/x509.ts';
import type { PrincipalRow, Registry, RegistryLogger } from '../registry/index.ts';
import type { Authenticator } from './auth.ts';
import { ProvisioningError, toFleetError } from './errors.ts';
import { checkDeviceRequest, type DeviceIssueRequest, type Issuance, type IssueResult } from './issuance.ts';

export interface EnrollmentInput {
  deviceId: string;
  product: string;
  fleet?: string;
  csr: string | Buffer;
}

export interface EnrollOptions {
  /** Requests per group-commit transaction at most (default 500). */
  groupMax?: number;
  /** Group transactions running at once (default 4 on PostgreSQL, 1 on PGlite). */
  groupConcurrency?: number;
}

interface Pending {
  req: DeviceIssueRequest;
  checked: CheckedCsr;
  resolve(r: IssueResult): void;
  reject(e: unknown): void;
}

export class Enrollment {
  private queue: Pending[] = [];
  private running = 0;
  private scheduled = false;
  /** Enrollments admitted against a station's quota but not committed yet. */
  private readonly inFlight = new Map<string, number>();
  private readonly groupMax: number;
  private readonly groupConcurrency: number;

  constructor(
    readonly issuance: Issuance,
    private readonly registry: Registry,
    private readonly auth: Authenticator,
    private readonly log: RegistryLogger,
    opts: EnrollOptions = {},
  ) {
    this.groupMax = opts.groupMax ?? 500;
    this.groupConcurrency = opts.groupConcurrency ?? (registry.driver === 'postgres' ? 4 : 1);
  }

  /** Builds the issuing request and checks everything that needs no I/O (ids, CSR, scope). */
  check(
    station: PrincipalRow,
    actor: Identity,
    input: EnrollmentInput,
  ): { req: DeviceIssueRequest; checked: CheckedCsr } {
    const req: DeviceIssueRequest = {
      id: input.deviceId,
      product: input.product,
      ...(input.fleet !== undefined ? { fleet: input.fleet } : {}),
      csr: input.csr,
      enrolledBy: station.id,
      actor: `station:${actor.id}`,
    };
    const checked = checkDeviceRequest(req);
    checkScope(station, input.product);
    return { req, checked };
  }

  /**
   * Admits `wanted` enrollments against the station's hourly quota and returns how many fit (all when the
   * station has no quota). The caller must release() what it admitted once recorded or failed.
   */
  async admit(station: PrincipalRow, wanted: number): Promise<number> {
    const held = this.inFlight.get(station.id) ?? 0;
    if (station.hourlyQuota === null) {
      this.inFlight.set(station.id, held + wanted);
      return wanted;
    }
    const used =
      (await this.registry.countStationIssuances(station.id)) + (this.inFlight.get(station.id) ?? 0);
    const n = Math.max(0, Math.min(wanted, station.hourlyQuota - used));
    this.inFlight.set(station.id, (this.inFlight.get(station.id) ?? 0) + n);
    return n;
  }

  release(stationId: string, n: number): void {
    const left = (this.inFlight.get(stationId) ?? 0) - n;
    if (left > 0) this.inFlight.set(stationId, left);
    else this.inFlight.delete(stationId);
  }

  /** The caller's station row, or the refusal (unknown station) as a value. */
  async stationFor(caller: Identity): Promise<PrincipalRow | FleetError> {
    try {
      return await this.auth.station(caller.id);
    } catch (e) {
      return toFleetError(e);
    }
  }

  /** One enrollment: scope, quota, then the group-committed issue. */
  async enroll(caller: Identity, input: EnrollmentInput): Promise<IssueResult> {
    const station = await this.auth.station(caller.id);
    const { req, checked } = this.check(station, caller, input);
    if ((await this.admit(station, 1)) === 0) throw quotaExhausted(station);
    try {
      return await this.submit(req, checked);
    } finally {
      this.release(station.id, 1);
    }
  }

  /** Queues a checked request for the next group transaction. */
  submit(req: DeviceIssueRequest, checked: CheckedCsr): Promise<IssueResult> {
    return new Promise<IssueResult>((resolve, reject) => {
      this.queue.push({ req, checked, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running >= this.groupConcurrency || this.queue.length === 0) return;
    this.scheduled = true;
    // One macrotask turn lets the requests parsed in the same I/O round join the group.
    setImmediate(() => {
      this.scheduled = false;
      while (this.running < this.groupConcurrency && this.queue.length > 0) {
        const group = this.queue.splice(0, this.groupMax);
        this.running++;
        this.runGroup(group).finally(() => {
          this.running--;
          this.schedule();
        });
      }
    });
  }

  private async runGroup(group: Pending[]): Promise<void> {
    if (group.length > 1) {
      try {
        const results = await this.issuance.issueDeviceBatch(
          group.map(({ req, checked }) => ({ req, checked })),
        );
        for (const [i, p] of group.entries()) p.resolve(results[i]!);
        return;
      } catch (e) {
        this.log.debug(
          { event: 'enroll_group_fallback', size: group.length, code: (e as FleetError).code },
          'a group failed; recording its requests one by one',
        );
      }
    }
    await Promise.all(
      group.map(async (p) => {
        try {
          p.resolve(await this.issuance.issueDevice(p.req, p.checked));
        } catch (e) {
          p.reject(e);
        }
      }),
    );
  }

  /**
   * A chunk of batch lines: each already checked (or already failed). Admits what the quota allows, issues
   * the rest in one transaction, and on a failure of that transaction redoes each line on its own.
   */
  async issueChunk(
    station: PrincipalRow,
    lines: { req: DeviceIssueRequest; checked: CheckedCsr }[],
  ): Promise<(IssueResult | FleetError)[]> {
    if (lines.length === 0) return [];
    const allowed = await this.admit(station, lines.length);
    try {
      const admitted = lines.slice(0, allowed);
      const out: (IssueResult | FleetError)[] = [];
      if (admitted.length > 0) {
        try {
          out.push(...(await this.issuance.issueDeviceBatch(admitted)));
        } catch (e) {
          this.log.debug(
            { event: 'batch_chunk_fallback', size: admitted.length, code: (e as FleetError).code },
            'a batch chunk failed; recording its lines one by one',
          );
          const each = await Promise.all(
            admitted.map(async ({ req, checked }) => {
              try {
                return await this.issuance.issueDevice(req, checked);
              } catch (err) {
                return toFleetError(err);
              }
            }),
          );
          out.push(...each);
        }
      }
      for (let i = allowed; i < lines.length; i++) out.push(quotaExhausted(station));
      return out;
    } finally {
      this.release(station.id, allowed);
    }
  }
}

export function checkScope(station: PrincipalRow, product: string): void {
  if (!station.products?.includes(product)) {
    throw new ProvisioningError(
      'PRODUCT_NOT_IN_SCOPE',
      `product ${product} is not in the scope of station ${station.id}`,
      { details: { product, station: station.id } },
    );
  }
}

export function quotaExhausted(station: PrincipalRow): ProvisioningError {
  return new ProvisioningError(
    'QUOTA_EXHAUSTED',
    `station ${station.id} has used its quota of ${station.hourlyQuota} enrollments per hour`,
    { details: { hourlyQuota: station.hourlyQuota } },
  );
}

/** PEM of the CA certificates, made once (every answer carries the chain and the root). */
const caPem = new WeakMap<Buffer, string>();
function pemOfCa(d: Buffer): string {
  let p = caPem.get(d);
  if (p === undefined) {
    p = certToPem(d);
    caPem.set(d, p);
  }
  return p;
}

/** The JSON answer of a successful enrollment. */
export function enrollmentAnswer(
  deviceId: string,
  r: IssueResult,
  rootPem: string,
  brokerUrl: string,
): Record<string, unknown> {
  return {
    deviceId,
    serial: r.serial,
    fingerprint: r.fingerprint,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    reused: r.reused,
    certificate: certToPem(r.der),
    chain: r.chain.map(pemOfCa),
    root: rootPem,
    brokerUrl,
  };
}
