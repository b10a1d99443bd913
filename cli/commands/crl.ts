/** `fleet crl [--ca device|infrastructure] [--out FILE]`: the current CRL, built from the local registry. */
import { writeFile } from 'node:fs/promises';
import { currentCrl } from '../../provisioning/crl.ts';
import { openLocalCa, withRegistry } from '../../runtime/index.ts';
import { flags } from '../args.ts';
import { type Command, UsageError } from '../command.ts';
import { print } from '../output.ts';

export const command: Command = {
  async run(ctx) {
    const { values } = flags(ctx.argv, ['ca', 'out']);
    const which = values.ca ?? 'device';
    if (which !== 'device' && which !== 'infrastructure')
      throw new UsageError('--ca must be device or infrastructure');
    const ca = await openLocalCa(ctx.config);
    const built = await withRegistry(ctx.config, (r) => currentCrl(ca, r, which));
    const info = {
      ca: which,
      crlNumber: built.crlNumber.toString(),
      thisUpdate: built.thisUpdate,
      nextUpdate: built.nextUpdate,
    };
    if (values.out) {
      const asDer = /\.(der|crl)$/i.test(values.out);
      await writeFile(values.out, asDer ? built.der : built.pem);
      print(
        ctx,
        { ...info, file: values.out },
        `wrote the ${which} CRL (number ${built.crlNumber}) to ${values.out}`,
      );
    } else {
      print(ctx, { ...info, pem: built.pem }, built.pem);
    }
    return 0;
  },
};
