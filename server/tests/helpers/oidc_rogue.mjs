#!/usr/bin/env node
// An ATTACKER for the sign-in tests: it plays a malicious or broken OpenID
// Provider, so it is hand-written (a certified provider cannot be made to
// misbehave). It serves discovery, keys, an authorization endpoint that
// signs nobody in (it redirects back at once with a code) and a token
// endpoint whose ID token is wrong in the way `mode` says. The rest is done
// properly, so that only the ID token is to blame when a sign-in is refused:
// a code is single-use and bound to its redirect_uri and PKCE challenge, and
// the client must authenticate (client_secret_basic or client_secret_post).
// HTTPS on loopback, with a certificate from a test CA; RS256 keys made at
// start with npm jose.
//
// One argument, a JSON object:
//   {"port": 0,                        (0: any free port; binds 127.0.0.1)
//    "cert": "cert.pem", "key": "key.pem",   (PEM files, for localhost)
//    "client": {"client_id", "client_secret", "redirect_uris": [...]},
//    "accounts": [{"sub", "email", "hd"?, "name"?}],   (the first signs in)
//    "mode": "ok"}
// Modes, what the ID token has wrong:
//   ok                nothing: iss, aud = client_id, sub, email,
//                     email_verified true, the nonce asked for, iat now,
//                     exp in 300 s, signed with the published key
//   wrong_audience    aud is another client's id
//   wrong_issuer      iss is another issuer
//   expired           exp an hour ago (iat two hours ago)
//   wrong_nonce       a nonce other than the one asked for
//   unverified_email  email_verified false
//   no_email          neither email nor email_verified
//   bad_signature     signed by another key (with the published key's kid)
//   alg_none          not signed at all (alg "none")
// The issuer is https://localhost:<port>. When it listens it prints one line,
// {"port": N, "issuer": "https://localhost:N"}. It exits on SIGTERM or SIGINT.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { SignJWT, exportJWK, generateKeyPair, base64url } from 'jose';

const MODES = [
  'ok',
  'wrong_audience',
  'wrong_issuer',
  'expired',
  'wrong_nonce',
  'unverified_email',
  'no_email',
  'bad_signature',
  'alg_none',
];

const config = JSON.parse(process.argv[2] || '{}');
for (const field of ['cert', 'key', 'client', 'accounts', 'mode']) {
  if (!(field in config)) {
    process.stderr.write(`oidc rogue: the configuration has no "${field}"\n`);
    process.exit(2);
  }
}
const { client, mode } = config;
const account = config.accounts[0];
if (!MODES.includes(mode)) {
  process.stderr.write(`oidc rogue: unknown mode ${JSON.stringify(mode)}; one of ${MODES.join(', ')}\n`);
  process.exit(2);
}
if (!account) {
  process.stderr.write('oidc rogue: no account\n');
  process.exit(2);
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

const kid = crypto.randomUUID();
const signing = await generateKeyPair('RS256', { extractable: true });
const forger = await generateKeyPair('RS256');
const publicJwk = { ...(await exportJWK(signing.publicKey)), kid, use: 'sig', alg: 'RS256' };

// code -> what the authorization request asked for.
const codes = new Map();

function json(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

const tokenError = (res, status, error, description) => {
  process.stderr.write(`oidc rogue: token: ${error}: ${description}\n`);
  json(res, status, { error, error_description: description });
};

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 65536) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const same = (a, b) => {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
};

// The client's credentials: client_secret_basic or client_secret_post.
function clientOf(req, form) {
  const auth = req.headers.authorization;
  if (auth && /^basic /i.test(auth)) {
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i < 0) return null;
    try {
      return {
        id: decodeURIComponent(decoded.slice(0, i).replace(/\+/g, ' ')),
        secret: decodeURIComponent(decoded.slice(i + 1).replace(/\+/g, ' ')),
      };
    } catch {
      return null;
    }
  }
  if (form.get('client_secret') !== null) {
    return { id: form.get('client_id'), secret: form.get('client_secret') };
  }
  return null;
}

async function idToken(issuer, asked) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: account.sub };
  if (mode !== 'no_email') {
    claims.email = account.email;
    claims.email_verified = mode !== 'unverified_email';
  }
  if (account.hd) claims.hd = account.hd;
  if (account.name) claims.name = account.name;
  if (asked.nonce !== null) claims.nonce = asked.nonce;
  if (mode === 'wrong_nonce') claims.nonce = `not-${asked.nonce ?? ''}-${crypto.randomUUID()}`;
  const iat = mode === 'expired' ? now - 7200 : now;
  const exp = mode === 'expired' ? now - 3600 : now + 300;
  const iss = mode === 'wrong_issuer' ? 'https://attacker.invalid' : issuer;
  const aud = mode === 'wrong_audience' ? `${client.client_id}-other` : client.client_id;
  const payload = { ...claims, iss, aud, iat, exp };
  if (mode === 'alg_none') {
    const enc = (o) => base64url.encode(JSON.stringify(o));
    return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(payload)}.`;
  }
  const key = mode === 'bad_signature' ? forger.privateKey : signing.privateKey;
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(key);
}

async function handle(issuer, req, res) {
  const url = new URL(req.url, issuer);
  switch (`${req.method} ${url.pathname}`) {
    case 'GET /.well-known/openid-configuration':
      return json(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        scopes_supported: ['openid', 'email', 'profile'],
        claims_supported: ['sub', 'email', 'email_verified', 'hd', 'name', 'iss', 'aud', 'iat', 'exp', 'nonce'],
        grant_types_supported: ['authorization_code'],
      });
    case 'GET /jwks':
      return json(res, 200, { keys: [publicJwk] });
    case 'GET /authorize': {
      const q = url.searchParams;
      const redirectUri = q.get('redirect_uri');
      if (!redirectUri || !client.redirect_uris.includes(redirectUri)) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        return res.end('redirect_uri is not registered\n');
      }
      const code = crypto.randomBytes(24).toString('base64url');
      codes.set(code, {
        clientId: q.get('client_id'),
        redirectUri,
        nonce: q.get('nonce'),
        challenge: q.get('code_challenge'),
        method: q.get('code_challenge_method') || 'plain',
        expires: Date.now() + 60_000,
      });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      if (q.get('state') !== null) back.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: back.href, 'cache-control': 'no-store', 'content-length': 0 });
      return res.end();
    }
    case 'POST /token': {
      const form = new URLSearchParams(await readBody(req));
      const who = clientOf(req, form);
      if (!who || who.id !== client.client_id || !same(who.secret, client.client_secret)) {
        return tokenError(res, 401, 'invalid_client', 'client authentication failed');
      }
      if (form.get('grant_type') !== 'authorization_code') {
        return tokenError(res, 400, 'unsupported_grant_type', 'authorization_code only');
      }
      const code = form.get('code');
      const asked = code && codes.get(code);
      if (!asked) return tokenError(res, 400, 'invalid_grant', 'unknown or used code');
      codes.delete(code);
      if (asked.expires < Date.now()) return tokenError(res, 400, 'invalid_grant', 'code expired');
      if (asked.clientId !== who.id) return tokenError(res, 400, 'invalid_grant', 'code of another client');
      if (form.get('redirect_uri') !== asked.redirectUri) {
        return tokenError(res, 400, 'invalid_grant', 'redirect_uri mismatch');
      }
      if (asked.challenge !== null) {
        const verifier = form.get('code_verifier') || '';
        const computed = asked.method === 'S256'
          ? crypto.createHash('sha256').update(verifier).digest('base64url')
          : verifier;
        if (!same(computed, asked.challenge)) return tokenError(res, 400, 'invalid_grant', 'PKCE verification failed');
      }
      return json(res, 200, {
        access_token: crypto.randomBytes(24).toString('base64url'),
        token_type: 'Bearer',
        expires_in: 300,
        scope: 'openid email profile',
        id_token: await idToken(issuer, asked),
      }, { pragma: 'no-cache' });
    }
    default:
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found\n');
  }
}

const server = https.createServer({
  cert: fs.readFileSync(config.cert),
  key: fs.readFileSync(config.key),
});
server.on('error', (e) => {
  process.stderr.write(`oidc rogue: ${e.message}\n`);
  process.exit(1);
});
server.listen(Number(config.port || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://localhost:${port}`;
  server.on('request', (req, res) => {
    handle(issuer, req, res).catch((e) => {
      process.stderr.write(`oidc rogue: ${e.message}\n`);
      if (!res.headersSent) json(res, 500, { error: 'server_error' });
      else res.end();
    });
  });
  process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);
});
