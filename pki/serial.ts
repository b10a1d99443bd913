/**
 * The one canonical text form of a certificate serial number (conventions §8), shared by everything that
 * stores, compares or looks up a serial: the registry (the `certificates.serial` key), the identity read
 * from a peer certificate, the CRL writer and the OCSP request reader.
 *
 * A serial is a positive INTEGER (RFC 5280 §4.1.2.2); its canonical form is the lowercase hex of its value
 * in whole octets, without leading zero octets. A DER INTEGER's content may start with a 00 sign octet
 * (when the next octet has its high bit set), and Node's `X509Certificate.serialNumber` is upper case: both
 * map to the same text. Fleet issues 16 random octets whose first octet is never zero (pki/x509.ts
 * `randomSerial`), so `toString('hex')` of an issued serial is already canonical: every stored row keeps
 * its form.
 */

const HEX = /^[0-9a-fA-F]+$/;

/**
 * The canonical form of a serial given as hex digits (either case, any number of leading zeros, odd
 * length allowed), or undefined when `text` is not a string of hex digits only: no colons, spaces, `0x`
 * prefix or sign. The value zero is `00`. Length limits are the caller's (the registry stores at most 20
 * octets); this function only normalises.
 */
export function canonicalSerial(text: unknown): string | undefined {
  if (typeof text !== 'string' || !HEX.test(text)) return undefined;
  let i = 0;
  while (i < text.length - 1 && text[i] === '0') i++;
  const digits = text.slice(i).toLowerCase();
  return digits.length % 2 ? `0${digits}` : digits;
}
