/**
 * @module gateway/auth/algorithms
 * The JWS algorithm allow-list, checked once at construction. The classic JWT hole is algorithm
 * confusion: a verifier that accepts both HS256 and RS256 for one key will take a token HMAC-signed
 * with the RSA *public* key as the secret. So one key source gets one family, HMAC or asymmetric,
 * never both, and `none` is never a member.
 */
import { badAuthConfig } from './failure.ts';

const HMAC = { HS256: 32, HS384: 48, HS512: 64 } as const;
const ASYMMETRIC = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
  'ML-DSA-44',
  'ML-DSA-65',
  'ML-DSA-87',
] as const;

export type HmacAlgorithm = keyof typeof HMAC;
export type AsymmetricAlgorithm = (typeof ASYMMETRIC)[number];
export type JwsAlgorithm = HmacAlgorithm | AsymmetricAlgorithm;
export type AlgorithmFamily = 'hmac' | 'asymmetric';

export interface AllowList {
  readonly algorithms: readonly JwsAlgorithm[];
  readonly family: AlgorithmFamily;
  /** For HMAC: the shortest secret RFC 7518 §3.2 allows for every algorithm in the list. */
  readonly minSecretBytes: number;
}

function isHmac(alg: string): alg is HmacAlgorithm {
  return Object.hasOwn(HMAC, alg);
}

function isAsymmetric(alg: string): alg is AsymmetricAlgorithm {
  return (ASYMMETRIC as readonly string[]).includes(alg);
}

/** Validates a user's allow-list; throws INVALID_ARGUMENT for `none`, unknown names or mixed families. */
export function checkAllowList(algorithms: readonly string[]): AllowList {
  if (!Array.isArray(algorithms) || algorithms.length === 0)
    throw badAuthConfig('algorithms must list at least one JWS algorithm');
  const families = new Set<AlgorithmFamily>();
  let minSecretBytes = 0;
  for (const alg of algorithms) {
    if (isHmac(alg)) {
      families.add('hmac');
      minSecretBytes = Math.max(minSecretBytes, HMAC[alg]);
    } else if (isAsymmetric(alg)) families.add('asymmetric');
    // `none` lands here too, in whatever case it is spelled: unsigned tokens are never accepted.
    else throw badAuthConfig(`algorithm ${JSON.stringify(alg)} is not allowed`);
  }
  const [family, other] = families;
  if (family === undefined || other !== undefined)
    throw badAuthConfig('algorithms mix HMAC and asymmetric families for one key source');
  return { algorithms: [...new Set(algorithms)] as JwsAlgorithm[], family, minSecretBytes };
}
