/**
 * OCSP and CRL request fuzz against the public listener of a running provisioning service (plain HTTP, no
 * certificate needed: anyone may send these). Mutated DER OCSP requests by POST and by GET (RFC 6960 A.1,
 * base64 in the path), requests with serials past RFC 5280's 20 octets, and mutated CRL paths, methods and
 * headers. The rule: an OCSP request gets an OCSP response that parses (successful, or malformedRequest /
 * unauthorized, unsigned as RFC 6960 §2.3 says, never internalError for bad input) or a 4xx with a code;
 * a CRL request gets the CRL or a 4xx with a code; never a 500, never a crash: the control request (a
 * valid OCSP request for an enrolled device) answers `good` throughout and at the end.
 */
import { BasicOCSPResponse, OCSPResponse, OCSPResponseStatus } from '@peculiar/asn1-ocsp';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList } from '@peculiar/asn1-x509';
import { request } from 'undici';
import * as der from '../../../pki/der.ts';
import { certIdFor } from '../../../pki/ocsp.ts';
import { createStation, type Harness, pgliteBackend, startHarness } from '../../helpers/provisioning.ts';
import type { AdversarialArea, AreaContext } from '../harness.ts';
import { mutate } from '../mutate.ts';

interface Answer {
  status: number;
  type: string;
  body: Buffer;
}

async function send(url: string, method: string, body?: Buffer, headers: Record<string, string> = {}) {
  const r = await request(url, { method: method as 'GET', body, headers });
  const b = Buffer.from(await r.body.arrayBuffer());
  return { status: r.statusCode, type: String(r.headers['content-type'] ?? ''), body: b };
}

/** OCSPRequest { tbsRequest { requestList { Request { reqCert } ... } [, requestExtensions] } }. */
function ocspRequest(certIds: Buffer[], nonce?: Buffer): Buffer {
  const list = der.seq(...certIds.map((c) => der.seq(c)));
  const exts = nonce
    ? [
        der.tlv(
          0xa2,
          der.seq(der.seq(der.oid('1.3.6.1.5.5.7.48.1.2'), der.octetString(der.octetString(nonce)))),
        ),
      ]
    : [];
  return der.seq(der.seq(list, ...exts));
}

const jsonCode = (a: Answer): string | undefined => {
  try {
    return (JSON.parse(a.body.toString('utf8')) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
};

/** As the rule says, or a string naming what happened instead. */
function judgeOcsp(a: Answer): true | string {
  if (a.status >= 500) return `HTTP ${a.status} ${a.body.toString('utf8').slice(0, 120)}`;
  if (a.status >= 400) return jsonCode(a) ? true : `HTTP ${a.status} without a code`;
  if (a.status !== 200 || !a.type.startsWith('application/ocsp-response'))
    return `HTTP ${a.status} ${a.type}: not an OCSP response`;
  let top: OCSPResponse;
  try {
    top = AsnConvert.parse(a.body, OCSPResponse);
  } catch (e) {
    return `the OCSP response does not parse: ${(e as Error).message}`;
  }
  if (top.responseStatus === OCSPResponseStatus.internalError) return 'internalError for bad input';
  if (top.responseStatus === OCSPResponseStatus.successful) {
    if (!top.responseBytes) return 'successful without responseBytes';
    try {
      AsnConvert.parse(top.responseBytes.response.buffer, BasicOCSPResponse);
    } catch (e) {
      return `BasicOCSPResponse does not parse: ${(e as Error).message}`;
    }
  } else if (top.responseBytes) return 'an error status with responseBytes (RFC 6960 §2.3: unsigned)';
  return true;
}

function ocspStatus(a: Answer): string {
  const top = AsnConvert.parse(a.body, OCSPResponse);
  if (top.responseStatus !== OCSPResponseStatus.successful) return `status ${top.responseStatus}`;
  const basic = AsnConvert.parse(top.responseBytes!.response.buffer, BasicOCSPResponse);
  const cs = basic.tbsResponseData.responses[0]!.certStatus;
  return cs.good !== undefined ? 'good' : cs.revoked ? 'revoked' : 'unknown';
}

const b64url = (d: Buffer) => encodeURIComponent(d.toString('base64'));

export const ocspCrlFuzz: AdversarialArea = {
  name: 'ocsp-crl-fuzz',
  description:
    'mutated OCSP (GET, POST) and CRL requests on the public listener: an OCSP answer or a 4xx with a code, never a 500; control still good',
  fullCount: 20_000,
  boundedCount: 120,
  async run(ctx: AreaContext) {
    const h: Harness = await startHarness(pgliteBackend());
    try {
      const station = await createStation(h, { products: ['thermo'] });
      const { csrPem } = h.keyAndCsr('adv-ocsp-dev');
      const enrolled = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: 'adv-ocsp-dev',
        product: 'thermo',
        csr: csrPem,
      });
      if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${enrolled.text}`);
      const issuer = h.ca.ca.issuers.device;
      const good = certIdFor(issuer, enrolled.json.serial as string);
      const ocspUrl = `${h.publicUrl}/ocsp`;
      const control = ocspRequest([good.der]);
      const controlOk = async (): Promise<true | string> => {
        const a = await send(ocspUrl, 'POST', control, { 'content-type': 'application/ocsp-request' });
        const j = judgeOcsp(a);
        if (j !== true) return j;
        const s = ocspStatus(a);
        return s === 'good' ? true : `control answered ${s}`;
      };
      await ctx.check('control: a valid OCSP request for an enrolled device answers good', controlOk);

      // Serials past RFC 5280 §4.1.2.2's 20 octets: RFC 6960 §2.3 malformedRequest, not a JSON 400.
      for (const octets of [21, 22, 32, 64]) {
        const serial = `7f${'ab'.repeat(octets - 1)}`;
        const req = ocspRequest([certIdFor(issuer, serial).der]);
        for (const how of ['POST', 'GET'] as const) {
          await ctx.check(`a ${octets}-octet serial by ${how}: malformedRequest`, async () => {
            const a =
              how === 'POST'
                ? await send(ocspUrl, 'POST', req, { 'content-type': 'application/ocsp-request' })
                : await send(`${ocspUrl}/${b64url(req)}`, 'GET');
            const j = judgeOcsp(a);
            if (j !== true) return j;
            if (a.status !== 200) return `HTTP ${a.status} ${jsonCode(a)}: not an OCSP response`;
            const s = ocspStatus(a);
            return s === `status ${OCSPResponseStatus.malformedRequest}` ? true : `answered ${s}`;
          });
        }
      }

      const seeds = [
        control,
        ocspRequest([good.der], Buffer.from('0123456789abcdef')),
        ocspRequest([certIdFor(issuer, enrolled.json.serial, 'sha256').der]),
        ocspRequest([good.der, certIdFor(issuer, '01').der]),
        ocspRequest([certIdFor(h.ca.ca.issuers.infrastructure, '2a').der]),
      ];
      const crlPaths = ['/crl/device.crl', '/crl/infrastructure.crl', '/crl/device.crl.pem'];
      let ocspCases = 0;
      let crlCases = 0;
      for (let i = 0; i < ctx.count; i++) {
        const kind = ctx.int(10);
        if (kind < 8) {
          ocspCases++;
          const m = mutate(seeds[ctx.int(seeds.length)]!, ctx);
          const how = kind < 5 ? 'POST' : 'GET';
          let path = `${ocspUrl}/${b64url(m)}`;
          if (how === 'GET' && ctx.int(4) === 0) {
            // Mangle the path itself: raw base64, stray characters, bad percent-encoding.
            const forms = [
              m.toString('base64'),
              `${m.toString('base64')}%`,
              `%E0${b64url(m)}`,
              `${b64url(m)}/x`,
            ];
            path = `${ocspUrl}/${forms[ctx.int(forms.length)]}`;
          }
          await ctx.check(`OCSP ${how} mutant ${i}`, async () => {
            const a =
              how === 'POST'
                ? await send(ocspUrl, 'POST', m, { 'content-type': 'application/ocsp-request' })
                : await send(path, 'GET');
            const j = judgeOcsp(a);
            return j === true ? true : `${j} (request ${m.toString('hex').slice(0, 200)})`;
          });
        } else {
          crlCases++;
          const base = crlPaths[ctx.int(crlPaths.length)]!;
          const forms = [
            `${base}${String.fromCharCode(33 + ctx.int(90))}`,
            `${base}?${encodeURIComponent(mutate(Buffer.from('a=1'), ctx).toString('latin1'))}`,
            `/crl/${encodeURIComponent(mutate(Buffer.from(base.slice(5)), ctx).toString('latin1'))}`,
            `${base}%${ctx.int(10)}`,
            base,
          ];
          const path = forms[ctx.int(forms.length)]!;
          const method = ['GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE'][ctx.int(6)]!;
          const headers: Record<string, string> =
            ctx.int(3) === 0
              ? {
                  'if-none-match': mutate(Buffer.from('"1f"'), ctx)
                    .toString('latin1')
                    .replace(/[^\x20-\x7e]/g, ''),
                }
              : {};
          await ctx.check(`CRL ${method} ${path.slice(0, 60)}`, async () => {
            const a = await send(`${h.publicUrl}${path}`, method, undefined, headers);
            if (a.status >= 500) return `HTTP ${a.status} ${a.body.toString('utf8').slice(0, 120)}`;
            if (a.status >= 400)
              return method === 'HEAD' || jsonCode(a) ? true : `HTTP ${a.status} without a code`;
            if (a.status === 304 || method === 'HEAD') return true;
            if (a.type.startsWith('application/pkix-crl')) {
              AsnConvert.parse(a.body, CertificateList);
              return true;
            }
            return a.type.startsWith('application/x-pem-file') ? true : `HTTP ${a.status} ${a.type}`;
          });
        }
        if (i % 100 === 99) await ctx.check(`control after ${i + 1} mutants`, controlOk);
      }
      await ctx.check('control at the end: the service still answers good', controlOk);
      ctx.figure('ocsp_mutants', ocspCases);
      ctx.figure('crl_requests', crlCases);
    } finally {
      await h.close();
    }
  },
};
