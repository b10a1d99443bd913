/**
 * pki's public face: pure certificate work (no database, no network). Other parts import from here or
 * from the specific module; both are stable.
 */
export * from './ca.ts';
export * from './crl.ts';
export * from './csr.ts';
export * from './errors.ts';
export * from './identity.ts';
export * from './ids.ts';
export * from './keystore.ts';
export * from './ocsp.ts';
export { OID } from './oids.ts';
export * from './pkcs7.ts';
export * from './serial.ts';
export * from './x509.ts';
