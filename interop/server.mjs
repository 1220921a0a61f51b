// An independent OAuth 2.0 authorization server (node-oidc-provider) and a
// DPoP-protected API (oauth4webapi's resource-server validation plus replay
// and nonce checks written here), for dpop.py's interoperability tests.
// Loopback only; test credentials only.
//
//   node server.mjs [--nonce | --nonce-as | --nonce-api] [--ttl SECONDS]
//                   [--skew SECONDS [--no-date]]
//                   [--prm challenge|well-known [--resource-path PATH] [--same-origin]
//                    [--prm-resource URL] [--prm-issuer URL]]
// (--nonce: both the token endpoint and the API demand DPoP nonces; --skew:
// both servers' clocks run SECONDS ahead, or behind if negative, and their
// Date headers say so; --no-date: no Date header at all)
// --prm: the API publishes RFC 9728 protected resource metadata through the
// MCP TypeScript SDK's metadata router (@modelcontextprotocol/sdk), and a
// request without Authorization gets a 401 whose challenge is the SDK's own
// (requireBearerAuth, with resource_metadata=) for "challenge", or a DPoP
// challenge with no resource_metadata for "well-known". --resource-path: the
// resource identifier has that path (the API serves below it); --same-origin:
// the authorization server is mounted under /as on the API's own origin;
// --prm-resource and --prm-issuer: the metadata names that resource or that
// authorization server instead of the real ones (for the refusal tests).
// prints one JSON line {issuer, token_endpoint, api, clients} when ready and
// runs until stdin closes.
import { createServer } from 'node:http'
import { randomBytes, createHash } from 'node:crypto'
import Provider from 'oidc-provider'
import * as jose from 'jose'
import * as oauth from 'oauth4webapi'
import express from 'express'
import { mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'

const args = process.argv.slice(2)
const requireNonceAS = args.includes('--nonce') || args.includes('--nonce-as')
const requireNonceAPI = args.includes('--nonce') || args.includes('--nonce-api')
const ttlIndex = args.indexOf('--ttl')
const ttl = ttlIndex >= 0 ? Number(args[ttlIndex + 1]) : 300
const skewIndex = args.indexOf('--skew')
const skewMs = skewIndex >= 0 ? Number(args[skewIndex + 1]) * 1000 : 0
const sendDate = !args.includes('--no-date')
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback)
const prm = option('--prm', null)
const resourcePath = option('--resource-path', '/')
const sameOrigin = args.includes('--same-origin')

// A shifted clock for every library here: Date.now() and new Date() (jose
// reads the latter, oidc-provider and oauth4webapi the former). Node's own
// Date header does not follow it, so each response gets ours.
if (skewMs) {
  const RealDate = Date
  globalThis.Date = class extends RealDate {
    constructor(...a) { super(...(a.length ? a : [RealDate.now() + skewMs])) }
    static now() { return RealDate.now() + skewMs }
  }
}
function stamp(res) {
  if (sendDate) res.setHeader('date', new Date().toUTCString())
  else res.sendDate = false
}

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)))
}

// -- the API: a plain node:http server -----------------------------------------
const apiServer = createServer()
const apiPort = await listen(apiServer)
const apiBase = `http://127.0.0.1:${apiPort}`
const resource = new URL(resourcePath, apiBase).href

// -- the authorization server ----------------------------------------------------
const asServer = sameOrigin ? null : createServer()
const issuer = sameOrigin ? `${apiBase}/as` : `http://127.0.0.1:${await listen(asServer)}`
const { privateKey } = await jose.generateKeyPair('ES256', { extractable: true })
const signingJwk = { ...(await jose.exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'as-1' }
// Clients that authenticate with a JWT hold keys made here; their private
// JWKs go to the test in the ready line (test credentials, loopback only).
async function clientKey(alg, kid) {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true, modulusLength: 2048 })
  const extra = kid ? { kid } : {}
  return { private_jwk: { ...(await jose.exportJWK(privateKey)), ...extra }, public_jwk: { ...(await jose.exportJWK(publicKey)), ...extra } }
}
const ecKey = await clientKey('ES256')
const kidKeys = [await clientKey('ES256', 'client-key-2'), await clientKey('ES256', 'client-key-1')]
const rsaKey = await clientKey('RS256')
const psKey = await clientKey('PS256', 'client-rsa-pss')
const clients = [
  { client_id: 'dpop-post', client_secret: 'post-secret-' + randomBytes(8).toString('hex'), token_endpoint_auth_method: 'client_secret_post' },
  { client_id: 'dpop-basic', client_secret: 'basic-secret-' + randomBytes(8).toString('hex'), token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'dpop-secret-jwt', client_secret: 'jwt-secret-' + randomBytes(32).toString('hex'), token_endpoint_auth_method: 'client_secret_jwt' },
  { client_id: 'dpop-pkjwt-ec', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [ecKey.public_jwk] }, private_jwk: ecKey.private_jwk },
  // two registered keys: the kid in the assertion header says which one signed
  { client_id: 'dpop-pkjwt-kid', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: kidKeys.map((k) => k.public_jwk) }, private_jwk: kidKeys[1].private_jwk },
  { client_id: 'dpop-pkjwt-rsa', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [rsaKey.public_jwk] }, private_jwk: rsaKey.private_jwk },
  // this registration accepts PS256 assertions only
  { client_id: 'dpop-pkjwt-ps256', token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'PS256', jwks: { keys: [psKey.public_jwk] }, private_jwk: psKey.private_jwk },
].map((c) => ({ ...c, grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'api', dpop_bound_access_tokens: true, id_token_signed_response_alg: 'ES256' }))

const provider = new Provider(issuer, {
  clients: clients.map(({ private_jwk, ...registered }) => registered),
  jwks: { keys: [signingJwk] },
  // oidc-provider enables HS256 only of the HMACs by default
  enabledJWA: { clientAuthSigningAlgValues: ['HS256', 'HS384', 'HS512', 'RS256', 'PS256', 'ES256'] },
  scopes: ['api'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => requireNonceAS },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: resource,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  ttl: { ClientCredentials: ttl },
})
provider.proxy = false
const providerCallback = provider.callback()
let tokenRequests = 0
function authorizationServer(req, res) {
  stamp(res)
  if (req.method === 'POST' && req.url.endsWith('/token')) tokenRequests += 1
  providerCallback(req, res)
}
if (asServer) asServer.on('request', authorizationServer)

// -- API request handling --------------------------------------------------------
const metadata = { issuer, jwks_uri: `${issuer}/jwks` }
const seenJti = new Map() // replay detection: jkt + jti -> expiry (ms)
const nonceKey = randomBytes(32)
const nonceFor = (step) => createHash('sha256').update(nonceKey).update(String(step)).digest('base64url').slice(0, 22)
const currentNonce = () => nonceFor(Math.floor(Date.now() / 60000))
const nonceOk = (n) => n === currentNonce() || n === nonceFor(Math.floor(Date.now() / 60000) - 1)
let apiCalls = 0

function reply(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, 'cache-control': 'no-store', ...headers })
  res.end(data)
}

function challenge(error, description) {
  return `DPoP error="${error}", error_description="${description}", algs="ES256"`
}

async function api(req, res) {
  stamp(res)
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  if (req.url === '/stats') return reply(res, 200, { apiCalls, tokenRequests })
  const headers = new Headers()
  for (const [name, value] of Object.entries(req.headers)) {
    headers.set(name, Array.isArray(value) ? value.join(', ') : value)
  }
  const request = new Request(apiBase + req.url, { method: req.method, headers, body: ['GET', 'HEAD'].includes(req.method) ? undefined : Buffer.concat(chunks) })
  let claims
  try {
    claims = await oauth.validateJwtAccessToken(metadata, request, resource, {
      requireDPoP: true,
      signingAlgorithms: ['ES256'],
      [oauth.allowInsecureRequests]: true,
    })
  } catch (err) {
    const error = err.code === 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED' && err.claim === 'exp' ? 'invalid_token' : (err.cause?.claim === 'exp' ? 'invalid_token' : 'invalid_dpop_proof')
    const invalidToken = /exp|jwt access token|signature/i.test(err.message) && !/dpop/i.test(err.message)
    return reply(res, 401, { error: invalidToken ? 'invalid_token' : error, error_description: err.message }, { 'www-authenticate': challenge(invalidToken ? 'invalid_token' : error, err.message.replace(/"/g, "'")) })
  }
  const proof = jose.decodeJwt(req.headers.dpop)
  if (requireNonceAPI && !(typeof proof.nonce === 'string' && nonceOk(proof.nonce))) {
    return reply(res, 401, { error: 'use_dpop_nonce' }, { 'www-authenticate': challenge('use_dpop_nonce', 'Resource server requires nonce in DPoP proof'), 'dpop-nonce': currentNonce() })
  }
  const now = Date.now()
  for (const [key, expiry] of seenJti) if (expiry < now) seenJti.delete(key)
  const slot = claims.cnf.jkt + ' ' + proof.jti
  if (seenJti.has(slot)) {
    return reply(res, 401, { error: 'invalid_dpop_proof' }, { 'www-authenticate': challenge('invalid_dpop_proof', 'DPoP proof replayed') })
  }
  seenJti.set(slot, now + 600000)
  apiCalls += 1
  const extra = requireNonceAPI ? { 'dpop-nonce': currentNonce() } : {}
  reply(res, 200, { ok: true, method: req.method, path: req.url, client_id: claims.client_id, jkt: claims.cnf.jkt, scope: claims.scope, aud: claims.aud }, extra)
}

if (prm) {
  // The SDK's routers: its RFC 9728 document (and its copy of the RFC 8414
  // one) and, for a request with no Authorization, its Bearer challenge.
  const app = express()
  app.disable('x-powered-by')
  if (sameOrigin) app.use('/as', authorizationServer)
  apiServer.on('request', app) // serving /as already: the fetch below may go to it
  const listed = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()
  const published = { ...listed, issuer: option('--prm-issuer', listed.issuer) }
  app.use(mcpAuthMetadataRouter({ oauthMetadata: published, resourceServerUrl: new URL(option('--prm-resource', resource)) }))
  const metadataUrl = new URL(`/.well-known/oauth-protected-resource${resourcePath === '/' ? '' : resourcePath}`, apiBase).href
  const bearer = requireBearerAuth({ verifier: { verifyAccessToken: async () => { throw new Error('unused') } }, resourceMetadataUrl: metadataUrl })
  app.use((req, res, next) => {
    if (req.headers.authorization || req.url === '/stats') return api(req, res)
    if (prm === 'challenge') return bearer(req, res, next)
    reply(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'DPoP algs="ES256"' })
  })
} else {
  apiServer.on('request', api)
}

process.stdout.write(JSON.stringify({
  issuer,
  token_endpoint: `${issuer}/token`,
  resource,
  api: new URL('api/resource', resource.endsWith('/') ? resource : resource + '/').href,
  stats: `${apiBase}/stats`,
  clients: clients.map(({ client_id, client_secret, token_endpoint_auth_method, private_jwk }) => ({ client_id, client_secret, token_endpoint_auth_method, private_jwk })),
}) + '\n')

process.stdin.resume()
process.stdin.on('end', () => process.exit(0))
