/** `fleet service create|issue|list|show|revoke|suspend|reinstate`, through the provisioning API. */
import { dispatch } from '../command.ts';
import { PRINCIPAL_ABOUT, principalSubs } from '../principal.ts';

export const command = dispatch('service', PRINCIPAL_ABOUT.service, principalSubs('service', 'services'));
