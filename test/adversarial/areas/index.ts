/**
 * Every area of the adversarial suite, in the order the table prints them. An area is a module under
 * areas/ exporting an AdversarialArea; add it here and it runs in both forms.
 */
import type { AdversarialArea } from '../harness.ts';
import { acl } from './acl.ts';
import { bodyFuzz } from './body-fuzz.ts';
import { connectionAbuse } from './connection-abuse.ts';
import { incidents } from './incidents.ts';
import { mtlsRefusal } from './mtls-refusal.ts';
import { ocspCrlFuzz } from './ocsp-crl-fuzz.ts';

export const AREAS: readonly AdversarialArea[] = [
  mtlsRefusal,
  incidents,
  connectionAbuse,
  acl,
  ocspCrlFuzz,
  bodyFuzz,
];
