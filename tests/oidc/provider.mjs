// A real OpenID provider (the certified oidc-provider package) for the test suite, on loopback.
//
// Environment:
//   OIDC_PORT      port to listen on (127.0.0.1)
//   OIDC_ISSUER    issuer identifier (default http://127.0.0.1:PORT)
//   OIDC_JWKS      path of a JSON file {"keys": [...private JWKs...]}; the provider publishes
//                  their public halves at /jwks. Rotation = restart with another file.
//   OIDC_SIGN_KID  kid of the key that signs access tokens (default: the first key)
//   OIDC_OPAQUE    "1": access tokens are opaque (for token introspection) instead of JWTs
//   OIDC_ADMIN_REDIRECT  callback URL of sshcontrol's admin sign-in (adds the "admin-ui" client)
//
// Test controls (loopback only, no authentication: this is a test fixture):
//   POST /admin/account {"sub", "email", "groups"}  who a subject is; read at every token
//   POST /admin/login   {"sub"}                     who signs in at the next authorization
//
// Clients: "bot" and "bot2" (client_credentials, secrets "bot-secret"/"bot2-secret"),
// "short" (client_credentials, tokens live 2 s), "agent" (public, authorization code + PKCE,
// redirect http://127.0.0.1:8976/callback), "sshcontrol" (confidential, for introspection).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(process.env.OIDC_JWKS, 'utf8'));
const signKid = process.env.OIDC_SIGN_KID || jwks.keys[0].kid;
const signAlg = jwks.keys.find((k) => k.kid === signKid).alg;
const opaque = process.env.OIDC_OPAQUE === '1';
const RESOURCE_SCOPES = 'mcp:tools mcp:read';

const accounts = new Map();
let nextLogin = null;

function profile(sub) {
  return accounts.get(sub) || { sub, email: undefined, groups: [] };
}

const provider = new Provider(issuer, {
  jwks,
  cookies: { keys: ['test-only-cookie-key'] },
  clients: [
    {
      client_id: 'bot', client_secret: 'bot-secret', grant_types: ['client_credentials'],
      redirect_uris: [], response_types: [], scope: RESOURCE_SCOPES,
    },
    {
      client_id: 'bot2', client_secret: 'bot2-secret', grant_types: ['client_credentials'],
      redirect_uris: [], response_types: [], scope: RESOURCE_SCOPES,
    },
    {
      client_id: 'short', client_secret: 'short-secret', grant_types: ['client_credentials'],
      redirect_uris: [], response_types: [], scope: RESOURCE_SCOPES,
    },
    {
      client_id: 'agent', token_endpoint_auth_method: 'none', application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:8976/callback'], scope: `openid email offline_access ${RESOURCE_SCOPES}`,
    },
    {
      client_id: 'sshcontrol', client_secret: 'introspect-secret', grant_types: [],
      redirect_uris: [], response_types: [],
    },
    // The admin's OpenID Connect sign-in (confidential web client); its callback is sshcontrol's.
    ...(process.env.OIDC_ADMIN_REDIRECT ? [{
      client_id: 'admin-ui', client_secret: 'admin-ui-secret', grant_types: ['authorization_code'],
      response_types: ['code'], redirect_uris: [process.env.OIDC_ADMIN_REDIRECT],
      scope: 'openid email groups',
    }] : []),
  ],
  scopes: ['openid', 'email', 'groups', 'offline_access', 'mcp:tools', 'mcp:read'],
  claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: profile(sub).email, groups: profile(sub).groups }),
  }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator, client) => ({
        scope: RESOURCE_SCOPES,
        audience: resourceIndicator,
        accessTokenTTL: client.clientId === 'short' ? 2 : 600,
        accessTokenFormat: opaque ? 'opaque' : 'jwt',
        jwt: { sign: { alg: signAlg, kid: signKid } },
      }),
    },
  },
  // Tokens carry who the subject is now: a group change shows in the next token.
  extraTokenClaims: async (_ctx, token) => {
    const who = profile(token.accountId || token.clientId);
    return { email: who.email, groups: who.groups };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, Interaction: 600, Session: 600 },
});

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (!nextLogin) throw new Error('no user to sign in: POST /admin/login first');
    return provider.interactionFinished(req, res, { login: { accountId: nextLogin } }, {
      mergeWithLastSubmission: false,
    });
  }
  // Consent: grant whatever was asked (the test user always agrees).
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const handle = provider.callback();

createServer(async (req, res) => {
  try {
    if (req.method === 'POST' && req.url === '/admin/account') {
      const body = await readJson(req);
      accounts.set(body.sub, { sub: body.sub, email: body.email, groups: body.groups || [] });
      res.writeHead(204).end();
    } else if (req.method === 'POST' && req.url === '/admin/login') {
      nextLogin = (await readJson(req)).sub;
      res.writeHead(204).end();
    } else if (req.url.startsWith('/interaction/')) {
      await interaction(req, res);
    } else {
      handle(req, res);
    }
  } catch (err) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err && err.stack ? err.stack : err));
  }
}).listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer} (signing with ${signKid})`);
});
