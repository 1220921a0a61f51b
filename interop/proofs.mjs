// Interop helper for test_dpop.py: DPoP proofs made and checked by independent
// JavaScript implementations (npm "dpop" by panva, and "jose").
//
//   node proofs.mjs make '{"count":3,"htm":"GET","htu":"https://h/p","accessToken":"t","nonce":"n"}'
//     -> {"jkt": "...", "proofs": ["...", ...]}
//   node proofs.mjs verify < lines of {"jwt","htm","htu","ath"?,"jkt"?}
//     -> one {"ok": true|false, "error"?: "..."} line per input
import * as dpop from 'dpop'
import * as jose from 'jose'
import { createInterface } from 'node:readline'

async function make(spec) {
  const keypair = await dpop.generateKeyPair('ES256')
  const proofs = []
  for (let i = 0; i < (spec.count ?? 1); i++) {
    proofs.push(await dpop.generateProof(keypair, spec.htu, spec.htm, spec.nonce, spec.accessToken))
  }
  const jkt = await dpop.calculateThumbprint(keypair.publicKey)
  return { jkt, proofs }
}

async function verifyOne(input) {
  // jose checks the signature with the embedded key, typ and alg; the DPoP
  // claim rules (RFC 9449 §4.3) are checked here, independently of dpop.py.
  const { payload, protectedHeader } = await jose.jwtVerify(input.jwt, jose.EmbeddedJWK, {
    typ: 'dpop+jwt',
    algorithms: ['ES256'],
  })
  const jwk = protectedHeader.jwk
  if (!jwk || 'd' in jwk) throw new Error('jwk missing or private')
  if (typeof payload.jti !== 'string' || payload.jti.length < 16) throw new Error('jti')
  if (payload.htm !== input.htm) throw new Error('htm')
  if (payload.htu !== input.htu) throw new Error('htu')
  if (typeof payload.iat !== 'number' || Math.abs(payload.iat - Date.now() / 1000) > 60) throw new Error('iat')
  if (input.ath !== undefined && payload.ath !== input.ath) throw new Error('ath')
  if (input.nonce !== undefined && payload.nonce !== input.nonce) throw new Error('nonce')
  const jkt = await jose.calculateJwkThumbprint(jwk, 'sha256')
  if (input.jkt !== undefined && jkt !== input.jkt) throw new Error('jkt')
  return { ok: true, jkt }
}

const [command, arg] = process.argv.slice(2)
if (command === 'make') {
  process.stdout.write(JSON.stringify(await make(JSON.parse(arg))) + '\n')
} else if (command === 'verify') {
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    if (!line.trim()) continue
    let result
    try {
      result = await verifyOne(JSON.parse(line))
    } catch (err) {
      result = { ok: false, error: String(err && err.message || err) }
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  }
} else {
  process.stderr.write('usage: node proofs.mjs make SPEC | verify < LINES\n')
  process.exit(2)
}
