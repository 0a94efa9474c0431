// Type-checks authgate.d.ts the way an app uses it (tsc --noEmit; nothing
// runs this file):
//
//	tsc --noEmit -p client/test
import { connect, backoffDelay, closeAction, type AuthgateEvent, type ConnectOptions } from '../authgate.js';

type Session = { data: { session: { access_token: string } | null } };
declare const supabase: { auth: { getSession(): Promise<Session>; refreshSession(): Promise<Session> } };

// The README's Supabase integration, as written there.
const readme = connect('wss://api.example.com/api/v1/pam/ws', {
  getToken: async ({ reason }) =>
    (reason === 'expired' ? await supabase.auth.refreshSession() : await supabase.auth.getSession()).data.session?.access_token,
  onEvent: (e) => console.log(e.type),
});
readme.addEventListener('legacyblocked', () => console.log('update'));

const opts: ConnectOptions = {
  getToken: async () => (await supabase.auth.getSession()).data.session?.access_token ?? '',
  onEvent: (e: AuthgateEvent) => {
    switch (e.type) {
      case 'legacyblocked':
        console.log(e.code, e.reason);
        break;
      case 'retrying':
        console.log(e.kind, e.delayMs, e.attempt);
        break;
      case 'message':
        console.log(e.data);
        break;
    }
  },
  tokenIn: 'bearer',
  restartWindowMs: 5000,
};
const ws = connect('wss://api.example.com/api/v1/pam/ws', opts);
ws.addEventListener('giveup', (e) => console.log(e.detail.attemptsPerMinute));
ws.addEventListener('open', (e) => console.log(e.detail.protocol, ws.state === 'open'));
const sent: boolean = ws.send('hi');
ws.close(1000, 'bye');
const d: number = backoffDelay(3, { baseDelayMs: 500 });
const a: 'stop' | string = closeAction(4003);
console.log(sent, d, a);
