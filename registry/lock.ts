/**
 * An exclusive lock on a PGlite data directory. PGlite takes none itself and two processes writing one
 * directory corrupt it, so openRegistry() holds `<dataDir>/registry.lock` (holding the owner's pid) while
 * open. A lock whose pid is no longer alive is stale (the owner crashed) and is taken over.
 */
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RegistryError } from './errors.ts';

export interface DirLock {
  readonly path: string;
  release(): void;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function acquireDirLock(dir: string, name = 'registry.lock'): DirLock {
  const path = join(dir, name);
  // Write the pid to a private file first and hard-link it into place: link() fails atomically when the
  // lock exists, and a reader never sees a lock file without its pid.
  const tmp = join(dir, `.${name}.${process.pid}.${Date.now()}`);
  writeFileSync(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const owner = readPid(path);
        if (owner !== undefined && pidAlive(owner)) {
          throw new RegistryError(
            'REGISTRY_LOCKED',
            `registry data directory ${dir} is in use by process ${owner}` +
              (owner === process.pid ? ' (this process)' : '') +
              `; stop it first (lock file ${path})`,
            { details: { pid: owner, lockFile: path } },
          );
        }
        if (attempt >= 2) {
          throw new RegistryError('REGISTRY_LOCKED', `could not take over the stale lock ${path}`, {
            details: { lockFile: path },
          });
        }
        // Stale: its owner is gone. Remove it and try again.
        try {
          unlinkSync(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {}
  }
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      // Only remove it if it is still ours.
      if (readPid(path) === process.pid) {
        try {
          unlinkSync(path);
        } catch {}
      }
    },
  };
}
