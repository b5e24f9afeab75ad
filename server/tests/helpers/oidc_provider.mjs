#!/usr/bin/env node
// A real OpenID Provider for the sign-in tests: npm oidc-provider (an
// OpenID Certified implementation), run by node on loopback over HTTPS with
// a certificate from a test CA. Authorization code flow only, PKCE (S256)
// required, one confidential client (client_secret_basic), scopes
// openid email profile. Its sign-in page is a plain form (no script): the
// person types an account's sub or email, and the requested scopes are
// granted with the sign-in (a first-party client: no consent page).
//
// One argument, a JSON object:
//   {"port": 0,                        (0: any free port; binds 127.0.0.1)
//    "cert": "cert.pem", "key": "key.pem",   (PEM files, for localhost)
//    "client": {"client_id", "client_secret", "redirect_uris": [...]},
//    "accounts": [{"sub", "email", "email_verified", "hd"?, "name"?}]}
// The issuer is https://localhost:<port>. When it listens it prints one line,
// {"port": N, "issuer": "https://localhost:N"}; nothing else goes to stdout.
// The ID token carries email, email_verified and hd (scope email) and name
// (scope profile). It exits on SIGTERM or SIGINT.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import Provider, { errors } from 'oidc-provider';

// oidc-provider prints notices with console.info: keep stdout for the ready line.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

const config = JSON.parse(process.argv[2] || '{}');
for (const field of ['cert', 'key', 'client', 'accounts']) {
  if (!(field in config)) {
    process.stderr.write(`oidc provider: the configuration has no "${field}"\n`);
    process.exit(2);
  }
}
const accounts = config.accounts;

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function findByLogin(login) {
  const l = String(login || '').trim();
  return accounts.find((a) => a.sub === l || (a.email && a.email.toLowerCase() === l.toLowerCase()));
}

function page(res, status, title, body) {
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body>${body}</body></html>
`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

function loginPage(res, uid, clientId, error) {
  page(
    res,
    200,
    'Sign in',
    `<h1>Sign in to ${escape(clientId)}</h1>
${error ? `<p id="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Account (sub or email)</label>
<input name="login" id="login" autocomplete="username" autofocus>
<button type="submit" id="sign-in">Sign in</button>
</form>`,
  );
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 65536) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

// The requested scopes and claims, granted at once (a first-party client).
async function grantAll(provider, accountId, params, existingGrantId) {
  const grant = (existingGrantId && (await provider.Grant.find(existingGrantId)))
    || new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(String(params.scope));
  if (params.claims) {
    const { id_token: idToken, userinfo } = JSON.parse(params.claims);
    grant.addOIDCClaims([...Object.keys(idToken || {}), ...Object.keys(userinfo || {})]);
  }
  return grant.save();
}

async function interaction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    if (e instanceof errors.SessionNotFound) {
      return page(res, 400, 'Sign in', '<p id="error">This sign-in has expired or was not started here.</p>');
    }
    throw e;
  }
  if (details.uid !== uid) {
    return page(res, 400, 'Sign in', '<p id="error">This sign-in does not match the browser\'s.</p>');
  }
  const { prompt, params } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return loginPage(res, uid, params.client_id);
    if (prompt.name === 'consent') {
      // Signed in already; the client asks for more: granted without a page.
      const grantId = await grantAll(provider, details.session.accountId, params, details.grantId);
      const consent = details.grantId ? {} : { grantId };
      return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    }
    return page(res, 400, 'Sign in', `<p id="error">Unexpected prompt ${escape(prompt.name)}.</p>`);
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    if (prompt.name !== 'login') {
      return page(res, 400, 'Sign in', '<p id="error">Not expecting a sign-in now.</p>');
    }
    const account = findByLogin(form.get('login'));
    if (!account) return loginPage(res, uid, params.client_id, 'No such account.');
    const grantId = await grantAll(provider, account.sub, params, undefined);
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.sub }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  }
  res.writeHead(405, { allow: 'GET, POST' });
  return res.end();
}

const server = https.createServer({
  cert: fs.readFileSync(config.cert),
  key: fs.readFileSync(config.key),
});
server.on('error', (e) => {
  process.stderr.write(`oidc provider: ${e.message}\n`);
  process.exit(1);
});

// The issuer names the bound port: the Provider is made once listening.
server.listen(Number(config.port || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://localhost:${port}`;
  const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const jwk = { ...signingKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  const { client } = config;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: client.client_id,
        client_secret: client.client_secret,
        redirect_uris: client.redirect_uris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [jwk] },
    cookies: {
      keys: ['pilothouse-test-oidc-cookie-key-1', 'pilothouse-test-oidc-cookie-key-0'],
    },
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified', 'hd'],
      profile: ['name'],
    },
    responseTypes: ['code'],
    // Seconds, about Google's.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
    },
    pkce: { methods: ['S256'], required: () => true },
    // The ID token carries the claims of the granted scopes even though an
    // access token is issued too (as Google's does).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      url: (ctx, i) => `/interaction/${i.uid}`,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in error</title></head>
<body><h1 id="error">${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p></body></html>
`;
    },
    async findAccount(ctx, sub) {
      const account = accounts.find((a) => a.sub === sub);
      if (!account) return undefined;
      return {
        accountId: account.sub,
        async claims() {
          const claims = { sub: account.sub };
          if (account.email !== undefined) claims.email = account.email;
          if (account.email_verified !== undefined) claims.email_verified = account.email_verified;
          if (account.hd) claims.hd = account.hd;
          if (account.name) claims.name = account.name;
          return claims;
        },
      };
    },
  });
  // Why a request was refused (error codes and descriptions, no secrets).
  const log = (what) => (ctx, err) => {
    const detail = err.error_detail ? ` (${err.error_detail})` : '';
    process.stderr.write(`oidc provider: ${what}: ${err.error || err.name}: ${err.error_description || err.message}${detail}\n`);
  };
  provider.on('authorization.error', log('authorization'));
  provider.on('grant.error', log('token'));
  provider.on('server_error', log('server error'));

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const path = new URL(req.url, issuer).pathname;
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/.exec(path);
    if (!m) return callback(req, res);
    return interaction(provider, req, res, m[1], m[2]).catch((e) => {
      process.stderr.write(`oidc provider: interaction: ${e.message}\n`);
      if (!res.headersSent) page(res, 500, 'Sign in', '<p id="error">Something went wrong.</p>');
      else res.end();
    });
  });
  process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);
});
