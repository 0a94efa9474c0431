package demo

// page is served at / through the proxy (unmatched paths pass) for
// `authgate demo --serve`: it connects with client/authgate.js (served
// at /authgate.js) and shows every event the client emits, for a choice
// of what the app's getToken() returns. window.demoEvents holds the
// events for tests.
const page = `<!doctype html>
<meta charset="utf-8">
<title>authgate demo: the browser client</title>
<link rel="icon" href="data:,">
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:56em}
fieldset{border:1px solid #ccc;padding:.5em 1em}label{display:block;margin:.25em 0}
pre{background:#f4f4f4;padding:1em;min-height:12em;white-space:pre-wrap}
code{background:#f4f4f4;padding:0 .2em}
</style>
<h1>authgate demo: the browser client</h1>
<p>This page opens <code>/api/v1/pam/ws</code> through authgate with
<code>client/authgate.js</code>, the module a frontend uses instead of a bare
<code>new WebSocket(url)</code>. Pick what the app's <code>getToken()</code>
returns, connect, and watch what the client does with each close code.
(The demo's clock is past the policy's cut-over: legacy UUIDs are rejected.)</p>
<fieldset>
<legend>getToken() returns</legend>
<label><input type="radio" name="kind" value="jwt" checked> a valid JWT (from <code>/demo/token</code>, standing in for <code>supabase.auth.getSession()</code>): open, the backend's hello</label>
<label><input type="radio" name="kind" value="short"> a JWT that expires in 20 s: replaced, and the socket reopened, 10 s before authgate's <code>close_on_expiry</code></label>
<label><input type="radio" name="kind" value="expired"> an expired JWT, then fresh ones: 4002, one reconnect with the new token</label>
<label><input type="radio" name="kind" value="uuid"> the legacy UUID: 4003, <code>legacyblocked</code>, never retried</label>
<label><input type="radio" name="kind" value="garbage"> garbage: 4001, one more getToken(), then <code>authrequired</code></label>
<label><input type="radio" name="kind" value="missing"> no token (<code>''</code>): 4001 twice, <code>authrequired</code></label>
<label><input type="radio" name="kind" value="throws"> it throws (signed out): <code>authrequired</code>, no socket at all</label>
</fieldset>
<label><input type="checkbox" id="bearer"> send the token as the <code>bearer</code> subprotocol instead of <code>?token=</code></label>
<p><button id="connect">Connect</button> <button id="send">Send "ping"</button> <button id="close">Close</button>
&nbsp; state: <b id="state">-</b></p>
<pre id="log"></pre>
<p>Stop the demo (Ctrl-C) while connected to see 1012 and the backoff that follows.</p>
<script type="module">
import { connect } from '/authgate.js';

const $ = (id) => document.getElementById(id);
const explain = {
  connecting: (e) => 'opening a socket (' + e.kind + (e.hasToken ? '' : ', no token') + ')',
  open: (e) => 'socket open' + (e.protocol ? ' (subprotocol ' + e.protocol + ')' : ''),
  message: (e) => 'message: ' + e.data,
  disconnect: (e) => 'socket closed: ' + e.code + ' ' + e.reason,
  retrying: (e) => 'reconnecting in ' + e.delayMs + ' ms (' + e.kind + ' after ' + e.code + ')',
  refresh: (e) => e.reconnect
    ? 'token expires in ' + Math.round(e.expiresInMs / 1000) + ' s: reconnecting with a fresh one'
    : 'token nearing exp, and getToken() gave no fresher one',
  authrequired: (e) => 'stopped: the user must sign in (' + (e.error || e.code + ' ' + e.reason) + ')',
  legacyblocked: () => 'stopped for good: this app build must update',
  giveup: (e) => 'stopped: too many attempts a minute (last close ' + e.code + '); offer a Retry button',
  closed: (e) => 'stopped (by ' + e.by + (e.code ? ' ' + e.code : '') + (e.error ? ': ' + e.error : '') + ')',
};
const legacyUUID = '21a2151a-cd37-41d5-a1c7-124bb05e7a6a';
async function fetchToken(kind) {
  const r = await fetch('/demo/token?kind=' + kind);
  if (!r.ok) throw new Error('/demo/token: ' + r.status);
  return r.text();
}
function getTokenFor(kind) {
  return async ({ reason }) => {
    switch (kind) {
      case 'jwt':
      case 'short':
        return fetchToken(kind);
      case 'expired':
        return fetchToken(reason === 'initial' ? 'expired' : 'jwt');
      case 'uuid':
        return legacyUUID;
      case 'garbage':
        return 'not-a-token';
      case 'missing':
        return '';
      default:
        throw new Error('no session (the user is signed out)');
    }
  };
}
const log = (line) => { $('log').textContent += line + '\n'; };
let client = null;
const show = () => { $('state').textContent = client ? client.state : '-'; };
window.demoEvents = [];

$('connect').onclick = () => {
  if (client) client.close();
  const kind = document.querySelector('input[name=kind]:checked').value;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/pam/ws';
  const t0 = performance.now();
  log('-- connect; getToken() returns: ' + kind);
  client = connect(url, {
    getToken: getTokenFor(kind),
    tokenIn: $('bearer').checked ? 'bearer' : 'query',
    refreshBeforeExpiryMs: 10000,
    onEvent: (e) => {
      window.demoEvents.push(e);
      const s = ((performance.now() - t0) / 1000).toFixed(2).padStart(7);
      log(s + ' s  ' + e.type.padEnd(14) + explain[e.type](e));
      show();
    },
  });
  show();
};
$('send').onclick = () => { if (!client || !client.send('ping')) log('         (not open: nothing sent)'); };
$('close').onclick = () => { if (client) client.close(); };
</script>
`
