/**
 * A registry read only tests make: a certificate row with its DER. No route, broker or command needs it,
 * so it is not on the Registry face; it reads the registry's database handle (dbOf) with the registry's
 * schema and serial check.
 */
import { eq } from 'drizzle-orm';
import { dbOf } from '../../registry/console.ts';
import type { Registry } from '../../registry/index.ts';
import { type CertificateRow, certificates } from '../../registry/schema.ts';
import { checkSerial } from '../../registry/validation.ts';

/** A certificate row with its DER, by serial in any form a lookup accepts. */
export async function getCertificate(reg: Registry, serial: string): Promise<CertificateRow | undefined> {
  const s = checkSerial(serial);
  const [row] = await dbOf(reg).select().from(certificates).where(eq(certificates.serial, s));
  return row;
}
