/** Messages between the run's parent and its load workers (child processes, or in process for small runs). */
import type { DeviceIdentity } from './identities.ts';
import type { Phase } from './scenario.ts';
import type { IntervalSnapshot } from './stats.ts';

export interface WorkerInit {
  readonly worker: number;
  readonly devices: readonly DeviceIdentity[];
  readonly rootPem: string;
  readonly target: { readonly host: string; readonly port: number; readonly servername: string };
  /** Source addresses to spread over (device index modulo the list); empty: let the kernel choose. */
  readonly sourceAddresses: readonly string[];
  readonly connectTimeoutMs: number;
  readonly keepaliveS: number;
}

/** This worker's part of a phase: connect counts and rates are split between workers. */
export interface PhaseShare {
  readonly connectCount: number;
  readonly rate: number | undefined;
  readonly concurrency: number | undefined;
}

export type ToWorker =
  | { type: 'init'; init: WorkerInit }
  | { type: 'phase'; index: number; phase: Phase; share: PhaseShare; deadlineMs: number }
  | { type: 'victims'; ids: string[] }
  | { type: 'stop' };

export type FromWorker =
  | { type: 'ready'; worker: number; contexts: number }
  | { type: 'stats'; worker: number; phase: number; snapshot: IntervalSnapshot }
  | {
      type: 'phase-done';
      worker: number;
      phase: number;
      open: number;
      unacked: number;
      /** A storm: who it dropped and who it tried to bring back. */
      storm?: StormTargets;
    }
  | { type: 'victims-ack'; worker: number; connected: string[] }
  | { type: 'victim-closed'; worker: number; id: string; atNs: string; cause: string }
  | { type: 'victim-probe'; worker: number; id: string; outcome: string; resumeOffered: boolean }
  | { type: 'stopped'; worker: number }
  | { type: 'fatal'; worker: number; message: string };

/** Whom a reconnect storm worked on. Every device but the revoked ones is brought back, connected or not. */
export interface StormTargets {
  /** Connections the storm dropped (no DISCONNECT, as in an outage). */
  readonly dropped: number;
  /** Devices it tried to reconnect: every device of the run but the revoked ones. */
  readonly attempted: number;
  /** ...of which were connected when the storm started, */
  readonly connectedAtStart: number;
  /** ...and were not (failed earlier, never connected). */
  readonly notConnectedAtStart: number;
  /** Revoked devices left out: they can never connect again. */
  readonly revokedLeftOut: number;
  /** Retry rounds run (see StormPhase.retries), and attempts made in them. */
  readonly retryRounds: number;
  readonly retryAttempts: number;
  /** From the drop to the last device back (ms); -1 when none came back. */
  readonly backAfterMs: number;
  /** Devices still not connected at the end of the storm. */
  readonly notBack: number;
}
