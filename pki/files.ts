/** The few file helpers the parts share (the CA's files, the CLI's, the simulator's identity cache). */
import { chmod, rename, stat, writeFile } from 'node:fs/promises';

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes through a temp file and a rename, so a reader never sees half a file; `mode` even under a umask. */
export async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}
