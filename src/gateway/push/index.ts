/**
 * @module gateway/push/index
 * What the gateway core imports from push: the factory, typed sources, and the storefront.
 */
export type { Admitted, PushHooks } from './admission.ts';
export type { PushStats } from './fanout.ts';
export {
  type PushLogger,
  type PushOptions,
  type PushSource,
  pushSource,
  type Viewer,
} from './options.ts';
export { createPush, type Push } from './push.ts';
export { registerStorefront } from './storefront.ts';
