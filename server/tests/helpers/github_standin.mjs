#!/usr/bin/env node
// A stand-in for GitHub's OAuth and REST API endpoints, for the sign-in
// tests: GitHub's servers cannot be reached from this machine. It answers as
// GitHub (and GitHub Enterprise Server, whose API lives under /api/v3) is
// documented to, for what Pilothouse uses:
//
//   GET  /login/oauth/authorize      client_id, redirect_uri (must be the
//        registered one), scope, state, code_challenge (S256): a sign-in
//        page, a form with #login (a user's login) and #sign-in.
//   POST /login/oauth/authorize/:id  signs in and redirects to the client
//        with code and state. A code works once, for 10 minutes.
//   POST /login/oauth/access_token   form body; client_id and client_secret
//        in the body or HTTP Basic; code, redirect_uri, code_verifier. As
//        GitHub does, a refusal is HTTP 200 with {"error": ...}.
//   GET  /api/v3/user, /api/v3/user/emails (scope user:email),
//        /api/v3/user/memberships/orgs/:org (scope read:org): Bearer token.
//
// One argument, a JSON object:
//   {"port": 0, "client": {"client_id", "client_secret", "redirect_uri"},
//    "users": [{"id", "login", "emails": [{"email", "primary", "verified"}],
//               "orgs": [{"org", "state": "active"|"pending"}]}]}
// Plain HTTP on 127.0.0.1 (the server allows http:// provider URLs only on
// loopback). When it listens it prints one line, {"port": N}; nothing else
// goes to stdout. It exits on SIGTERM or SIGINT.
import crypto from 'node:crypto';
import http from 'node:http';

const config = JSON.parse(process.argv[2] || '{}');
const { client, users } = config;
if (!client || !users) {
  process.stderr.write('github stand-in: the configuration needs "client" and "users"\n');
  process.exit(2);
}
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

const pending = new Map(); // authorization id -> { redirect_uri, state, challenge, scope }
const codes = new Map(); // code -> { user, challenge, redirect_uri, scope, expires, used }
const tokens = new Map(); // access token -> { user, scope }

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const random = () => crypto.randomBytes(20).toString('hex');
const b64url = (buf) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

function send(res, status, body, type = 'application/json; charset=utf-8') {
  res.writeHead(status, { 'content-type': type });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function page(res, status, title, inner) {
  send(
    res,
    status,
    `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${inner}</body></html>`,
    'text/html; charset=utf-8',
  );
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function authorize(res, url) {
  const q = url.searchParams;
  if (q.get('client_id') !== client.client_id) return page(res, 404, 'Not Found', '<p>No such application.</p>');
  if (q.get('redirect_uri') && q.get('redirect_uri') !== client.redirect_uri) {
    return page(res, 400, 'Redirect URI mismatch', '<p>The redirect_uri is not associated with this application.</p>');
  }
  if (q.get('code_challenge') && q.get('code_challenge_method') !== 'S256') {
    return page(res, 400, 'Bad request', '<p>Only S256 code challenges are supported.</p>');
  }
  const id = random();
  pending.set(id, {
    state: q.get('state') || '',
    challenge: q.get('code_challenge') || null,
    scope: (q.get('scope') || '').split(/[ ,]+/).filter(Boolean),
  });
  page(
    res,
    200,
    'Sign in to GitHub',
    `<form method="post" action="/login/oauth/authorize/${id}">` +
      '<label>Username <input name="login" id="login" autocomplete="off"></label>' +
      '<button type="submit" id="sign-in">Sign in</button></form>',
  );
}

async function signIn(req, res, id) {
  const p = pending.get(id);
  if (!p) return page(res, 404, 'Not Found', '<p>This sign-in has expired.</p>');
  const form = new URLSearchParams(await body(req));
  const user = users.find((u) => u.login === form.get('login'));
  if (!user) return page(res, 200, 'Sign in to GitHub', '<p id="error">Incorrect username.</p>');
  pending.delete(id);
  const code = random();
  codes.set(code, { user, challenge: p.challenge, scope: p.scope, expires: Date.now() + 600_000, used: false });
  const to = new URL(client.redirect_uri);
  to.searchParams.set('code', code);
  if (p.state) to.searchParams.set('state', p.state);
  res.writeHead(302, { location: to.toString() });
  res.end();
}

async function accessToken(req, res) {
  const form = new URLSearchParams(await body(req));
  let id = form.get('client_id');
  let secret = form.get('client_secret');
  const basic = (req.headers.authorization || '').match(/^Basic (.+)$/i);
  if (basic) {
    const [u, s] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
    id = decodeURIComponent(u);
    secret = decodeURIComponent(s);
  }
  const refuse = (error, description) => {
    process.stderr.write(`github stand-in: token: ${error}\n`);
    send(res, 200, { error, error_description: description });
  };
  if (id !== client.client_id || secret !== client.client_secret) {
    return refuse('incorrect_client_credentials', 'The client_id and/or client_secret passed are incorrect.');
  }
  const entry = codes.get(form.get('code') || '');
  if (!entry || entry.used || entry.expires < Date.now()) {
    return refuse('bad_verification_code', 'The code passed is incorrect or expired.');
  }
  entry.used = true;
  if (form.get('redirect_uri') && form.get('redirect_uri') !== client.redirect_uri) {
    return refuse('redirect_uri_mismatch', 'The redirect_uri MUST match the registered callback URL for this application.');
  }
  if (entry.challenge) {
    const verifier = form.get('code_verifier') || '';
    const computed = b64url(crypto.createHash('sha256').update(verifier).digest());
    if (computed !== entry.challenge) return refuse('bad_verification_code', 'The code_verifier does not match the code_challenge.');
  }
  const token = `gho_${random()}`;
  tokens.set(token, { user: entry.user, scope: entry.scope });
  send(res, 200, { access_token: token, token_type: 'bearer', scope: entry.scope.join(',') });
}

function api(req, res, path) {
  const auth = (req.headers.authorization || '').match(/^(?:Bearer|token) (.+)$/i);
  const grant = auth && tokens.get(auth[1]);
  if (!grant) return send(res, 401, { message: 'Bad credentials' });
  const { user, scope } = grant;
  if (path === '/user') return send(res, 200, { login: user.login, id: user.id, type: 'User' });
  if (path === '/user/emails') {
    if (!scope.includes('user:email') && !scope.includes('user')) return send(res, 404, { message: 'Not Found' });
    return send(res, 200, user.emails.map((e) => ({ ...e, visibility: e.primary ? 'private' : null })));
  }
  const m = path.match(/^\/user\/memberships\/orgs\/([A-Za-z0-9-]+)$/);
  if (m) {
    if (!scope.includes('read:org')) return send(res, 403, { message: 'You need at least read:org scope or user scope to list your organization memberships.' });
    const membership = (user.orgs || []).find((o) => o.org.toLowerCase() === m[1].toLowerCase());
    if (!membership) return send(res, 404, { message: 'Not Found' });
    return send(res, 200, { state: membership.state, role: 'member', organization: { login: membership.org } });
  }
  send(res, 404, { message: 'Not Found' });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') return authorize(res, url);
    const signInPath = url.pathname.match(/^\/login\/oauth\/authorize\/([0-9a-f]+)$/);
    if (req.method === 'POST' && signInPath) return await signIn(req, res, signInPath[1]);
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') return await accessToken(req, res);
    if (req.method === 'GET' && url.pathname.startsWith('/api/v3/')) return api(req, res, url.pathname.slice('/api/v3'.length));
    send(res, 404, { message: 'Not Found' });
  } catch (e) {
    process.stderr.write(`github stand-in: ${e.stack || e}\n`);
    send(res, 500, { message: 'Server Error' });
  }
});
server.listen(Number(config.port || 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
