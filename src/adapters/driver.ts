/**
 * @module adapters/driver
 * Broker clients are optional peer dependencies: each is loaded when its URL is first used, and
 * a missing one is a clear error that says what to install.
 */
import { ParleyError } from '../errors.ts';

export async function loadDriver<T>(pkg: string, scheme: string): Promise<T> {
  try {
    return (await import(pkg)) as T;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new ParleyError(
        'FAILED_PRECONDITION',
        `${scheme} URLs need the ${pkg} package: npm install ${pkg}`,
        { details: { package: pkg } },
      );
    }
    throw error;
  }
}

/** Node socket error codes that mean the server is not there (yet): UNAVAILABLE for every adapter. */
export const NETWORK_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
