/** `fleet service create|issue|list|show|revoke|suspend|reinstate`, through the provisioning API. */
import { dispatch } from '../command.ts';
import { principalSubs } from '../principal.ts';

export const command = dispatch('service', principalSubs('service', 'services'));
