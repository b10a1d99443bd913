/** `fleet station create|issue|scope|list|show|revoke|suspend|reinstate` (revoke --cascade-from T: its
 * devices too), through the provisioning API. */
import { dispatch } from '../command.ts';
import { principalSubs } from '../principal.ts';

export const command = dispatch('station', principalSubs('station', 'stations'));
