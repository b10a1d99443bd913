/**
 * Seeded byte mutations for the fuzz areas: flip, set, insert, delete, truncate, duplicate a run, and
 * tamper with a DER length octet, one to three at a time. The same seed gives the same mutants.
 */
import type { AreaContext } from './harness.ts';

export function mutate(input: Buffer, ctx: Pick<AreaContext, 'int' | 'random'>): Buffer {
  let b = Buffer.from(input);
  const n = 1 + ctx.int(3);
  for (let k = 0; k < n; k++) {
    const at = () => ctx.int(Math.max(1, b.length));
    switch (ctx.int(8)) {
      case 0: {
        const p = at();
        if (b.length) b[p] = b[p]! ^ (1 << ctx.int(8));
        break;
      }
      case 1: {
        const p = at();
        if (b.length) b[p] = ctx.int(256);
        break;
      }
      case 2: {
        const p = at();
        b = Buffer.concat([b.subarray(0, p), Buffer.from([ctx.int(256)]), b.subarray(p)]);
        break;
      }
      case 3: {
        const p = at();
        b = Buffer.concat([b.subarray(0, p), b.subarray(p + 1 + ctx.int(8))]);
        break;
      }
      case 4:
        b = b.subarray(0, at());
        break;
      case 5: {
        const p = at();
        const q = Math.min(b.length, p + 1 + ctx.int(32));
        b = Buffer.concat([b.subarray(0, q), b.subarray(p, q), b.subarray(q)]);
        break;
      }
      case 6: {
        // A DER length octet (the byte after a tag-like byte) set to a long or indefinite form.
        const p = at();
        if (p + 1 < b.length) b[p + 1] = [0x80, 0x81, 0x84, 0xff, 0x00, 0x7f][ctx.int(6)]!;
        break;
      }
      default: {
        const p = at();
        b = Buffer.concat([
          b.subarray(0, p),
          Buffer.alloc(1 + ctx.int(4), [0x00, 0xff, 0x30][ctx.int(3)]!),
          b.subarray(p),
        ]);
      }
    }
  }
  return b;
}
