/**
 * The runtime's public face: what a Fleet process does with its data directory before and around the
 * services. It sits above provisioning and the broker (it bootstraps the CA and issues the local operator
 * credential through provisioning's Issuance, and composes both services in one process) and below the
 * CLI, the tests and the benchmarks, which import it.
 */

export { RUNTIME_ERRORS, RuntimeError } from './errors.ts';
export { type InitResult, initDataDir } from './init.ts';
export { openLocalCa, openRuntime, type Runtime, withRegistry } from './open.ts';
export { assertPortsFree, portsOf } from './ports.ts';
export {
  type RunningServices,
  type Service,
  type ServiceName,
  startServices,
} from './services.ts';
