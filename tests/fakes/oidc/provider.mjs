// A real OpenID Connect provider (npm `oidc-provider`) on loopback, standing in for Google in tests.
// PKCE (S256) required, refresh-token rotation on, `access_type=offline` + `prompt=consent` required on the
// authorization request (as Google documents), client secret in the body (client_secret_post).
// Interactions are automatic: the user ALICE logs in and grants whatever was asked. Prints "READY <port>".
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID;
const clientSecret = process.env.OIDC_CLIENT_SECRET;
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean);
const extraScopes = (process.env.OIDC_EXTRA_SCOPES || '').split(' ').filter(Boolean);
const accessTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3600);
const ACCOUNT = process.env.OIDC_ACCOUNT || 'google-sub-alice';

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  cookies: { keys: ['contentpipe-test-cookie-key'] },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  scopes: ['openid', 'offline_access', 'email', 'profile', ...extraScopes],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'picture'] },
  extraParams: {
    access_type(ctx, value) {
      if (value !== 'offline') throw new errors.InvalidRequest('access_type=offline is required');
    },
    include_granted_scopes() {},
  },
  ttl: { AccessToken: accessTtl },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub, email: 'alice@example.com', email_verified: true, name: 'Alice Example',
          picture: 'https://example.com/alice.png',
        };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (params.prompt !== 'consent' && !String(params.prompt || '').includes('consent')) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('prompt=consent is required');
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: ACCOUNT } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

// YouTube Data API `channels.list?mine=true`, as Google answers it: the token must carry youtube.readonly or
// youtube (youtube.upload alone is 403 insufficientPermissions).
const YOUTUBE_READ = ['https://www.googleapis.com/auth/youtube.readonly', 'https://www.googleapis.com/auth/youtube'];

function googleError(res, code, status, message, reason) {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify({
    error: { code, message, errors: [{ message, domain: 'global', reason }], status },
  }));
}

async function youtubeChannels(req, res) {
  const auth = req.headers.authorization || '';
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  const found = token ? await provider.AccessToken.find(token) : undefined;
  if (!found) {
    googleError(res, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials.', 'authError');
    return;
  }
  const scopes = String(found.scope || '').split(' ');
  if (!YOUTUBE_READ.some((s) => scopes.includes(s))) {
    googleError(res, 403, 'PERMISSION_DENIED', 'Request had insufficient authentication scopes.',
      'insufficientPermissions');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({
    kind: 'youtube#channelListResponse',
    items: [{ kind: 'youtube#channel', id: `UC-${found.accountId}`, snippet: { title: 'Alice Example' } }],
  }));
}

const stats = { token: 0, refresh: 0 };
provider.on('grant.success', (ctx) => {
  stats.token += 1;
  if (ctx.oidc.params.grant_type === 'refresh_token') stats.refresh += 1;
});

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
    return;
  }
  if (req.url.startsWith('/youtube/v3/channels')) {
    youtubeChannels(req, res).catch((err) => googleError(res, 500, 'INTERNAL', String(err), 'backendError'));
    return;
  }
  if (req.url === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
