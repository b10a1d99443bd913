/**
 * `fleet crl [--ca device|infrastructure] [--out FILE]`: the current CRL. While the provisioning service
 * runs (`fleet up`, a deployment at FLEET_PUBLIC_URL), it is fetched from the public endpoint, where
 * devices and relying parties get it too, and its signature is checked against the data directory's CA;
 * when nothing listens at the local address, it is built from the local registry, as the service would.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { join } from 'node:path';
import { paths } from '../../config/paths.ts';
import { type CrlInfo, readCrl } from '../../pki/crl.ts';
import { toPem } from '../../pki/der.ts';
import { PkiError } from '../../pki/errors.ts';
import { ProvisioningError } from '../../provisioning/errors.ts';
import { whyLocked } from '../api.ts';
import { simple } from '../command.ts';
import { print } from '../output.ts';

type Which = 'device' | 'infrastructure';

/**
 * The CRL from the public endpoint; undefined when nothing listens there. node:http rather than fetch():
 * fetch loads Node's bundled undici, which cost more than the request.
 */
function fetchCrl(url: string): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const unreachable = (why: string, cause?: unknown) =>
      new ProvisioningError('API_UNREACHABLE', `cannot fetch the CRL from ${url}: ${why}`, {
        cause,
        details: { url },
      });
    const req = get(url, { timeout: 10_000 }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(unreachable(`HTTP ${res.statusCode}, not a CRL`));
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => reject(unreachable(e.message, e)));
      res.on('end', () => resolve(Buffer.concat(chunks)));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', (e: NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] }) => {
      if ((e.code ?? e.errors?.[0]?.code) === 'ECONNREFUSED') resolve(undefined);
      else reject(unreachable(e.message, e));
    });
  });
}

export const command = simple(
  {
    name: 'crl',
    summary: 'the current CRL of the device or infrastructure CA',
    description:
      'While the provisioning service runs, the CRL is fetched from its public endpoint (FLEET_PUBLIC_URL,\n' +
      'default http://FLEET_HOST:FLEET_PUBLIC_PORT/crl/<ca>.crl) and its signature checked against DATA/ca/;\n' +
      'when nothing listens at the local address, it is built from the local registry.\n' +
      'Without --out the PEM (`X509 CRL`) is printed.',
    flags: {
      ca: { type: 'enum', values: ['device', 'infrastructure'], help: 'which CA', default: 'device' },
      out: {
        type: 'string',
        arg: 'FILE',
        help: 'write it to FILE: DER when it ends in .der or .crl, else PEM',
      },
      local: { type: 'boolean', help: 'build it from the local registry (only while no service runs)' },
      remote: { type: 'boolean', help: 'only from the running service; never from the local registry' },
    },
    examples: ['fleet crl --out device.crl', 'fleet crl --ca infrastructure --json'],
  },
  async (ctx, { values }) => {
    const which = (values['ca'] as Which | undefined) ?? 'device';
    const config = ctx.config;
    const url = `${config.publicBaseUrl}/crl/${which}.crl`;
    const explicit = config.publicBaseUrl !== `http://${config.host}:${config.publicPort}`;
    let der: Buffer | undefined;
    let info: Omit<CrlInfo, 'entries'>;
    let source: string;
    if (!values['local']) der = await fetchCrl(url);
    if (der) {
      const caFile = join(paths(config.dataDir).ca, `${which}-ca.crt.pem`);
      let issuer: X509Certificate;
      try {
        issuer = new X509Certificate(await readFile(caFile));
      } catch (cause) {
        throw new PkiError('CA_MISSING', `cannot read ${caFile} to check the CRL's signature`, { cause });
      }
      info = readCrl(der, issuer);
      source = url;
    } else {
      if (values['remote'] || explicit)
        throw new ProvisioningError('API_UNREACHABLE', `nothing listens at ${url}`, { details: { url } });
      // Nothing runs here: the registry is free (or held by a `fleet broker`, which REGISTRY_LOCKED names).
      const [{ currentCrl }, { openLocalCa, withRegistry }] = await Promise.all([
        import('../../provisioning/crl.ts'),
        import('../../runtime/index.ts'),
      ]);
      const ca = await openLocalCa(config);
      const built = await withRegistry(config, (r) => currentCrl(ca, r, which)).catch((e) => {
        throw whyLocked(e, url);
      });
      der = built.der;
      info = {
        crlNumber: built.crlNumber,
        thisUpdate: built.thisUpdate,
        nextUpdate: built.nextUpdate,
      };
      source = 'local registry';
    }
    const pem = toPem(der, 'X509 CRL');
    const meta = {
      ca: which,
      source,
      crlNumber: info.crlNumber?.toString(),
      thisUpdate: info.thisUpdate,
      nextUpdate: info.nextUpdate,
    };
    const out = values['out'] as string | undefined;
    if (out) {
      const asDer = /\.(der|crl)$/i.test(out);
      await writeFile(out, asDer ? der : pem);
      print(
        ctx,
        { ...meta, file: out },
        `wrote the ${which} CRL (number ${meta.crlNumber}, from ${source}) to ${out}`,
      );
    } else {
      print(ctx, { ...meta, pem }, pem);
    }
    return 0;
  },
);
