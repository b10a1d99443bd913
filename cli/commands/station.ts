/** `fleet station create|issue|list|show|revoke|suspend|reinstate|scope`, through the provisioning API. */
import { dispatch } from '../command.ts';
import { PRINCIPAL_ABOUT, principalSubs } from '../principal.ts';

export const command = dispatch('station', PRINCIPAL_ABOUT.station, principalSubs('station', 'stations'));
