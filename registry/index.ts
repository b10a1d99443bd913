/** The registry's public face. */
export { REGISTRY_ERRORS, RegistryError, type RegistryErrorCode } from './errors.ts';
export * from './registry.ts';
export * from './schema.ts';
