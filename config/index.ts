/**
 * Configuration's public face: the environment parsed once into a frozen `FleetConfig`, the data
 * directory's layout, the CA's settings and the key store they choose. It sits below the services
 * (provisioning, broker) and the CLI, which all import it; it imports only pki/.
 */
export { caConfigFrom } from './ca.ts';
export { type ConsoleConfig, consoleConfig, loadConsoleConfig } from './console.ts';
export { ConfigError } from './errors.ts';
export { caPassphrase, keyStoreFor, type PassphraseResult } from './keystore.ts';
export { type ConfigFlags, type FleetConfig, loadConfig } from './load.ts';
export { createLogger, prettyLine } from './log.ts';
export { LOCAL_OPERATOR, paths, ticketKeysPath } from './paths.ts';
