/**
 * Entry of a load worker process (forked by the runner): wires the IPC channel to a LoadWorker. The
 * process exits when its parent goes away, so an interrupted run leaves no orphans.
 */
import type { FromWorker, ToWorker } from './protocol.ts';
import { LoadWorker } from './worker.ts';

let worker: LoadWorker | undefined;
const send = (m: FromWorker) => {
  if (process.connected) process.send?.(m);
};

process.on('message', (msg: ToWorker) => {
  try {
    if (msg.type === 'init') worker = new LoadWorker(msg.init, send);
    else worker?.handle(msg);
  } catch (e) {
    send({
      type: 'fatal',
      worker: msg.type === 'init' ? msg.init.worker : -1,
      message: (e as Error).stack ?? String(e),
    });
  }
  if (msg.type === 'stop') setTimeout(() => process.exit(0), 500).unref();
});
process.on('disconnect', () => process.exit(0));
// Ctrl-C reaches the whole process group: the parent coordinates the stop, the worker waits for it.
process.on('SIGINT', () => {});
