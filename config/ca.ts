/** The CA's settings (organization, key algorithm, public URLs, device validity) from configuration. */
import { type CaConfig, DEFAULT_CA_CONFIG } from '../pki/ca.ts';
import type { FleetConfig } from './load.ts';

export function caConfigFrom(config: FleetConfig): CaConfig {
  return {
    ...DEFAULT_CA_CONFIG,
    organization: config.organization,
    algorithm: config.caAlgorithm,
    publicBaseUrl: config.publicBaseUrl,
    validityDays: { device: config.deviceValidityDays },
  };
}
