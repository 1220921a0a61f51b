#!/usr/bin/env python3
# MIT License
#
# Copyright (c) 2026 the dpop.py authors
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in
# all copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
"""dpop.py: OAuth 2.0 DPoP (RFC 9449) with ES256, in one file, standard library only.

What it does
  * ES256 (ECDSA over P-256 with SHA-256), written here: field and curve
    arithmetic, RFC 6979 nonces, SEC1/PKCS#8/SPKI/PEM/JWK key files, RFC 7638
    thumbprints, JWS compact serialization.
  * DPoP proofs: making them (client) and checking them (server, RFC 9449 §4.3).
  * An HTTP client for the client_credentials grant that adds DPoP to every
    request, and a command line (``python dpop.py --help``).

Security notes (read these before trusting it)
  * Python integers are not constant-time: multiplication, division and even
    comparison take time that depends on the values, and their memory cannot
    be wiped. What this file does promise for secret scalars (the private key
    d and the nonce k) is that the *sequence* of field operations does not
    depend on their bits: every scalar multiplication does the same additions
    and doublings for every scalar (bar listed cases, of chance below 2^-240,
    where an addition is a doubling: see section 3), and the two inversions of
    secret values are
    blinded with a fresh random factor before CPython's (variable-time)
    extended Euclid sees them. That removes the large, easily measured
    leaks; it does not make CPython a side-channel-free platform. If your
    threat model includes a co-located attacker timing individual
    signatures, use a key in hardware instead.
  * Nonces are RFC 6979 (deterministic, so a broken RNG cannot leak the key)
    hedged with 32 fresh random bytes (§3.6), so fault attacks on the
    deterministic scheme do not apply either.
  * Everything that parses outside data (base64url, JSON, DER, PEM, JWK, JWS,
    points) is strict, size-capped and raises ``DPoPError`` with a stable code.
  * Verification is variable-time (its inputs are public) and accepts high-S
    signatures, which are valid ES256.

One rule for errors
  * TypeError: an argument of the wrong Python type.
  * ValueError: a bad value that only the calling program chooses (timeouts,
    sizes, names of settings, claims that would replace standard ones).
  * DPoPError, with a stable ``code``: anything that came from outside, even
    when the program passes it on: keys, URLs, tokens, nonces, proofs, header
    values, server answers, files, the environment.

Specs: RFC 9449 (DPoP), RFC 7515/7517/7518 (JWS/JWK/JWA), RFC 7638
(thumbprints), RFC 6979 (nonces), FIPS 186-5 and SEC 1 v2 (ECDSA), SEC 2 v2
and SP 800-186 (P-256), RFC 5915/5958/5280 (key files), RFC 6749 (OAuth 2.0).
Requires Python 3.9 or newer.
"""

from __future__ import annotations

__version__ = "0.1.0"

# fmt: off
__all__ = [
    "DPoPError", "ERROR_CODES",  # errors
    "b64url_encode", "b64url_decode",  # encodings
    "ECKey", "generate_key", "load_key", "load_key_file", "jwk_thumbprint",  # keys
    "jws_sign", "jws_verify",  # JWS
    "make_proof", "canonical_htu", "access_token_hash",  # DPoP proofs (client side)
    "RSAKey", "load_rsa_key",  # RSA (RS256, PS256)
    "client_assertion", "ASSERTION_TYPE",  # client authentication (RFC 7523)
    # DPoP proofs (server side)
    "verify_proof", "VerifiedProof", "ReplayCache", "NonceIssuer", "challenge_headers",
    "Client", "Response", "Headers", "FileTokenCache",  # HTTP client
    "RedisReplayCache", "RedisTokenCache",  # shared stores
    "DemoServer",  # demo servers
]
# fmt: on

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Mapping

# typing costs ~3 ms to import and is only needed by type checkers: every
# annotation here is a string (PEP 563), and the aliases below exist only for
# them. (A fresh process that signs once should not pay for it.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

# =============================================================================
# 0. Errors
# =============================================================================
#
# Trusts: nothing. Guarantees: every failure that outside data can cause is a DPoPError whose code
# is one of ERROR_CODES, with a message that names the rule that failed and never the value; a
# caller's own mistakes are TypeError or ValueError. Read this first: every later section's errors
# are made here.
#
# One exception type. Its ``code`` is API: codes are never renamed, only added.
# Messages never contain secrets (keys, client secrets, tokens, proofs): they
# say what was wrong, not what the bad value was.

ERROR_CODES: Mapping[str, str] = {
    # -- encodings, keys, JWS
    "bad_base64url": "text is not strict unpadded base64url",
    "bad_json": "bytes are not a JSON object (or contain duplicate members)",
    "bad_key": "key data is malformed: DER/PEM/JWK structure, range or point",
    "encrypted_key": "the key file is encrypted; decrypt it first",
    "unsupported_key": "not an EC key, or a key not meant for signatures",
    "unsupported_curve": "an EC key on a curve other than P-256",
    "no_private_key": "the operation needs a private key; this one is public",
    "bad_jws": "a JWS is malformed (segments, header, size)",
    "unsupported_alg": "a JWS algorithm other than ES256 (none, HS256, RS256, ...)",
    "bad_signature": "the signature does not verify",
    # -- making proofs
    "bad_url": "not an absolute http(s) URL this module can use as htu",
    "bad_access_token": "an access token with characters outside token68",
    "bad_argument": "a method, nonce or header that cannot go into a proof or request",
    # -- checking proofs (RFC 9449 §4.3); each names the check that failed
    "proof_missing": "no DPoP proof was presented",
    "proof_multiple": "more than one DPoP proof was presented",
    "proof_too_large": "the proof is larger than the 8 KiB limit",
    "proof_malformed": "not a single well-formed JWT (segments, base64url, JSON, crit)",
    "proof_typ": "header typ is not dpop+jwt",
    "proof_alg": "header alg is not an accepted asymmetric algorithm",
    "proof_jwk": "header jwk is missing, malformed, not P-256, or carries private members",
    "proof_signature": "the signature does not verify with the header jwk",
    "proof_claims": "a required claim (jti, htm, htu, iat) is missing or of the wrong type",
    "proof_htm": "htm does not match the request method",
    "proof_htu": "htu does not match the request URL",
    "proof_nonce": "the nonce is missing or not the one the server requires",
    "proof_iat": "iat is too old or too far in the future",
    "proof_ath": "ath is missing or does not match the access token",
    "proof_binding": "the proof key is not the key the access token is bound to (cnf.jkt)",
    "proof_replay": "this proof (jti) was already used",
    "replay_cache_full": "the replay cache is full of unexpired entries; the proof was refused",
    "replay_store": "the shared replay store failed; the proof was refused",
    # -- HTTP client
    "insecure_url": "plain http to a host that is not loopback",
    "network": "the connection failed or broke",
    "timeout": "a socket operation timed out",
    "tls": "TLS failed (certificate, hostname, handshake)",
    "bad_response": "the server's HTTP response is malformed",
    "response_too_large": "a response body is larger than the allowed size",
    "too_many_redirects": "more redirects than the client follows",
    "discovery": "authorization server metadata could not be fetched or is invalid",
    "oauth_error": "the token endpoint answered with an OAuth error",
    "bad_token_response": "the token endpoint's success response is malformed",
    "token_type": "the token endpoint issued a token that is not DPoP-bound",
    "closed": "the client was used after close()",
    "proxy": "the proxy could not be used: its URL, reaching it, its 407, or a refused CONNECT",
    # -- command line
    "usage": "a command-line option, argument or DPOP_* variable is missing or invalid",
    "io_error": "a file could not be read or written",
    "http_status": "the API answered with an HTTP error status",
    "internal_error": "the CLI's last resort: an unexpected error (a bug; DPOP_DEBUG=1 shows it)",
}


class DPoPError(Exception):
    """Bad input, a refused check or a failed exchange; ``code`` says which.

    ``oauth_error`` is the OAuth error code that goes with it when there is
    one: the ``error`` an authorization server answered with, or the one a
    server should answer a refused proof with (``invalid_dpop_proof`` or
    ``use_dpop_nonce``). ``status`` is the HTTP status, when one was involved.
    """

    code: str
    message: str
    oauth_error: str | None
    status: int | None
    # the HTTP client's mark: a network failure before any byte of the request was written
    _unsent = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        oauth_error: str | None = None,
        status: int | None = None,
    ) -> None:
        """A DPoPError; ``code`` must be one of ERROR_CODES (a typo is a bug: it fails loudly)."""
        if code not in ERROR_CODES:
            raise RuntimeError("dpop: internal error: unknown error code %r" % code)
        super().__init__(code, message)
        # Pickling needs nothing of its own: Exception's pickles DPoPError(*args), args being
        # (code, message), then restores the instance dict (oauth_error, status and the rest), so
        # errors cross process boundaries, as in multiprocessing pools, with everything intact.
        self.code, self.message, self.oauth_error, self.status = code, message, oauth_error, status

    def __str__(self) -> str:
        """``code: message``, the form the command line prints after ``dpop:``."""
        return "%s: %s" % self.args  # (code, message), as __init__ gives them to Exception


def _type_error(name: str, expected: str, value: object) -> TypeError:
    """The TypeError for an argument of the wrong Python type. It names the type it got, never the
    value, which may be a secret."""
    return TypeError("%s must be %s, not %s" % (name, expected, type(value).__name__))


def _setting(name: str, value: Any, low: float, high: float, integer: bool = False) -> Any:
    """A number the calling program chose: TypeError for a non-number, ValueError outside [low,
    high]."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _type_error(name, "an int" if integer else "a number", value)
    if not low <= value <= high:  # NaN fails this too
        raise ValueError("%s must be from %s to %s, not %r" % (name, low, high, value))
    return value


if TYPE_CHECKING:
    BytesLike = Union[bytes, bytearray, memoryview]
    # what load_key and load_rsa_key take: PEM or JWK text, PEM or DER bytes, a JWK, a file's path
    KeyData = Union[str, BytesLike, Mapping[str, Any], os.PathLike[str]]


def _as_bytes(name: str, value: object) -> bytes:
    """``value`` as immutable bytes, for arguments that may be bytes, bytearray or memoryview; a
    copy, so a caller that changes its buffer later changes nothing here."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise _type_error(name, "bytes", value)


def _check_str(name: str, value: object) -> str:
    """``value`` when it is a str; otherwise the TypeError for the argument ``name`` (for the many
    arguments that must be text, as _as_bytes is for bytes)."""
    if isinstance(value, str):
        return value
    raise _type_error(name, "str", value)


# =============================================================================
# 1. Bytes and encodings
# =============================================================================
#
# Trusts: nothing. Guarantees: base64url is strict (RFC 4648 §5 alphabet, no padding, no
# whitespace, canonical final bits), so one value has one encoding; JSON objects are strict (unique
# member names, no NaN or Infinity, no lone surrogates, a size cap); random scalars are uniform
# (rejection sampling from os.urandom).

_B64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: BytesLike) -> str:
    """Unpadded base64url (RFC 7515 §2) of ``data``."""
    return base64.urlsafe_b64encode(_as_bytes("data", data)).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode strict unpadded base64url; anything else raises ``DPoPError``.

    Refused: padding, whitespace, ``+`` and ``/``, a length of 1 mod 4, and
    non-zero unused trailing bits (``QR`` and ``QQ`` would otherwise both
    decode to ``A``), so every byte string has exactly one accepted text.
    """
    _check_str("text", text)
    if len(text) % 4 == 1 or _B64URL_ALPHABET.fullmatch(text) is None:
        raise DPoPError("bad_base64url", "not unpadded base64url")
    # Only the 64 characters of the alphabet reach the decoder.
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise DPoPError("bad_base64url", "non-zero unused bits in the last character")
    return raw


def _random_below(limit: int) -> int:
    """Uniform in [1, limit) from os.urandom, by rejection (secrets.randbelow
    would import the random module, ~2 ms, for the same thing)."""
    # as many random bits as limit has (P-256's p and n: 32 bytes; an RSA modulus: all of its), so
    # a draw is accepted at least half the time
    bits = limit.bit_length()
    while True:
        value = int.from_bytes(os.urandom((bits + 7) // 8), "big") >> (-bits % 8)
        if 1 <= value < limit:
            return value


def _int_to_bytes32(value: int) -> bytes:
    """A scalar or coordinate as the 32 big-endian bytes P-256 uses everywhere (SEC 1 §2.3.7)."""
    return value.to_bytes(32, "big")


def _json_compact(obj: object) -> bytes:
    """Compact JSON, ASCII only, no NaN: the bytes we sign."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


def _short_repr(value: object) -> str:
    """A short, safe picture of an untrusted value for an error message: JSON scalars as JSON, cut
    to 24 characters, anything else by its type name only."""
    # (bool is an int: true and false are JSON scalars too)
    text = (
        json.dumps(value)
        if isinstance(value, (str, int, float, type(None)))
        else type(value).__name__
    )
    return text if len(text) <= 24 else text[:21] + "..."


def _reject_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """json's object_pairs_hook: an object with a member name twice is refused, never resolved."""
    out = dict(pairs)
    if len(out) != len(pairs):  # a name came twice: dict kept one of them
        # Two parsers that keep different duplicates disagree on meaning.
        raise ValueError("duplicate member")
    return out


def _reject_constant(name: str) -> Any:
    """json's parse_constant: NaN, Infinity and -Infinity are not JSON (RFC 8259): refused."""
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(raw: bytes, what: str) -> Dict[str, Any]:
    """Parse ``raw`` as UTF-8 JSON that must be an object with unique names."""
    # strict UTF-8 (RFC 8259 §8.1), then json with two hooks: a repeated member name and the
    # non-JSON constants NaN and Infinity are refused instead of resolved
    try:
        obj = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
        # Only a \u escape can make a lone surrogate (strict UTF-8 cannot), and
        # one would crash every later .encode(): refuse it here, once for all
        # (UnicodeEncodeError).
        if b"\\u" in raw:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # Unicode{De,En}codeError are ValueErrors
        raise DPoPError(
            "bad_json", "%s is not valid JSON, or holds a lone surrogate" % what
        ) from None
    if not isinstance(obj, dict):
        raise DPoPError("bad_json", "%s is not a JSON object" % what)
    return obj


def _equal(a: str, b: str) -> bool:
    """Constant-time str comparison that never raises (surrogates included)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


# =============================================================================
# 2. P-256 parameters
# =============================================================================
#
# Trusts: the published constants (SEC 2 v2, FIPS 186-5). Guarantees: nothing by itself; the
# test suite checks that G is on the curve and that n*G is infinity.
#
# Curve y^2 = x^3 - 3x + b over GF(p), prime order n, cofactor 1.
# Source: SEC 2 v2 §2.4.2 (secp256r1); identical in FIPS 186-5 / SP 800-186
# §3.2.1.3 (P-256). The test suite checks G is on the curve and n*G = O.

p = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
# = 2^256 - 2^224 + 2^192 + 2^96 - 1
n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
Gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
Gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

# =============================================================================
# 3. Point arithmetic, complete by cases (EFD madd-2004-hmv and dbl-2001-b, a = -3)
# =============================================================================
#
# Representation. A point is affine (x, y), never infinity (public keys and table entries), or
# Jacobian (X, Y, Z) for (X/Z^2, Y/Z^3), infinity being any point with Z = 0. Every coordinate is in
# [0, p). Only _point_from_octets and _ec_public_from_jwk make points from outside data, and both
# refuse coordinates out of range and points off the curve; everything below trusts its inputs.
#
# Complete: _add gives P1 + P2 for every Jacobian P1 and affine P2, and _double gives 2 P1 for every
# P1, so no caller has a case to rule out and nothing has to be proved for a result to be right.
# _double's formula divides by nothing but 2y, and a point with y = 0 would have order 2, which
# P-256 (prime order n) has none of; _add's formula fails only for infinity and for P1 = +-P2, and
# it checks for both (a branch each, on H = 0 and Z1 = 0).
#
# Those branches are the only places the sequence of operations can depend on a secret scalar. In
# _walk (k*G once G has a table) the first row always meets infinity; at row i > 0 the accumulator
# is s*P with |s| < 2^(w*i) and the entry is T = d 2^(w*i) P with |d| >= 1, so s != +-T, and while
# |s| + |T| < 2^(w*(i+1)) < n not even mod n (every row but the last, for each width used). In the
# last row s = T mod n for at most 2^(w-1) values of k (the test suite lists them): a chance below
# 2^-240 for a nonce. In _mul (k*G before the table exists) the accumulator before each addition is
# c' 2^w P with c' odd and 0 < c' < n, which is never +-d P for the digit d but at the very last,
# where it is d P for one k, 30 (listed too). See also the notes at the top on what CPython itself
# does not promise.
#
# Rejected: the complete formulas of Renes, Costello and Batina (EUROCRYPT 2016, Algorithms 5
# and 6), which need no branch. Measured here (CPython 3.11, x86-64), an addition costs 3.9 us
# against 3.3, a doubling 4.2 against 2.5: a proof took 153 us against 131, N proofs in a fresh
# process took 0.99 of requests-oauth2client's time at N = 5000 (the floor is 0.80), and a new
# key's verification 0.88 of python-ecdsa's (floor 0.90). Also rejected: XYZZ coordinates for k*G
# (3.1 us an addition, but a second formula family and the conversions between them).
#
# In CPython the cost is the number of big-integer products and reductions (a 512-bit % p takes
# ~260 ns, a 256-bit product ~150 ns, anything else ~40 ns). Scalar multiplication:
#   _mul: the sum of k*P over one or two points, a width-5 window with doublings (260 of them);
#   _walk: k*P from P's table, one _add per row and no doublings.
# Both read the scalar as odd signed digits (_digits). Tables and windows hold public points only
# and are built with affine additions that share one inversion (_affine_sums).

if TYPE_CHECKING:
    Affine = Tuple[int, int]
    Jacobian = Tuple[int, int, int]
    Row = Tuple[List[int], List[int]]  # x and y of j*B for the odd j < 2^w, at index (j - 1) / 2
    Table = Tuple[int, Tuple[Row, ...]]  # (w, rows); row i is for B = 2^(w*i) P; never changed
_INFINITY: Jacobian = (1, 1, 0)
_WINDOW = 5  # _mul's width: 52 additions and 260 doublings; 4 and 6 were no faster


def _on_curve(x: int, y: int) -> bool:
    """Whether affine (x, y), both in [0, p), satisfies y^2 = x^3 - 3x + b: the check every point
    from outside data passes before any arithmetic sees it."""
    return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x - 3 * x + b)) % p == 0


def _double(X1: int, Y1: int, Z1: int, times: int = 1) -> Jacobian:
    """2^times * P1: dbl-2001-b, complete (infinity stays infinity: Z3 = 2 Y1 Z1 = 0).

    The paper's Z3 = (Y1+Z1)^2 - gamma - delta trades a product for a square, which is no cheaper
    in CPython: the direct form is 7% faster. A run is one call (a call each costs 8% more)."""
    for _ in range(times):
        delta = Z1 * Z1 % p  # delta := Z1^2
        gamma = Y1 * Y1 % p  # gamma := Y1^2
        beta = X1 * gamma % p  # beta := X1 gamma
        alpha = 3 * (X1 - delta) * (X1 + delta) % p  # alpha := 3 (X1 - delta)(X1 + delta)
        Z1 = 2 * Y1 * Z1 % p  # Z3 := 2 Y1 Z1
        X1 = (alpha * alpha - 8 * beta) % p  # X3 := alpha^2 - 8 beta
        Y1 = (
            alpha * (4 * beta - X1) - 8 * gamma * gamma
        ) % p  # Y3 := alpha (4 beta - X3) - 8 gamma^2
    return X1, Y1, Z1


def _add(X1: int, Y1: int, Z1: int, x2: int, y2: int) -> Jacobian:
    """P1 + P2 for Jacobian P1 and affine P2: madd-2004-hmv (8M + 3S), with its two exceptions."""
    if Z1 == 0:
        return x2, y2, 1  # infinity + P2
    Z1Z1 = Z1 * Z1 % p  # Z1Z1 := Z1^2
    H = (x2 * Z1Z1 - X1) % p  # H := U2 - X1, U2 = x2 Z1^2
    r = (y2 * Z1 * Z1Z1 - Y1) % p  # r := S2 - Y1, S2 = y2 Z1^3
    if H == 0:  # the same x: P1 = P2 (r = 0), or P1 = -P2
        return _double(x2, y2, 1) if r == 0 else _INFINITY
    HH = H * H % p  # HH := H^2
    HHH = H * HH % p  # HHH := H^3
    V = X1 * HH % p  # V := X1 H^2
    X3 = (r * r - HHH - 2 * V) % p  # X3 := r^2 - H^3 - 2V
    Y3 = (r * (V - X3) - Y1 * HHH) % p  # Y3 := r (V - X3) - Y1 H^3
    Z3 = Z1 * H % p  # Z3 := Z1 H
    return X3, Y3, Z3


def _inverses_vartime(values: Sequence[int]) -> List[int]:
    """1/v mod p for public non-zero v, with one inversion (Montgomery's trick)."""
    prefix = []
    acc = 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % p
    inverse = pow(acc, -1, p)  # ValueError if any v is 0: a public point at infinity, loudly
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % p  # 1/v_i
        inverse = inverse * values[i] % p
    return out


def _affine_sums(pairs: Sequence[Tuple[int, int, int, int]]) -> List[Affine]:
    """(x1, y1) + (x2, y2) for each (x1, y1, x2, y2) of public affine points with x1 != x2:
    lambda := (y2 - y1) / (x2 - x1), x3 := lambda^2 - x1 - x2, y3 := lambda (x1 - x3) - y1.
    An equal x (P2 = +-P1) is a zero to invert, so a ValueError, never a wrong point."""
    out = []
    inverses = _inverses_vartime([x2 - x1 for x1, _, x2, _ in pairs])
    for (x1, y1, x2, y2), inverse in zip(pairs, inverses):
        lam = (y2 - y1) * inverse % p
        x3 = (lam * lam - x1 - x2) % p
        out.append((x3, (lam * (x1 - x3) - y1) % p))
    return out


def _row(x: int, y: int, w: int) -> Tuple[Row, Affine]:
    """The odd multiples j*B, j < 2^w, of public affine B = (x, y), and 2^w B (the next row's B).

    In layers: the entries for j < 2^t plus 2^t B give those for 2^t < j < 2^(t+1). No pair has
    equal x: j B = +-2^t B would need j = +-2^t mod n, and j, 2^t < n."""
    chain = [(x, y, 1)]
    for _ in range(w):
        chain.append(_double(*chain[-1]))
    powers = []  # 2^t B for t = 0..w
    for (X, Y, _), zi in zip(chain, _inverses_vartime([Z for _, _, Z in chain])):
        powers.append((X * zi * zi % p, Y * zi * zi * zi % p))
    xs, ys = [x], [y]
    for t in range(1, w):
        tx, ty = powers[t]
        sums = _affine_sums([(xs[q], ys[q], tx, ty) for q in range(len(xs))])
        xs += [sx for sx, _ in sums]
        ys += [sy for _, sy in sums]
    return (xs, ys), powers[w]


def _rows_for(w: int) -> int:
    """Rows of a width-w table: a scalar below 2n < 2^257 has that many digits."""
    return -(-257 // w)


def _table(x: int, y: int, w: int) -> Table:
    """The width-w table for public affine P = (x, y)."""
    rows = []
    base = (x, y)
    for _ in range(_rows_for(w)):
        row, base = _row(*base, w)
        rows.append(row)
    return w, tuple(rows)


def _digits(k: int, w: int) -> List[int]:
    """k in [0, n) as odd digits d_i, lowest first, with k or k + n = sum d_i 2^(w*i).

    Joye and Tunstall's regular recoding: c is the odd one of k and k + n (the same point, as
    n*P is infinity). Each step takes d = (c mod 2^(w+1)) - 2^w, odd in (-2^w, 2^w), and leaves
    c' = (c - d) / 2^w, odd again; the last digit is what remains, odd in [1, 2^w). No digit is
    zero, so every row adds, whatever k is."""
    c = (k + n, k)[k & 1]
    mask = (1 << (w + 1)) - 1
    digits = []
    for _ in range(_rows_for(w) - 1):
        d = (c & mask) - (1 << w)
        digits.append(d)
        c = (c - d) >> w
    digits.append(c)
    return digits


def _mul(terms: Sequence[Tuple[int, Affine]]) -> Jacobian:
    """The sum of k*P over (k, P) for 0 <= k < n: one run of doublings serves every term.

    The entry for digit d is index (|d| - 1) / 2 with y negated when d < 0, chosen by index
    arithmetic, not a branch: neg = 1 exactly when d < 0 (d >> w is -1 or 0), and d ^ -neg is
    |d| - 1 for a negative d, d itself otherwise."""
    windows = [(_row(*point, _WINDOW)[0], _digits(k, _WINDOW)) for k, point in terms]
    X, Y, Z = _INFINITY
    for i in range(_rows_for(_WINDOW) - 1, -1, -1):
        X, Y, Z = _double(X, Y, Z, _WINDOW)
        for (xs, ys), digits in windows:
            d = digits[i]
            neg = (d >> _WINDOW) & 1
            j = (d ^ -neg) >> 1
            y = ys[j]
            X, Y, Z = _add(X, Y, Z, xs[j], (y, p - y)[neg])
    return X, Y, Z


def _walk(k: int, table: Table, acc: Jacobian = _INFINITY) -> Jacobian:
    """acc + k*P for 0 <= k < n from P's table: one _add per row, entries chosen as in _mul."""
    w, rows = table
    X, Y, Z = acc
    for (xs, ys), d in zip(rows, _digits(k, w)):
        neg = (d >> w) & 1
        j = (d ^ -neg) >> 1
        y = ys[j]
        X, Y, Z = _add(X, Y, Z, xs[j], (y, p - y)[neg])
    return X, Y, Z


def _inverse_blinded(value: int, modulus: int, blind: int) -> int:
    """1/value mod a prime, without handing ``value`` to a variable-time routine.

    CPython's pow(x, -1, m) runs an extended Euclid whose running time depends on x. We invert
    value*blind instead, uniformly random when blind is uniform in [1, m-1] and independent of
    value, and multiply the blind back. Rejected: Fermat inversion (pow(x, m-2, m)), fixed but 86 us
    against 13 us, twice a signature.
    """
    return blind * pow(value * blind % modulus, -1, modulus) % modulus


# -- The table for G ---------------------------------------------------------------------------
#
# k*G is on the signing path. A process makes its first _G_AFTER multiplications by G (signatures,
# key loads, first verifications) with _mul (1.1 ms, no table), so a command-line run never builds
# one; from then on it grows one table for G, _G_ROWS_PER_CALL rows a call (~16 ms), so no call
# pays for a whole table; once whole, k*G is one _walk.
#
# Why width 11: measured on CPython 3.11, x86-64 (build / k*G / size),
#   w = 10: 38 ms / 99 us / 2 MB       w = 11: 64 ms / 92 us / 3.4 MB
#   w = 12: 117 ms / 85 us / 6.5 MB    w = 13: 215 ms / 77 us / 11 MB
# Against requests-oauth2client's N proofs in a fresh process (bench --only scale), a model of
# these costs says a wider table's build costs more than it saves for any N up to 20,000, and a
# narrower one's k*G leaves less margin under the 0.8 floor; with w = 11 the worst N is the
# largest. Rejected: building at import (every importer pays), at the first signature (the cold
# start floor), a background thread (exit would wait for it or kill it), stages of growing widths
# (the old design; the same model puts its ratio near 1.0 around its last stage's 0.4 s build,
# between the bench's sample points, and its state caused two bugs), storing both signs of y (no
# faster).
_G_WIDTH = 11
_G_ROWS_PER_CALL = 6
_G_AFTER = 8


class _GeneratorTable:
    """The table for k*G in this process: one object (_G_TABLE), one lock.

    Contract: ``current`` is None until the whole table is built, then that table, never changed
    again, so a reader takes it without the lock. Until then each call counts one use and, past
    _G_AFTER, builds the next rows from a snapshot of the rows so far and their next base (one
    attribute, replaced whole), then stores them if they are still the longest. The lock is held
    only to take that snapshot and to store, never during a build, and only by ``with``, so nothing
    can leave it held; it is reentrant, so a signal handler that signs while its own thread holds it
    does not wait for itself. Threads that build at once may build the same rows (the longest are
    kept); an exception at any point leaves the rows matching their base."""

    def __init__(self) -> None:
        """No table yet: nothing is built until the first call to table()."""
        self._lock = threading.RLock()
        self._uses = 0
        self._partial: Tuple[Tuple[Row, ...], Affine] = ((), (Gx, Gy))  # rows, next row's base
        self.current: Table | None = None

    def table(self) -> Table | None:
        """The table for G, or None while it is not whole; may build some rows of it."""
        if self.current is not None:
            return self.current
        with self._lock:
            self._uses += 1
            uses = self._uses
            rows, base = self._partial
        if uses <= _G_AFTER:
            return None
        for _ in range(min(_G_ROWS_PER_CALL, _rows_for(_G_WIDTH) - len(rows))):
            row, base = _row(*base, _G_WIDTH)
            rows += (row,)
        with self._lock:
            if len(rows) > len(self._partial[0]):
                self._partial = rows, base
            if len(rows) == _rows_for(_G_WIDTH):
                self.current = _G_WIDTH, rows
        return self.current


_G_TABLE = _GeneratorTable()


def _mul_base(k: int) -> Jacobian:
    """k * G for a secret k in [1, n)."""
    table = _G_TABLE.table()
    if table is None:
        return _mul([(k, (Gx, Gy))])
    return _walk(k, table)


# =============================================================================
# 4. ECDSA (FIPS 186-5 §6.4, SEC 1 v2 §4.1) with RFC 6979 nonces
# =============================================================================
#
# Trusts: section 3's arithmetic and a valid private scalar. Guarantees: signatures that verify
# (RFC 6979 known answers, Wycheproof and round-trip tests); a nonce that never repeats across
# messages and leaks nothing through its inversion; a verifier that answers True or False for any
# bytes and never raises.
#
# ES256 signatures are the 64-byte r || s of RFC 7518 §3.4, never DER. Why no low-S rule: JWS never
# had one, and WebCrypto/OpenSSL signers emit high-S half of the time; Wycheproof marks high-S as
# valid. Why no verify-after-sign self-check: it would cost seven signatures' worth of time; the
# RFC 6979 known answers and round-trip tests cover the code.


# RFC 2104 ipad and opad: block XOR pad is block.translate(pad)
_IPAD = bytes(i ^ 0x36 for i in range(256))
_OPAD = bytes(i ^ 0x5C for i in range(256))


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104) for a 32-byte key: hmac.digest's result in 60% of its time (through
    OpenSSL 3 it looks the digest up by name on every call, and a signature makes five).
    Cross-checked by a test."""
    block = key + b"\x00" * 32  # the key zero-padded to SHA-256's 64-byte block
    return hashlib.sha256(
        block.translate(_OPAD) + hashlib.sha256(block.translate(_IPAD) + data).digest()
    ).digest()


def _rfc6979_nonces(d: int, digest: bytes, extra: bytes) -> Iterator[int]:
    """RFC 6979 §3.2 steps b-h with HMAC-SHA-256, yielding candidate k.

    ``extra`` is §3.6 additional data (32 random bytes; empty to reproduce the
    RFC's deterministic vectors).

    THESE ARE THE MOST DANGEROUS LINES IN THE FILE: a k that repeats across
    two messages, or is biased by even a few bits, gives away the private key.
    """
    x = _int_to_bytes32(d)  # int2octets(x)
    h = _int_to_bytes32(int.from_bytes(digest, "big") % n)  # bits2octets(h1)
    V = b"\x01" * 32  # Step b
    K = b"\x00" * 32  # Step c
    K = _hmac_sha256(K, V + b"\x00" + x + h + extra)  # Step d
    V = _hmac_sha256(K, V)  # Step e
    K = _hmac_sha256(K, V + b"\x01" + x + h + extra)  # Step f
    V = _hmac_sha256(K, V)  # Step g
    while True:  # Step h: qlen = hlen = 256, so one block per candidate
        V = _hmac_sha256(K, V)
        k = int.from_bytes(V, "big")  # bits2int
        if 1 <= k < n:
            yield k
        K = _hmac_sha256(K, V + b"\x00")
        V = _hmac_sha256(K, V)


def _sign_digest(d: int, digest: bytes, extra: bytes, blind: bytes) -> Tuple[int, int]:
    """(r, s) for a SHA-256 ``digest`` under private scalar d.

    ``blind`` is 64 random bytes for the two blinded inversions; it does not
    change the result.
    """
    # SEC 1 §4.1.3: R = k G, r = x(R) mod n, s = k^-1 (e + r d) mod n, a new k if either is 0
    e = int.from_bytes(digest, "big")  # bits2int; qlen = 256 so no shift
    blind_z = int.from_bytes(blind[:32], "big") % (p - 1) + 1
    blind_k = int.from_bytes(blind[32:], "big") % (n - 1) + 1
    for k in _rfc6979_nonces(d, digest, extra):
        X, _, Z = _mul_base(k)  # never infinity: 1 <= k < n
        zi = _inverse_blinded(Z, p, blind_z)
        r = X * zi * zi % p % n  # x = X / Z^2
        if r == 0:
            continue  # RFC 6979 §3.4: try the next k
        s = _inverse_blinded(k, n, blind_k) * (e + r * d) % n
        if s == 0:
            continue
        return r, s
    raise RuntimeError("dpop: internal error: nonce stream ended")  # pragma: no cover


def _verify_digest(q: Affine, digest: bytes, signature: bytes, qtable: Table | None) -> bool:
    """SEC 1 v2 §4.1.4 verification of r || s, with Q's table if it has one. Variable-time (all
    of it is public); never raises."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < n and 0 < s < n):
        return False
    # SEC 1 §4.1.4: w = s^-1, u1 = e w, u2 = r w, R = u1 G + u2 Q, valid when x(R) = r mod n
    e = int.from_bytes(digest, "big")
    w = pow(s, -1, n)  # s is public
    u1 = e * w % n
    u2 = r * w % n
    gtable = _G_TABLE.table()
    untabled = []  # the terms with no table: one _mul serves them all
    if gtable is None:
        untabled.append((u1, (Gx, Gy)))
    if qtable is None:
        untabled.append((u2, q))
    acc = _mul(untabled) if untabled else _INFINITY
    if gtable is not None:
        acc = _walk(u1, gtable, acc)
    if qtable is not None:
        acc = _walk(u2, qtable, acc)
    X, _, Z = acc
    if Z == 0:
        return False
    # x(R) mod n == r without inverting Z: x = X/Z^2 and x < p, so x mod n == r
    # means x == r or x == r + n (possible only when r + n < p).
    ZZ = Z * Z % p
    if (X - r * ZZ) % p == 0:
        return True
    return r + n < p and (X - (r + n) * ZZ) % p == 0


# Per-key tables make repeated verification (ECKey.verify, and so proofs and JWS) cheaper. Measured
# on CPython 3.11, x86-64, u2*Q costs 1.1 ms without a table (_mul) and 0.2 ms with its width-5
# table (52 rows of 16 points, 0.13 MB, built in ~8 ms). A key earns one at its
# _KEY_TABLE_AFTER'th verified signature while fewer than _KEY_TABLE_LIMIT keys hold one, and keeps
# it until _KEY_LIMIT other keys have verified since it last did. So clients calling in turn never
# rebuild: up to _KEY_TABLE_LIMIT of them verify fast, the rest as fast as a first sight. Bad
# signatures never count. A client that sends its own keys can hold every table (DPoP lets anyone
# have keys); the others then verify as at first sight, the floor this cache only improves on.
# Bounded: _KEY_LIMIT keys (~1 MB) and _KEY_TABLE_LIMIT tables (~8.5 MB).
_KEY_TABLE_WIDTH = 5
_KEY_TABLE_AFTER = 4
_KEY_TABLE_LIMIT = 64
_KEY_LIMIT = 4096


class _KeyTables:
    """Verified public keys and their tables: one object (_KEY_TABLES), one lock.

    Contract: ``_counts`` maps the last _KEY_LIMIT keys that verified to how many signatures each
    did, least recent first; ``_tables`` holds at most _KEY_TABLE_LIMIT tables, each for a key in
    ``_counts`` (a key that drops out of ``_counts`` takes its table with it). A table is built
    outside the lock and stored only if a slot is still free; the lock is held only for dictionary
    reads and writes, by ``with``, and is reentrant (a signal handler may verify)."""

    def __init__(self) -> None:
        """Empty: nothing is remembered until a key verifies a signature."""
        self._lock = threading.RLock()
        self._counts: Dict[Affine, int] = {}
        self._tables: Dict[Affine, Table] = {}

    def table(self, point: Affine) -> Table | None:
        """Q's table, if it has one."""
        with self._lock:
            return self._tables.get(point)

    def verified(self, point: Affine) -> None:
        """Count a good signature by Q: Q moves last, and earns a table when due and one is free."""
        with self._lock:
            count = self._counts.pop(point, 0) + 1
            self._counts[point] = count
            if len(self._counts) > _KEY_LIMIT:
                oldest = next(iter(self._counts))
                del self._counts[oldest]
                self._tables.pop(oldest, None)
            due = count >= _KEY_TABLE_AFTER and point not in self._tables
            due = due and len(self._tables) < _KEY_TABLE_LIMIT
        if not due:
            return
        table = _table(*point, _KEY_TABLE_WIDTH)
        with self._lock:
            if point in self._counts and len(self._tables) < _KEY_TABLE_LIMIT:
                self._tables[point] = table


_KEY_TABLES = _KeyTables()


# =============================================================================
# 5. DER and PEM (the subset key files use)
# =============================================================================
#
# Trusts: nothing; it reads outside data (and makes the key with section 6's ECKey._new, or, for a
# private key, _key_from_parts, which checks d's range). Guarantees: a key file is one of three
# structures, in strict DER, within 64 KiB; the curve is named P-256 before any field is read as a
# P-256 value; a PEM text holds exactly one key block; encrypted and foreign keys are refused by
# name.
#
# Exactly three structures: SEC1 ECPrivateKey (RFC 5915), PKCS#8
# PrivateKeyInfo/OneAsymmetricKey (RFC 5958) wrapping it, and
# SubjectPublicKeyInfo (RFC 5280 §4.1). Strict DER: definite minimal lengths,
# no trailing bytes, nothing longer than a key needs.

_MAX_KEY_INPUT = 64 * 1024

_OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_OID_P256 = bytes.fromhex("2a8648ce3d030107")  # 1.2.840.10045.3.1.7
# the OIDs a refused key file is likely to carry, by their DER value's hex (X.690 §8.19), each
# with its dotted form beside it; error messages name these, and any other OID only by its kind
_KNOWN_OIDS = {
    "2a864886f70d010101": "an RSA key",  # 1.2.840.113549.1.1.1
    "2a8648ce380401": "a DSA key",  # 1.2.840.10040.4.1
    "2b6570": "an Ed25519 key",  # 1.3.101.112
    "2b6571": "an Ed448 key",  # 1.3.101.113
    "2b656e": "an X25519 key",  # 1.3.101.110
    "2b81040022": "curve P-384",  # 1.3.132.0.34
    "2b81040023": "curve P-521",  # 1.3.132.0.35
    "2b8104000a": "curve secp256k1",  # 1.3.132.0.10
    "2a8648ce3d030101": "curve P-192",  # 1.2.840.10045.3.1.1
    "2b81040021": "curve P-224",  # 1.3.132.0.33
    "2b2403030208010107": "curve brainpoolP256r1",  # 1.3.36.3.3.2.8.1.1.7
    "2a864886f70d01050d": "PBES2 encryption",  # 1.2.840.113549.1.5.13
}

_SEQUENCE, _INTEGER, _BIT_STRING, _OCTET_STRING, _OID = 0x30, 0x02, 0x03, 0x04, 0x06


def _bad_der(why: str) -> DPoPError:
    """The bad_key error for a malformed DER structure; ``why`` names the rule, never the bytes."""
    return DPoPError("bad_key", "DER: " + why)


def _der_read(data: bytes, pos: int) -> Tuple[int, bytes, int]:
    """One TLV at ``pos``: (tag, value, position after it)."""
    if pos + 2 > len(data):
        raise _bad_der("truncated")
    # X.690 §8.1.2: one identifier octet (the low five bits all set would mean a longer tag)
    tag, length = data[pos : pos + 2]
    if tag & 0x1F == 0x1F:
        raise _bad_der("multi-byte tags are not used by key files")
    # §8.1.3: a length below 128 is one octet; else 0x80 | count, then count octets
    start = pos + 2
    if length & 0x80:
        start += length & 0x7F
        length = int.from_bytes(data[pos + 2 : start], "big")
    end = start + length
    value = data[start:end]
    # DER §10.1: the length is definite and minimal, so the element is exactly what _der_tlv
    # writes for its value (BER's indefinite 0x80 and zero-padded lengths are not, nor is a
    # truncated element: its value, cut short by the slice, is shorter than its length says)
    if _der_tlv(tag, value) != data[pos:end]:
        raise _bad_der("truncated, or a length that is not minimal")
    return tag, value, end


def _der_read_exact(data: bytes) -> Tuple[int, bytes]:
    """The one TLV that is all of ``data``: (tag, value); trailing bytes are refused."""
    tag, value, end = _der_read(data, 0)
    if end != len(data):
        raise _bad_der("trailing bytes")
    return tag, value


def _der_sequence(data: bytes, what: str) -> List[Tuple[int, bytes]]:
    """The elements of the SEQUENCE that is exactly ``data``."""
    tag, body = _der_read_exact(data)
    if tag != _SEQUENCE:
        raise _bad_der("%s is not a SEQUENCE" % what)
    # the elements one after another; each _der_read is bounded by the sequence's own length,
    # so nothing nested is read here (callers parse what they expect, one level at a time)
    items, pos = [], 0
    while pos < len(body):
        tag, value, pos = _der_read(body, pos)
        items.append((tag, value))
    return items


def _der_uint(tag_value: Tuple[int, bytes]) -> int:
    """A DER INTEGER that must be non-negative and minimally encoded: a version number, or an RSA
    key member."""
    tag, value = tag_value
    number = int.from_bytes(value, "big")
    # X.690 §8.3: two's complement in the fewest bytes, so a non-negative number is its bits and a
    # clear sign bit; an empty, negative or zero-padded INTEGER is not that encoding of any number
    if tag != _INTEGER or value != number.to_bytes(number.bit_length() // 8 + 1, "big"):
        raise _bad_der("bad INTEGER")
    return number


def _oid_name(value: bytes, kind: str) -> str:
    """What an OBJECT IDENTIFIER (its DER value) names, for error messages only: its _KNOWN_OIDS
    name, else "an unknown" ``kind``. The OID itself is never decoded or printed, so a malformed
    or huge one (a 21,000-bit arc) costs nothing and says nothing."""
    return _KNOWN_OIDS.get(value.hex(), "an unknown " + kind)


def _check_algorithm(der: bytes) -> None:
    """The AlgorithmIdentifier (its DER, as _key_info gives it) must be id-ecPublicKey with
    namedCurve P-256."""
    items = _der_sequence(der, "AlgorithmIdentifier")
    if not items or items[0][0] != _OID:
        raise _bad_der("bad AlgorithmIdentifier")
    if items[0][1] != _OID_EC_PUBLIC_KEY:
        name = _oid_name(items[0][1], "algorithm")
        raise DPoPError("unsupported_key", "%s is not an EC key; only P-256 is supported" % name)
    if len(items) != 2:
        raise _bad_der("EC AlgorithmIdentifier needs exactly one parameter")
    _check_curve(*items[1])


def _check_curve(tag: int, value: bytes) -> None:
    """ECParameters (the element ``tag``, ``value``) must be the namedCurve P-256; explicit
    parameters and other curves are refused by name."""
    if tag != _OID:
        raise DPoPError("unsupported_curve", "explicit curve parameters are not supported")
    if value != _OID_P256:
        raise DPoPError(
            "unsupported_curve", "%s is not supported; use P-256" % _oid_name(value, "curve")
        )


def _point_from_octets(data: bytes) -> Affine:
    """SEC 1 §2.3.4: 04||X||Y or 02/03||X; refuses infinity and off-curve points."""
    x = int.from_bytes(data[1:33], "big")  # both forms put X there
    if len(data) == 65 and data[0] == 4:
        y = int.from_bytes(data[33:], "big")
    elif len(data) == 33 and data[0] in (2, 3):
        # p = 3 mod 4, so a square root of c is c^((p+1)/4). If c has none, the y it gives is
        # off the curve, and _on_curve below refuses it: no separate check is needed (nor for an
        # x of p or more, which _on_curve refuses too).
        y = pow((x * x * x - 3 * x + b) % p, (p + 1) // 4, p)
        if y & 1 != data[0] & 1:
            y = p - y
    else:
        raise DPoPError(
            "bad_key", "point encoding is not 65-byte uncompressed or 33-byte compressed"
        )
    if not _on_curve(x, y):
        raise DPoPError("bad_key", "point is not on P-256")
    return x, y


def _bit_string_octets(value: bytes) -> bytes:
    """The octets of a BIT STRING with no unused bits (every key file's kind)."""
    if value[:1] != b"\x00":  # the count of unused bits, which key files never have
        raise _bad_der("BIT STRING with unused bits")
    return value[1:]


def _key_info(items: List[Tuple[int, bytes]]) -> Tuple[bool, bytes, bytes, List[Any]] | None:
    """SubjectPublicKeyInfo (RFC 5280 §4.1) or PKCS#8 PrivateKeyInfo (RFC 5958), the wrappers EC and
    RSA keys share: (private?, AlgorithmIdentifier DER, the key inside, PKCS#8's further fields);
    None for anything else."""
    tags = [tag for tag, _ in items]
    if tags[:1] == [_SEQUENCE]:  # SEQUENCE { algorithm, subjectPublicKey BIT STRING }
        if tags != [_SEQUENCE, _BIT_STRING]:
            raise _bad_der("bad SubjectPublicKeyInfo")
        # (the algorithm is written back as DER from its element: its tag is SEQUENCE, as checked)
        return False, _der_tlv(*items[0]), _bit_string_octets(items[1][1]), []
    # SEQUENCE { version, algorithm, privateKey OCTET STRING, [0] attributes, [1] publicKey }
    if tags[:2] != [_INTEGER, _SEQUENCE]:
        return None
    if tags[2:3] != [_OCTET_STRING] or _der_uint(items[0]) not in (0, 1):
        raise _bad_der("PrivateKeyInfo needs version 0 or 1, then a privateKey OCTET STRING")
    return True, _der_tlv(*items[1]), items[2][1], items[3:]


def _parse_sec1(der: bytes, curve_named: bool) -> Tuple[int, Affine | None]:
    """RFC 5915 ECPrivateKey: (d, embedded public point or None); _key_from_parts checks d's
    range. ``curve_named`` is True when a PKCS#8 wrapper has already named (and checked) the
    curve; else the key must name it in its own [0] parameters."""
    # ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, [0] parameters OPTIONAL,
    #                             [1] publicKey BIT STRING OPTIONAL } (RFC 5915 §3), in that order
    items = _der_sequence(der, "ECPrivateKey")
    if len(items) < 2 or _der_uint(items[0]) != 1:
        raise _bad_der("ECPrivateKey must start with version 1")
    public, last = None, 0
    for tag, value in items[2:]:
        if tag == 0xA0 and last < 1:  # [0] ECParameters
            _check_curve(*_der_read_exact(value))
            curve_named = True
            last = 1
        elif tag == 0xA1 and last < 2:  # [1] publicKey BIT STRING
            inner_tag, bits = _der_read_exact(value)
            if inner_tag != _BIT_STRING:
                raise _bad_der("ECPrivateKey publicKey is not a BIT STRING")
            public = _point_from_octets(_bit_string_octets(bits))
            last = 2
        else:
            raise _bad_der("unexpected field in ECPrivateKey")
    if not curve_named:
        raise DPoPError("bad_key", "SEC1 key names no curve")
    # after the curve: a P-384 key is unsupported_curve, as in every other encoding, not a bad P-256
    # key
    if items[1][0] != _OCTET_STRING or len(items[1][1]) != 32:
        raise _bad_der("ECPrivateKey privateKey must be 32 bytes")
    return int.from_bytes(items[1][1], "big"), public


def _pkcs8_publics(extra: List[Tuple[int, bytes]]) -> List[Affine]:
    """The points in PKCS#8 v2's [1] publicKey (RFC 5958); _key_from_parts checks that they, like
    the one in ECPrivateKey, are the private key's."""
    points = []
    for tag, value in extra:
        if tag == 0x81:  # [1] publicKey (v2), implicitly tagged: a BIT STRING's contents
            points.append(_point_from_octets(_bit_string_octets(value)))
        elif tag != 0xA0:  # [0] attributes are ignored
            raise _bad_der("unexpected field in PrivateKeyInfo")
    return points


def _parse_der(der: bytes) -> ECKey:
    """The key in any of the three structures, told apart by their first elements (a private key
    is made by section 6's _key_from_parts, which checks d and derives the point)."""
    items = _der_sequence(der, "key")
    wrapped = _key_info(items)
    if wrapped is not None:
        private, algorithm, inner, extra = wrapped
        _check_algorithm(algorithm)
        if not private:
            return ECKey._new(None, _point_from_octets(inner))
        return _key_from_parts(*_parse_sec1(inner, curve_named=True), *_pkcs8_publics(extra))
    tags = [tag for tag, _ in items[:2]]
    if tags == [_INTEGER, _OCTET_STRING]:
        return _key_from_parts(*_parse_sec1(der, curve_named=False))
    if tags == [_INTEGER, _INTEGER]:
        raise DPoPError(
            "unsupported_key", "this looks like an RSA or DSA key; only P-256 EC keys are supported"
        )
    raise _bad_der("not a SEC1, PKCS#8 or SubjectPublicKeyInfo key")


def _der_tlv(tag: int, value: bytes) -> bytes:
    """DER for one element: tag, minimal definite length, value."""
    # X.690 §8.1.3, DER §10.1: a length below 128 is one octet; else 0x80 | count, then the
    # length in the fewest octets (count of them)
    if len(value) < 0x80:
        return bytes([tag, len(value)]) + value
    length = len(value).to_bytes((len(value).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value


def _key_pem(point: Affine, d: int | None) -> str:
    """The PUBLIC KEY PEM of SubjectPublicKeyInfo DER for the P-256 point, uncompressed (RFC 5480
    §2); given d, the PRIVATE KEY PEM of PKCS#8 PrivateKeyInfo (version 0) holding an RFC 5915
    ECPrivateKey with that public key."""
    # both share the AlgorithmIdentifier and the public key's BIT STRING
    algorithm = _der_tlv(_SEQUENCE, _der_tlv(_OID, _OID_EC_PUBLIC_KEY) + _der_tlv(_OID, _OID_P256))
    public = _der_tlv(_BIT_STRING, b"\x00\x04" + b"".join(map(_int_to_bytes32, point)))
    if d is None:
        return _pem("PUBLIC KEY", _der_tlv(_SEQUENCE, algorithm + public))
    private = _der_tlv(_INTEGER, b"\x01") + _der_tlv(_OCTET_STRING, _int_to_bytes32(d))
    ec_private_key = _der_tlv(_SEQUENCE, private + _der_tlv(0xA1, public))
    info = _der_tlv(_INTEGER, b"\x00") + algorithm + _der_tlv(_OCTET_STRING, ec_private_key)
    return _pem("PRIVATE KEY", _der_tlv(_SEQUENCE, info))


# a BEGIN line and its label (RFC 7468 §3's labels are printable; key files use these characters)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----")


def _pem_blocks(text: str) -> Iterator[Tuple[str, str]]:
    """(label, body) of every BEGIN/END block. One pass over the lines: a
    regex with a lazy body backtracks quadratically on repeated BEGIN lines."""
    label: str | None = None
    body: List[str] = []
    for line in text.splitlines():
        line = line.strip()
        begin = _PEM_BEGIN.fullmatch(line)
        if label is None:  # outside a block: a BEGIN line starts one, any other text is ignored
            if begin:
                label, body = begin[1], []
        elif begin:
            raise DPoPError("bad_key", "PEM BEGIN line inside a block")
        elif line == "-----END %s-----" % label:
            # an END line with another label is no END: the block then has none (or a body line
            # that is not base64), and is refused as such
            yield label, "\n".join(body)
            label = None
        else:
            body.append(line)
    if label is not None:
        raise DPoPError("bad_key", "PEM block has no END line")


_EC_PEM_LABELS = ("EC PRIVATE KEY", "PRIVATE KEY", "PUBLIC KEY")


def _pem_to_der(text: str, labels: Sequence[str] = _EC_PEM_LABELS) -> bytes:
    """The DER of the one key block in a PEM text, whose label must be one of ``labels`` (EC
    PARAMETERS blocks skipped)."""
    # text around the blocks is ignored (RFC 7468 §2); an EC PARAMETERS block, which `openssl
    # ecparam -genkey` writes before the key, is skipped; an encrypted key is refused as such,
    # whatever its label; any other label is refused, naming the labels read (an OpenSSH key
    # converts with ssh-keygen -p -m PKCS8; a certificate is not a key)
    found = []
    for label, body in _pem_blocks(text):
        if label == "EC PARAMETERS":
            continue
        # PKCS#8 encryption (RFC 5958 §3) has its own label; legacy encryption is the RFC 1421
        # header "Proc-Type: 4,ENCRYPTED" (§4.6.1.1), whose "," no base64 body has (any other
        # header is refused below as a body that is not base64). openssl pkey decrypts both.
        if label == "ENCRYPTED PRIVATE KEY" or "4,ENCRYPTED" in body:
            raise DPoPError(
                "encrypted_key",
                "the key is encrypted; decrypt it first (openssl pkey -in FILE -out PLAIN)",
            )
        if label not in labels:
            why = "PEM block '%s' is not one this loader reads (%s)" % (label, ", ".join(labels))
            raise DPoPError("unsupported_key", why)
        found.append(body)
    # exactly one key: with two, which one signs would depend on the order in the file
    if len(found) != 1:
        raise DPoPError(
            "bad_key", "%d PEM key blocks found; there must be exactly one" % len(found)
        )
    try:
        return base64.b64decode("".join(found[0].split()), validate=True)
    except ValueError:  # binascii.Error is one, as is a non-ASCII character's error
        raise DPoPError("bad_key", "PEM body is not base64") from None


def _pem(label: str, der: bytes) -> str:
    """PEM text (RFC 7468): the label's BEGIN and END lines around base64 in 64-character lines."""
    import textwrap  # here, not at the top: only writing a key file needs it

    # RFC 7468 §2: lines of exactly 64 characters but the last (base64 has no spaces to break
    # at, so textwrap cuts every 64)
    lines = textwrap.wrap(base64.b64encode(der).decode("ascii"), 64)
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


# =============================================================================
# 6. Keys and JWK (RFC 7517, RFC 7518 §6.2, RFC 7638)
# =============================================================================
#
# Trusts: sections 3 and 5. Guarantees: an ECKey holds a point on the curve and, when private, the
# scalar in [1, n) that derives it; a JWK's coordinates are exactly 32 bytes; a public JWK never
# carries d; thumbprints follow RFC 7638's member selection and order.


class _Key:
    """What ECKey and RSAKey share: only this module makes them (their _new sets the slots through
    object.__setattr__), they never change after, they are never pickled or copied, and each keeps
    its private part in a _secret slot (None for a public key)."""

    __slots__ = ()
    _secret: object
    # the JWS algorithms the key signs and verifies, its default first (a class attribute)
    _algs: Tuple[str, ...]
    # ECKey only: its encoded ES256 proof header, kept by make_proof (None until its first proof)
    _header: str | None

    @property
    def has_private(self) -> bool:
        """True if this key can sign."""
        return self._secret is not None

    def __init__(self, *args: object, **kwargs: object) -> None:
        """Not for use: keys come from generate_key(), load_key(), load_key_file() or
        load_rsa_key()."""
        raise TypeError(
            "use dpop.generate_key(), dpop.load_key(), dpop.load_key_file() or dpop.load_rsa_key()"
        )

    def __setattr__(self, name: str, value: object) -> None:
        """Refused: a key never changes after it is made."""
        raise AttributeError("%s is immutable" % type(self).__name__)

    def __reduce__(self) -> Any:
        """Refused: a pickle of a private key would be a secret written where no one chose."""
        raise TypeError("%s is not picklable; keep its key file instead" % type(self).__name__)

    def public_jwk(self) -> Dict[str, str]:
        """The public JWK: each kind of key makes its own."""
        raise NotImplementedError

    def _public(self) -> object:
        """The public key's numbers, which __eq__ and __hash__ compare: an ECKey's point, an
        RSAKey's (n, e)."""
        raise NotImplementedError

    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint of the public JWK, base64url."""
        # not kept: verify_proof asks it once of each proof's own new key, and a Client once when
        # it is made (about 13 microseconds each time); nor is the proof header, which make_proof
        # rebuilds for every proof (about 9 microseconds, a few per cent of a proof)
        return jwk_thumbprint(self.public_jwk())

    def _private(self) -> Any:
        """The private part (an ECKey's scalar d; an RSAKey's (d, p, q, dp, dq, qi)), or
        no_private_key for a public key. Typed Any: each subclass declares its _secret's type, and
        typing is not imported at run time, so _Key cannot be Generic over it."""
        if self._secret is None:
            raise DPoPError("no_private_key", "this is a public key; signing needs the private key")
        return self._secret

    def __eq__(self, other: object) -> bool:
        """Same class, same public numbers (_public), and both private or both public."""
        # no secret is compared (nor timed). An ECKey's point is d*G (its invariant) and d -> d*G
        # is one-to-one on [1, n), so two private ECKeys with the same point have the same d. An
        # RSA n has one factorization, so two private RSAKeys with the same n and e have the same
        # p and q, and the same dp and dq (_new made each the inverse of e below p - 1 and q - 1):
        # they make the same signatures.
        if not isinstance(other, type(self)):
            return NotImplemented
        return (self._public(), self.has_private) == (other._public(), other.has_private)

    def __hash__(self) -> int:
        """The public numbers' hash: a private key and its public half hash alike."""
        return hash(self._public())


class ECKey(_Key):
    """A P-256 key pair, or a public key alone. Immutable; repr shows no secret.

    Make one with generate_key(), load_key() or load_key_file().
    """

    # Invariant, set by _new and never changed (__setattr__ refuses): _point is on the curve
    # and, when _secret is not None, equals _secret * G. _new checks nothing: every path to it
    # passes numbers already checked (generate_key derives the point, the loaders check it,
    # public_key reuses a key's own).
    __slots__ = ("_secret", "_point", "_header")
    _secret: int | None  # the private scalar d, 1 <= d < n; None for a public key
    _point: Affine  # the public point d*G, affine (x, y), on the curve
    _algs = ("ES256",)

    @classmethod
    def _new(cls, d: int | None, point: Affine) -> ECKey:
        """Internal constructor for already-validated values."""
        key = object.__new__(cls)
        for name, value in zip(cls.__slots__, (d, point, None)):
            object.__setattr__(key, name, value)
        return key

    @property
    def public_point(self) -> Tuple[int, int]:
        """The affine public point (x, y)."""
        return self._point

    def public_key(self) -> ECKey:
        """This key without its private half."""
        return ECKey._new(None, self._point)

    def public_jwk(self) -> Dict[str, str]:
        """{kty, crv, x, y}, coordinates as 32-byte base64url. Nothing else."""
        x, y = (b64url_encode(_int_to_bytes32(c)) for c in self._point)
        return {"kty": "EC", "crv": "P-256", "x": x, "y": y}

    def private_jwk(self) -> Dict[str, str]:
        """The public JWK plus ``d``. Handle the result as a secret."""
        return dict(self.public_jwk(), d=b64url_encode(_int_to_bytes32(self._private())))

    def to_pem(self, private: bool = True) -> str:
        """PKCS#8 PEM (private=True) or SubjectPublicKeyInfo PEM."""
        return _key_pem(self._point, self._private() if private else None)

    def sign(self, data: BytesLike, alg: str = "ES256", *, hedge: bool = True) -> bytes:
        """ES256 signature of ``data``: 64 bytes r || s.

        ``alg`` is there so that both key classes sign alike (RSAKey.sign(data, alg)): a P-256
        key signs ES256 only, and any other alg is a ValueError, as for an RSAKey.
        hedge=False gives the pure RFC 6979 signature (for known-answer tests);
        the default mixes 32 fresh random bytes into the nonce (RFC 6979 §3.6).
        """
        if alg != "ES256":
            raise ValueError("P-256 keys sign ES256, not %r" % alg)
        # 96 fresh random bytes: 32 for RFC 6979 §3.6's additional data (hedging), 64 for the
        # two inversion blinds; none of them changes which signature is valid
        digest = hashlib.sha256(_as_bytes("data", data)).digest()
        rand = os.urandom(96)
        r, s = _sign_digest(self._private(), digest, rand[:32] if hedge else b"", rand[32:])
        return _int_to_bytes32(r) + _int_to_bytes32(s)

    def verify(self, data: BytesLike, signature: BytesLike, alg: str = "ES256") -> bool:
        """True if ``signature`` (64 bytes r || s) is valid for ``data``. Never
        raises on bad bytes. A key that verifies again and again earns a table (_KeyTables).
        ``alg``, as RSAKey.verify's: False for any alg but ES256."""
        if alg != "ES256":
            return False
        digest = hashlib.sha256(_as_bytes("data", data)).digest()
        table = _KEY_TABLES.table(self._point)
        good = _verify_digest(self._point, digest, _as_bytes("signature", signature), table)
        if good:
            _KEY_TABLES.verified(self._point)
        return good

    def _public(self) -> Affine:
        """The public point, which __eq__ and __hash__ compare."""
        return self._point

    def __repr__(self) -> str:
        """Kind and thumbprint: never a coordinate of d."""
        kind = "private" if self.has_private else "public"
        return "<dpop.ECKey P-256 %s jkt=%s>" % (kind, self.thumbprint())


def _public_from_private(d: int) -> Affine:
    """d*G in affine form for a private 1 <= d < n; the inversion is blinded (d is secret)."""
    X, Y, Z = _mul_base(d)  # never infinity: 1 <= d < n
    zi = _inverse_blinded(Z, p, _random_below(p))  # 1/Z
    return X * zi * zi % p, Y * zi * zi * zi % p  # (X / Z^2, Y / Z^3)


def generate_key() -> ECKey:
    """A new random P-256 key pair (d uniform in [1, n), from os.urandom)."""
    return _key_from_parts(_random_below(n))


def _key_from_parts(d: int, *embedded: Affine | None) -> ECKey:
    """The private key d, which must be in [1, n); the point is derived from it, and every point
    embedded with it (None for none) must agree."""
    if not 1 <= d < n:
        raise DPoPError("bad_key", "private scalar out of range")
    # the point is always derived from d; an embedded one must agree with it, so a file whose
    # public half was edited cannot give a key that signs for one point and shows another
    derived = _public_from_private(d)
    if any(point not in (None, derived) for point in embedded):
        raise DPoPError("bad_key", "an embedded public key does not match the private key")
    return ECKey._new(d, derived)


def _jwk_member(jwk: Mapping[str, Any], name: str) -> str:
    """A JWK member that must be present and a string (every key member of RFC 7518 §6 and RFC
    7638's thumbprint members are): EC and RSA keys and thumbprints read them all here."""
    value = jwk.get(name)
    if not isinstance(value, str):
        raise DPoPError("bad_key", "JWK member '%s' is missing or not a string" % name)
    return value


def _jwk_coordinate(jwk: Mapping[str, Any], name: str) -> bytes:
    """A P-256 JWK member (x, y or d) as its 32 bytes: exactly 43 base64url characters (RFC 7518
    §6.2.1.2 forbids dropping leading zeros, and thumbprints depend on it)."""
    value = _jwk_member(jwk, name)
    # 43 characters that b64url_decode accepts are exactly 32 bytes (its strict final bits);
    # checking the length first keeps a huge member from being decoded at all
    if len(value) != 43:
        raise DPoPError("bad_key", "JWK member '%s' must be exactly 32 bytes of base64url" % name)
    return b64url_decode(value)


def _check_jwk_use(jwk: Mapping[str, Any]) -> None:
    """use/key_ops/alg, when present, must allow ES256 signatures."""
    # RFC 7517 §4.2-§4.4: a key published for encryption, or for another algorithm, is not ours to
    # sign or verify with, even when its numbers would work
    if jwk.get("use") not in (None, "sig"):
        raise DPoPError("unsupported_key", "JWK 'use' is not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None:
        if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
            raise DPoPError("bad_key", "JWK 'key_ops' is not a list of strings")
        if {"sign", "verify"}.isdisjoint(ops):
            raise DPoPError("unsupported_key", "JWK 'key_ops' allows neither sign nor verify")
    if jwk.get("alg") not in (None, "ES256"):
        raise DPoPError("unsupported_key", "JWK 'alg' is not ES256")


def _key_from_jwk(jwk: Mapping[str, Any]) -> ECKey:
    """The ECKey a JWK describes (RFC 7518 §6.2): kty EC, crv P-256, use/key_ops/alg allowing
    signatures, a point on the curve, and a d in [1, n) that matches it when present."""
    kty = _jwk_member(jwk, "kty")
    if kty != "EC":
        raise DPoPError("unsupported_key", "JWK kty %s is not EC" % _short_repr(kty))
    crv = jwk.get("crv")
    if crv != "P-256":
        raise DPoPError(
            "unsupported_curve", "JWK curve %s is not supported; use P-256" % _short_repr(crv)
        )
    _check_jwk_use(jwk)
    # x and y are the SEC 1 uncompressed point's coordinates: one on-curve check for every form
    point = _point_from_octets(b"\x04" + _jwk_coordinate(jwk, "x") + _jwk_coordinate(jwk, "y"))
    if "d" not in jwk:
        return ECKey._new(None, point)
    return _key_from_parts(int.from_bytes(_jwk_coordinate(jwk, "d"), "big"), point)


def _key_data(data: KeyData, labels: Sequence[str]) -> bytes | Mapping[str, Any]:
    """What load_key or load_rsa_key was given, size-checked: DER bytes (from a PEM text, the one
    block labelled with one of ``labels``) or a JWK mapping. A path is read first."""
    if isinstance(data, os.PathLike):
        data = _read_key_file(data)
    if isinstance(data, Mapping):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, str):
        raise _type_error("data", "str, bytes, a JWK mapping or a path", data)
    if len(data) > _MAX_KEY_INPUT:
        raise DPoPError("bad_key", "key data is larger than 64 KiB")
    if isinstance(data, bytes):
        if data[:1] == b"\x30":
            return data
        # text, as a str would be: a byte that is not UTF-8 becomes a lone surrogate, which no
        # reader below accepts (not JSON, not base64, no label), and text around PEM blocks is
        # ignored whatever it holds (RFC 7468 §2)
        data = data.decode("utf-8", "surrogateescape")
    stripped = data.strip()
    if stripped.startswith("{"):
        return _json_object(stripped.encode("utf-8", "surrogatepass"), "JWK")
    if "-----BEGIN " in data:
        return _pem_to_der(data, labels)
    if len(data) < 4096 and os.path.isfile(data):
        raise DPoPError(
            "bad_key",
            "key data looks like a file name: pass pathlib.Path(...) or the file's contents",
        )
    raise DPoPError("bad_key", "key data is not PEM, DER or a JWK")


def load_key(data: KeyData) -> ECKey:
    """Load a P-256 key from PEM (text or bytes), DER, a JWK (dict or JSON
    text), or the file an ``os.PathLike`` (``pathlib.Path``) names.

    PEM/DER may be SEC1 ``EC PRIVATE KEY``, PKCS#8 ``PRIVATE KEY`` or SPKI
    ``PUBLIC KEY`` (public only). A JWK with ``d`` is a private key.
    """
    value = _key_data(data, _EC_PEM_LABELS)
    return _parse_der(value) if isinstance(value, bytes) else _key_from_jwk(value)


def load_key_file(path: str | os.PathLike[str]) -> ECKey:
    """load_key() on the contents of a file."""
    return load_key(_read_key_file(path))


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    """A key file's bytes (one more than the 64 KiB a key may have, so that a larger file is refused
    as such)."""
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_KEY_INPUT + 1)
    except OSError as exc:
        raise DPoPError(
            "io_error", "cannot read key file %s: %s" % (os.fspath(path), exc.strerror)
        ) from None


# RFC 7638 §3.2 (EC, RSA), RFC 8037 §2 (OKP), each in the sorted order the hash input needs
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint (base64url) of an EC, RSA or OKP public key.

    Only the required members count, in lexicographic order, with no
    whitespace; ``d``, ``kid``, ``alg`` and the rest are ignored. A P-256
    key must be one load_key reads (32-byte coordinates, a point on the curve).
    """
    if not isinstance(jwk, Mapping):
        raise _type_error("jwk", "a mapping", jwk)
    kty = _jwk_member(jwk, "kty")
    members = _THUMBPRINT_MEMBERS.get(kty)
    if members is None:
        raise DPoPError("unsupported_key", "no thumbprint for JWK kty %s" % _short_repr(kty))
    required = {name: _jwk_member(jwk, name) for name in members}
    if kty == "EC" and required["crv"] == "P-256":
        # read as the key it names, by the one reader of P-256 JWKs: 31-byte coordinates (a
        # dropped leading zero) would give a different hash, and a point off the curve is no key
        _key_from_jwk(required)
    # RFC 7638 §3: the required members only, sorted by name (as _THUMBPRINT_MEMBERS lists them,
    # so the dict keeps that order), no whitespace, UTF-8
    canonical = json.dumps(required, separators=(",", ":"), ensure_ascii=False)
    try:
        return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
    except UnicodeEncodeError:
        raise DPoPError("bad_key", "JWK member holds a lone surrogate") from None


# =============================================================================
# 7. JWS compact serialization: building and splitting (RFC 7515 §3.1, §5, §7.1)
# =============================================================================
#
# Trusts: section 1. Guarantees: a JWS is built one way for every signer (make_proof, jws_sign,
# client_assertion), and split, its segments decoded and its header parsed (a crit refused)
# before any signature work.
# What alg is signed or accepted, and with which key, is each caller's: a proof's own making and
# checks (sections 8, 9), jws_sign and jws_verify (section 11, for a program's own JWTs) and
# client_assertion (section 11).


def _jws(header: str, payload: bytes, sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS (RFC 7515 §7.1): BASE64URL(header as compact JSON) "." BASE64URL(payload)
    "." BASE64URL(signature), where ``sign`` is given the signing input, the first two segments
    in ASCII (§5.1). The header's members keep the caller's order."""
    signing_input = header + "." + b64url_encode(payload)
    return signing_input + "." + b64url_encode(sign(signing_input.encode("ascii")))


def _jws_split(token: str, limit: int) -> Tuple[Dict[str, Any], bytes, bytes, bytes]:
    """Split a compact JWS, decode its segments and parse its header: (header, payload bytes,
    signature bytes, signing input), the signing input being the first two segments as sent, in
    ASCII (RFC 7515 §5.2), for the caller to verify. A header with 'crit' is refused here, for
    every caller: no extension is understood, and RFC 7515 §4.1.11 says a JWS whose crit names
    one the recipient does not understand is invalid. Its own refusals are bad_jws; a segment
    that is not base64url, or a header that is not JSON, stays bad_base64url or bad_json, for each
    caller to name (jws_verify: bad_jws; a DPoP proof: proof_malformed; the demo server's
    assertion check: refused). The payload is returned as bytes: whether it is JSON is the
    caller's to say."""
    _check_str("token", token)
    if len(token) > limit:
        raise DPoPError("bad_jws", "JWS is larger than %d bytes" % limit)
    parts = token.split(".")
    if len(parts) != 3:
        raise DPoPError("bad_jws", "compact JWS must have three segments")
    h64, p64, s64 = parts
    # (an empty header segment decodes to b"", which is not JSON: refused here)
    header = _json_object(b64url_decode(h64), "JWS header")
    if "crit" in header:
        raise DPoPError("bad_jws", "JWS 'crit' extensions are not supported")
    # (h64 and p64 decoded, so they are base64url: ASCII)
    return header, b64url_decode(p64), b64url_decode(s64), (h64 + "." + p64).encode("ascii")


# =============================================================================
# 8. DPoP proofs (RFC 9449 §4.2): making them
# =============================================================================
#
# Trusts: sections 6, 7 and 10 for keys and signatures. Guarantees: a proof with the RFC 9449 §4.2
# header (typ, alg, jwk rebuilt from the key: no private member can leak into it) and claims
# (jti of 128 random bits, htm, htu without query or fragment, iat, ath and nonce when given).

_TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # RFC 9110 §5.6.2 token
_NQCHAR = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 9449 §8.1 / RFC 6749 A
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 9449 §7.1 / RFC 9110 §11.2
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(?:#.*)?", re.S)
_URL_FORBIDDEN = re.compile(r"[^\x21-\x7e]")  # all but printable ASCII: controls, space, non-ASCII
# RFC 3986 §3.2.2-3: host (an IPv6 literal keeps its brackets, or a reg-name or IPv4 address) and
# an optional port of at most 5 digits (so int() never sees 5,000 of them)
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::([0-9]{0,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_NONCE = 1024
_STANDARD_CLAIMS = frozenset({"jti", "htm", "htu", "iat", "ath", "nonce"})


def _split_url(url: str) -> Tuple[str, str, int, str, str, str]:
    """(scheme, host, port, authority, path, query) of an absolute http(s) URL, normalized.

    Scheme and host lower-cased; port the number used (the scheme's default when
    none is given); authority "host[:port]", the port there only when it is not
    the default; empty path "/". The path is returned byte for byte: no
    decoding, no re-encoding.
    """
    _check_str("url", url)
    if len(url) > 8192 or _URL_FORBIDDEN.search(url):
        raise DPoPError(
            "bad_url",
            "URL must be ASCII with no spaces or control characters (percent-encode them)",
        )
    # RFC 3986 §3: scheme "://" authority path [ "?" query ] [ "#" fragment ]; the fragment is
    # dropped, and the query ("" or "?..." as it came) is for the request line, never for htu
    match = _URL.fullmatch(url)
    if match is None:
        raise DPoPError("bad_url", "not an absolute URL")
    scheme = match[1].lower()
    if scheme not in _DEFAULT_PORTS:
        raise DPoPError("bad_url", "scheme must be http or https")
    # userinfo would be a credential in every proof's htu and every log line: refused
    if "@" in match[2]:
        raise DPoPError("bad_url", "credentials in URLs are not supported")
    authority = _AUTHORITY.fullmatch(match[2])
    if authority is None:
        raise DPoPError("bad_url", "bad host or port")
    # no port (or "h:") is the default one; a port that is the scheme's default is dropped, so
    # https://h:443/ and https://h/ give one htu, and leading zeros go (h:08443 is h:8443)
    port = int(authority[2] or _DEFAULT_PORTS[scheme])
    if not 0 < port < 65536:
        raise DPoPError("bad_url", "bad port")
    host = authority[1].lower()
    host_port = host if port == _DEFAULT_PORTS[scheme] else "%s:%d" % (host, port)
    return scheme, host, port, host_port, match[3] or "/", match[4] or ""


def canonical_htu(url: str) -> str:
    """The htu for ``url``: scheme://host[:port]/path, no query or fragment.

    Scheme and host are lower-cased, the default port is dropped, an empty
    path becomes "/", and the path is kept exactly as it will be sent (no
    percent-decoding or re-encoding). Only absolute http(s) URLs are accepted.
    """
    scheme, _, _, host_port, path, _ = _split_url(url)  # RFC 9449 §4.2: htu has no query
    return scheme + "://" + host_port + path


def access_token_hash(token: str) -> str:
    """The ``ath`` claim: base64url(SHA-256(ASCII token)) (RFC 9449 §4.2)."""
    _check_str("token", token)
    if _TOKEN68.fullmatch(token) is None:
        raise DPoPError("bad_access_token", "access token has characters outside token68")
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


def _check_nonce(nonce: str) -> str:
    """A server's nonce as it may go into a proof: 1 to 1024 NQCHAR characters (RFC 9449 §8.1)."""
    _check_str("nonce", nonce)
    if len(nonce) > _MAX_NONCE or _NQCHAR.fullmatch(nonce) is None:
        raise DPoPError(
            "bad_argument",
            "a nonce is 1-1024 printable ASCII, no space, quote or backslash (NQCHAR)",
        )
    return nonce


def _check_time(name: str, value: float | None) -> float:
    """A time the caller passed (seconds since the epoch), or the clock's when None."""
    if value is None:
        return time.time()
    # any int or float but bool (TypeError) and NaN (ValueError: it would compare as no time)
    _setting(name, value, -float("inf"), float("inf"))
    return value


def make_proof(
    key: ECKey | RSAKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    jti: str | None = None,
    claims: Mapping[str, Any] | None = None,
    alg: str | None = None,
) -> str:
    """A DPoP proof JWT for one HTTP request (RFC 9449 §4.2).

    Header: typ dpop+jwt, alg ES256 (an RSAKey: RS256, or PS256 with ``alg``), and the public JWK
    rebuilt from the key (never a loaded JWK, which may hold ``d``). Claims: jti (128 random bits
    unless given), htm (the method, upper-cased), htu (canonical_htu(url)), iat (integer seconds;
    ``now`` or the clock), ath with ``access_token``, nonce with ``nonce``, and ``claims`` when
    asked for.
    """
    if not isinstance(key, (ECKey, RSAKey)):
        raise _type_error("key", "an ECKey or RSAKey", key)
    _check_str("method", method)
    if _TCHAR.fullmatch(method) is None:
        raise DPoPError("bad_argument", "method is not an HTTP method token")
    # RFC 9449 §4.2 claims: jti unique per proof (128 random bits make a collision as likely
    # as guessing a key), htm and htu for this request only, iat from the caller's clock
    if jti is None:
        jti = b64url_encode(os.urandom(16))
    _check_str("jti", jti)
    if not 0 < len(jti) <= 256:
        raise ValueError("jti must have 1 to 256 characters")
    payload: Dict[str, Any] = {
        "jti": jti,
        "htm": method.upper(),
        "htu": canonical_htu(url),
        "iat": int(_check_time("now", now)),
    }
    if access_token is not None:
        payload["ath"] = access_token_hash(access_token)
    if nonce is not None:
        payload["nonce"] = _check_nonce(nonce)
    if claims is not None:
        if not isinstance(claims, Mapping):
            raise _type_error("claims", "a mapping", claims)
        clash = _STANDARD_CLAIMS.intersection(claims)
        if clash:
            raise ValueError("claims may not replace %s" % ", ".join(sorted(clash)))
        payload.update(claims)
    # the header (typ dpop+jwt, alg, the public JWK) is rebuilt from the key's public numbers
    # for every proof, never taken from a JWK the key was loaded from, which may hold d or kid;
    # ES256 for a P-256 key, RS256 (its default) or PS256 for an RSA key: the key's _algs
    alg = alg or key._algs[0]
    if alg not in key._algs:
        raise ValueError("a %s key does not make %s proofs" % (type(key).__name__, alg))
    # an ECKey's (ES256, its one alg) is made at its first proof and kept in the key: the same
    # for every proof, and encoding it anew cost a few per cent of a proof (the speed floors)
    header = key._header if alg == "ES256" else None
    if header is None:
        header = b64url_encode(
            _json_compact({"typ": "dpop+jwt", "alg": alg, "jwk": key.public_jwk()})
        )
        if alg == "ES256":
            object.__setattr__(key, "_header", header)
    return _jws(header, _json_compact(payload), functools.partial(key.sign, alg=alg))


# =============================================================================
# 9. DPoP proofs (RFC 9449 §4.3, §8, §11.1): checking them on a server
# =============================================================================
#
# Trusts: sections 6, 7 and 10. Guarantees: verify_proof runs every RFC 9449 §4.3 check in the
# RFC's order (their numbers are in the comments), refuses with a code that names the check, and
# records a jti only once every other check has passed. The checks that leave the later ones able
# to run report to a judge: verify_proof's raises at the first failure (_must), and `dpop inspect`
# (section 13) passes one that records every check, so it explains a proof with these same lines.

_MAX_PROOF = 8 * 1024
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class VerifiedProof:
    """What verify_proof() checked: the proof's ``header``, ``claims``, its
    public ``key`` and that key's RFC 7638 thumbprint ``jkt`` (bind a new
    access token to it with ``{"cnf": {"jkt": proof.jkt}}``)."""

    __slots__ = ("header", "claims", "key", "jkt")

    def __init__(
        self, header: Dict[str, Any], claims: Dict[str, Any], key: ECKey | RSAKey, jkt: str
    ) -> None:
        """What verify_proof found: the proof's header and claims, its key and that key's jkt."""
        self.header, self.claims, self.key, self.jkt = header, claims, key, jkt

    def __repr__(self) -> str:
        """Method, htu and jkt: what a log line needs, nothing a replay could use."""
        return "<dpop.VerifiedProof htm=%s htu=%s jkt=%s>" % (
            self.claims.get("htm"),
            self.claims.get("htu"),
            self.jkt,
        )


class ReplayCache:
    """Remembers proof jtis for the acceptance window and refuses reuse.

    Thread-safe and bounded: at most ``max_entries`` unexpired entries; past
    that, new proofs are refused (``replay_cache_full``) rather than old
    entries forgotten, so a replay can never slip through. Size it to your
    peak proofs per second times the window (max_age + leeway).

    verify_proof() accepts any object with this one method, so several
    server instances can share a store (RedisReplayCache).

    ``clock`` must never go back (time.monotonic does not): an entry is forgotten once the clock
    passes its expiry. Every call costs O(log n), full or not: the keys sit in a set and in a heap
    by expiry, one heap item per key; each call first
    pops the expired ones from the heap (each entry is popped once in its
    life, so that work is paid for by the call that added it).
    """

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """An empty cache for at most ``max_entries`` unexpired jti values, on ``clock``."""
        self._max = _setting("max_entries", max_entries, 1, 1 << 40, integer=True)
        self._clock = clock
        # the unexpired keys (and expired ones not popped yet); their expiries are in the heap
        self._held: Set[str] = set()
        # a heap of (expiry, key), one item per key in _held
        self._by_expiry: List[Tuple[float, str]] = []
        self._lock = threading.Lock()

    def add(self, key: str, ttl: int) -> bool:
        """Store ``key`` for ``ttl`` seconds; False if it is already stored.

        Raises DPoPError(replay_cache_full) when full of unexpired entries.
        """
        import heapq

        now = self._clock()
        with self._lock:
            # forget what has expired: the heap's smallest expiry first, stopping at the first
            # that has not (a key is in the heap once, so each pop deletes exactly one entry)
            while self._by_expiry and self._by_expiry[0][0] <= now:
                self._held.remove(heapq.heappop(self._by_expiry)[1])
            # a key still held is a replay; a full cache refuses rather than forgets, so that
            # no replay can be let in by an eviction (refused like a proof: invalid_dpop_proof)
            if key in self._held:
                return False
            if len(self._held) >= self._max:
                raise _refuse("replay_cache_full", "replay cache is full")
            self._held.add(key)
            heapq.heappush(self._by_expiry, (now + ttl, key))
            return True

    def __len__(self) -> int:
        """How many entries are held; expired ones are dropped as add() runs."""
        return len(self._held)


class NonceIssuer:
    """Stateless server nonces (RFC 9449 §8, §9): HMAC over a time step.

    ``issue()`` gives the nonce for the current step; ``check()`` accepts it
    during that step and the next, so a nonce lives between ``step`` and
    2 * ``step`` seconds. Nonces cannot be predicted without ``secret``
    (keep it at least 16 random bytes; several instances share one secret).
    """

    __slots__ = ("_secret", "_step")

    def __init__(self, secret: BytesLike, *, step: int = 60) -> None:
        """Nonces keyed by ``secret`` (at least 16 bytes), one per time step of ``step`` seconds."""
        secret = _as_bytes("secret", secret)
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        self._secret = secret
        self._step = _setting("step", step, 1, 1 << 31, integer=True)

    def issue(self, now: float | None = None) -> str:
        """The current nonce (or ``now``'s): HMAC-SHA-256 of the time step, 18 bytes, base64url."""
        counter = int(_check_time("now", now) // self._step)
        mac = hmac.digest(self._secret, b"dpop-nonce\x00" + counter.to_bytes(8, "big"), "sha256")
        return b64url_encode(mac[:18])

    def check(self, nonce: object, now: float | None = None) -> bool:
        """True if ``nonce`` is the current or the previous step's nonce."""
        # the clock is read once; one step earlier is the previous step's nonce
        current = _check_time("now", now)
        return isinstance(nonce, str) and any(
            _equal(nonce, self.issue(at)) for at in (current, current - self._step)
        )

    def __repr__(self) -> str:
        """The issuer's settings, never a nonce."""
        return "<dpop.NonceIssuer step=%d>" % self._step


# RFC 3986 §2.3
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normal_escape(escape: re.Match[str]) -> str:
    """One escape "%hh" as RFC 3986 §6.2.2.1-2 normalise it: the character itself when it is
    unreserved (%7e is ~), else the escape with its hex in upper case (%2f is %2F)."""
    char = chr(int(escape[1], 16))
    return char if char in _UNRESERVED else escape[0].upper()


def _normal_htu(url: str) -> str:
    """canonical_htu(url) after RFC 3986 §6.2.2's syntax-based normalisation of the path, for
    comparing htu values (RFC 9449 §4.3 step 9): percent-encoding hex in upper case, unreserved
    characters decoded (%7E is ~), dot segments removed (§5.2.4). Every other escape stays as it is:
    %2F is not "/"."""
    # scheme and host were lower-cased and the default port dropped by canonical_htu (§6.2.2.1,
    # §6.2.3); what is left to normalise is the path
    *origin, path = canonical_htu(url).split("/", 3)  # "https:", "", "host[:port]", the path
    path = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", path)  # a stray % is itself: "%%41" is not "%A"
    path = re.sub(r"%([0-9A-Fa-f]{2})", _normal_escape, path)
    # §5.2.4, as a stack of segments: "." goes, ".." takes the segment before it (never above
    # the root), and a path that ended in "." or ".." still ends in "/"
    segments = path.split("/")
    kept: List[str] = []
    for segment in segments:
        if segment == "..":
            del kept[-1:]  # the segment before, if there is one
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")  # "/a/b/.." is "/a/": the path still ends in a slash
    return "/".join(origin + kept)


def _refuse(code: str, message: str) -> DPoPError:
    """A refused proof: ``code`` names the RFC 9449 §4.3 check, and ``oauth_error`` is the answer a
    server gives for it (use_dpop_nonce for the nonce check, invalid_dpop_proof for the rest)."""
    oauth = "use_dpop_nonce" if code == "proof_nonce" else "invalid_dpop_proof"
    return DPoPError(code, message, oauth_error=oauth, status=401 if code == "proof_nonce" else 400)


if TYPE_CHECKING:
    _Judge = Callable[[str, bool, str], None]  # (check code, passed, why it failed)


def _must(code: str, passed: bool, message: str) -> None:
    """verify_proof's judge of each check: a failure is refused at once, so no later check runs."""
    if not passed:
        raise _refuse(code, message)


def _signed_proof(
    proof: str | Sequence[str] | None,
    algorithms: Sequence[str],
    judge: _Judge,
) -> Tuple[Dict[str, Any], Dict[str, Any], Any]:
    """RFC 9449 §4.3 steps 1, 2 and 4 to 7: (header, claims, key) of the one DPoP header value,
    within the size limit, a well-formed JWT of type dpop+jwt, with an accepted algorithm, signed
    by the public key in its header. Steps 4 and 6 go to ``judge``; the others raise, as no later
    check could run without what they establish."""
    # A server framework may hand over one header value or the list of all of them; two DPoP
    # headers, or two values joined by a comma into one, are both "more than one proof".
    # 1. exactly one DPoP header: as a list of values (none for None), then its one value
    values = [proof] if isinstance(proof, str) else proof or []
    if not isinstance(values, (list, tuple)):  # a mapping's keys or a generator: never a proof
        raise _type_error("proof", "a str, a list of str or None", proof)
    if len(values) > 1:
        raise _refuse("proof_multiple", "more than one DPoP header")
    only = _check_str("proof", values[0] if values else "")
    if not only:
        raise _refuse("proof_missing", "no DPoP header, or an empty one")
    if len(only) > _MAX_PROOF:
        raise _refuse("proof_too_large", "DPoP proof is larger than 8 KiB")
    if "," in only:
        raise _refuse("proof_multiple", "DPoP header holds more than one value")
    # 2. a single well-formed JWT (with no crit: _jws_split refuses it)
    try:
        header, payload, signature, signed = _jws_split(only, _MAX_PROOF)
        claims = _json_object(payload, "DPoP payload")
    except DPoPError as exc:
        raise _refuse("proof_malformed", exc.message) from None
    # 4. typ
    typ = header.get("typ")
    judge(
        "proof_typ",
        isinstance(typ, str) and typ.lower() in ("dpop+jwt", "application/dpop+jwt"),
        "typ is not dpop+jwt",
    )
    # 5. an accepted algorithm: one the caller listed (verify_proof has refused any entry but
    # ES256, RS256 and PS256, the ones checked here: none, HS256, EdDSA or a str given whole are
    # the caller's mistake, never ignored); a str first, as the caller's algorithms may be a
    # set, which cannot even look up a list or an object
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise _refuse("proof_alg", "alg %s is not accepted" % _short_repr(alg))
    # 7. jwk: a public P-256 key and nothing private
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or _PRIVATE_JWK_MEMBERS.intersection(jwk):
        raise _refuse("proof_jwk", "header has no jwk object, or one with private key members")
    try:
        key = _key_from_jwk(jwk) if alg == "ES256" else load_rsa_key(jwk)
    except DPoPError as exc:
        raise _refuse("proof_jwk", exc.message) from None
    # 6. signature by that key
    judge(
        "proof_signature",
        key.verify(signed, signature, alg),
        "signature does not verify with the header jwk",
    )
    return header, claims, key


# verify_proof's _judge is for `dpop inspect` alone (section 13): it is given (code, passed,
# reason) for each check that can fail without stopping the others (steps 4, 6 and 8 to 12), and
# records them all instead of raising; the default, _must, refuses the first failure. It is never
# given with replay=.


def verify_proof(
    proof: str | Sequence[str] | None,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    jkt: str | None = None,
    nonce: str | Callable[[str], bool] | None = None,
    now: float | None = None,
    max_age: int = 60,
    leeway: int = 5,
    algorithms: Sequence[str] = ("ES256",),
    replay: Any | None = None,
    _judge: _Judge = _must,
) -> VerifiedProof:
    """Check a DPoP proof as RFC 9449 §4.3 requires; return what it proved.

    ``proof`` is the DPoP header value, or the list of all DPoP header values
    (so two headers are caught). ``method`` and ``url`` describe the request
    as the server received it. With ``access_token`` (a resource request) the
    proof must carry its ``ath``, and ``jkt`` (the token's ``cnf.jkt``) is
    required. ``nonce`` is the nonce the server requires: a string, or a
    function that says whether a nonce is acceptable (NonceIssuer.check).
    ``iat`` must lie in [now - max_age, now + leeway]. ``replay`` is a
    ReplayCache (or any object with its ``add``); the jti is recorded only
    once every other check has passed. ``algorithms`` names the accepted proof
    algorithms: ES256 (the default), RS256, PS256; any other entry is a ValueError.

    Raises DPoPError whose ``code`` names the failed check and whose
    ``oauth_error`` is what to answer (invalid_dpop_proof or use_dpop_nonce).
    """
    _check_str("method", method)
    if access_token is not None and jkt is None:
        raise TypeError(
            "verify_proof() needs jkt= (the token's cnf.jkt) when access_token= is given"
        )
    for allowed in algorithms:
        if allowed not in ("ES256",) + _RSA_ALGS:
            raise ValueError("algorithms may only name ES256, RS256 and PS256")
    request_htu = _normal_htu(url)
    current = _check_time("now", now)
    # steps 1, 2 and 4 to 7: a well-formed proof signed by the key in its header
    header, claims, key = _signed_proof(proof, algorithms, _judge)
    # 3. required claims, with their types
    for name in ("jti", "htm", "htu"):
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            raise _refuse("proof_claims", "claim %s is missing or not a string" % name)
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, (int, float)):
        raise _refuse("proof_claims", "claim iat is missing or not a number")
    for name in ("ath", "nonce"):
        if name in claims and not isinstance(claims[name], str):
            raise _refuse("proof_claims", "claim %s is not a string" % name)
    # 8. htm
    _judge("proof_htm", claims["htm"] == method, "htm does not match the request method")
    # 9. htu, both sides normalized the same way (RFC 3986 §6.2.2)
    try:
        proof_htu = _normal_htu(claims["htu"])
    except DPoPError:
        raise _refuse("proof_htu", "htu is not an absolute http(s) URL") from None
    _judge("proof_htu", proof_htu == request_htu, "htu does not match the request URL")
    # 10. nonce, when the server requires one
    if nonce is not None:
        given = claims.get("nonce")
        fresh = given is not None and (nonce(given) if callable(nonce) else _equal(given, nonce))
        _judge("proof_nonce", fresh, "the server requires a nonce, and not this one")
    # 11. creation time within the window
    in_window = current - max_age <= iat <= current + leeway
    _judge("proof_iat", in_window, "iat is outside the acceptance window")
    # 12. with an access token: ath and the key binding
    jkt_value = key.thumbprint()
    if access_token is not None:
        # a missing ath reads as "", which no hash is (step 3 made a present one a str)
        ath_ok = _equal(claims.get("ath", ""), access_token_hash(access_token))
        _judge("proof_ath", ath_ok, "ath is missing or does not match the access token")
    # jkt: the token's cnf.jkt (never None with an access token: refused above), or without one
    # the key the caller expects, if any
    if jkt is not None:
        bound = isinstance(jkt, str) and _equal(jkt, jkt_value)
        _judge("proof_binding", bound, "proof key does not match the expected jkt (cnf.jkt)")
    # replay: scoped by key and htu, remembered until iat + max_age
    if replay is not None:
        slot = hashlib.sha256(
            "\x00".join((jkt_value, proof_htu, claims["jti"])).encode()
        ).hexdigest()
        # for at least 1 s: step 11 made iat + max_age >= current
        if not replay.add(slot, int(iat + max_age - current) + 1):
            raise _refuse("proof_replay", "this jti was already used")
    return VerifiedProof(header, claims, key, jkt_value)


# =============================================================================
# 10. RSA keys, RS256 and PS256 (RFC 8017 §8.1, §8.2, §9.1, §9.2, B.2.1;
#     RFC 7518 §3.3, §3.5, §6.3; RFC 3447 A.1 and RFC 5958 key files)
# =============================================================================
#
# Trusts: section 5's DER reader. Guarantees: RSA keys of 2048 to 8192 bits with every CRT member
# present and consistent; RS256 and PS256 as RFC 8017 defines them; signing blinded and checked with
# the public key before the signature leaves.
#
# For servers that register RSA client keys (private_key_jwt), and for
# verify_proof given algorithms=("RS256", "PS256", ...): the only callers
# above are _signed_proof (load_rsa_key, RSAKey.verify) and make_proof (RSAKey.sign).
#
# Keys: 2048 to 8192 bits, two primes only, every CRT member present and
# consistent (a key that fails a check is refused, never repaired).
# Signing uses CRT with RSA blinding: the message is multiplied by r^e for a
# fresh random r, so the secret exponentiation never sees a value an attacker
# chose, and the result is checked with the public key before it leaves
# (a fault in the CRT would otherwise reveal a factor of n). CPython's pow()
# is not constant-time; blinding hides which value it works on, not how long
# the exponents take. Generating RSA keys is left out: finding 1024-bit
# primes in pure Python takes seconds; make keys with openssl or your server.

_OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
# RFC 8017 §9.2 note 1
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_ALGS = ("RS256", "PS256")
_RSA_PRIVATE = ("d", "p", "q", "dp", "dq", "qi")  # JWK members, RFC 7518 §6.3.2


class RSAKey(_Key):
    """An RSA key pair, or a public key alone; signs and verifies RS256 and PS256.

    Immutable; repr shows no secret. Make one with load_rsa_key().
    """

    # Invariant, set by _new (which checks it) and never changed: 2048 <= size <= 8192, e odd
    # in [3, 2^32), and the private members, when present, consistent with n and e.
    __slots__ = ("n", "e", "_secret", "size")
    n: int  # modulus, 2048 to 8192 bits
    e: int  # public exponent, odd, 3 <= e < 2^32
    # d, p, q, dp, dq, qi; checked consistent
    _secret: Tuple[int, int, int, int, int, int] | None
    size: int  # bits of n
    _algs = _RSA_ALGS

    @classmethod
    def _new(cls, modulus: int, e: int, *private: int) -> RSAKey:
        """An RSAKey from validated integers: n and e, then for a private key d, p, q, dp, dq, qi
        (RFC 8017 §3.2's order, which PKCS#1 and the JWK members share). 2048 to 8192 bits, an odd
        e below 2^32, and every CRT member consistent with n and e; anything else is refused, never
        repaired."""
        # every caller passes either no private member or all six
        size = modulus.bit_length()
        if not 2048 <= size <= 8192:
            raise DPoPError(
                "unsupported_key", "RSA keys must have 2048 to 8192 bits, not %d" % size
            )
        if not (3 <= e < 1 << 32 and e & 1 and modulus & 1):
            raise DPoPError("bad_key", "RSA public exponent or modulus out of range")
        if private:
            d, prime1, prime2, dp, dq, qi = private
            if not (
                prime1 * prime2 == modulus
                # then q = n / p is in (1, n) too: neither p - 1 nor q - 1 is a zero to divide by
                and 1 < prime1 < modulus
                and 1 < d < modulus
                and dp == d % (prime1 - 1)
                and dq == d % (prime2 - 1)
                and e * dp % (prime1 - 1) == 1
                and e * dq % (prime2 - 1) == 1
                and qi * prime2 % prime1 == 1
            ):
                raise DPoPError("bad_key", "RSA private key members are inconsistent")
        key = object.__new__(cls)
        for name, value in zip(cls.__slots__, (modulus, e, private or None, size)):
            object.__setattr__(key, name, value)
        return key

    def public_key(self) -> RSAKey:
        """This key without its private half."""
        return RSAKey._new(self.n, self.e)

    def public_jwk(self) -> Dict[str, str]:
        """{kty, n, e}: minimal big-endian base64url (RFC 7518 §6.3.1)."""
        return {"kty": "RSA", "n": _b64_uint(self.n), "e": _b64_uint(self.e)}

    def private_jwk(self) -> Dict[str, str]:
        """The public JWK plus d, p, q, dp, dq, qi. Handle the result as a secret."""
        jwk = self.public_jwk()
        jwk.update(zip(_RSA_PRIVATE, map(_b64_uint, self._private())))
        return jwk

    def _encode(self, alg: str, data: bytes, salt: bytes) -> int:
        """EMSA-PKCS1-v1_5 (RS256, RFC 8017 §9.2) or EMSA-PSS with MGF1-SHA-256
        and the 32-byte ``salt`` (PS256, §9.1.1; RS256 ignores it) of ``data``, as the integer
        that RSA signs and verification recovers (OS2IP(EM), §4.2)."""
        digest = hashlib.sha256(data).digest()
        if alg == "RS256":
            # §9.2 steps 2-5: T = DigestInfo || H, then EM = 0x00 || 0x01 || PS || 0x00 || T with
            # PS as many 0xff bytes as fill the modulus' length (at least 8, as n has 2048 bits)
            info = _SHA256_DIGEST_INFO + digest
            padding = b"\xff" * ((self.size + 7) // 8 - len(info) - 3)
            return int.from_bytes(b"\x00\x01" + padding + b"\x00" + info, "big")
        if alg != "PS256":
            raise ValueError("RSA keys sign RS256 or PS256, not %r" % alg)
        # §9.1.1 steps 5-6: H = Hash(M'), M' = 8 zero bytes || mHash || salt
        h = hashlib.sha256(b"\x00" * 8 + digest + salt).digest()
        # EM = maskedDB || H || 0xbc has emBits = modBits - 1 bits, so maskedDB (the emLen - hLen
        # - 1 bytes before H) keeps its low modBits - 1 - 8 * (hLen + 1) = size - 265 bits
        db_bits = self.size - 265
        # steps 7-11: DB = PS || 0x01 || salt (PS zero bytes, so DB's number is 0x01 || salt's),
        # maskedDB = DB xor MGF1(H), with the bits above emBits cleared
        mask = int.from_bytes(_mgf1(h, (db_bits + 7) // 8), "big")
        masked = (int.from_bytes(b"\x01" + salt, "big") ^ mask) % (1 << db_bits)
        # step 12: EM = maskedDB || H || 0xbc, so H || 0xbc are its low 33 bytes (264 bits)
        return (masked << 264) + int.from_bytes(h + b"\xbc", "big")

    def sign(self, data: BytesLike, alg: str = "RS256") -> bytes:
        """RS256 or PS256 signature of ``data`` (as many bytes as n)."""
        m = self._encode(alg, _as_bytes("data", data), os.urandom(32))
        _, prime1, prime2, dp, dq, qi = self._private()  # d itself is not needed with CRT
        modulus = self.n
        # -- blinding: the CRT below works on m * r^e, never on m --
        r = int.from_bytes(os.urandom(self.size // 8 + 16), "big") % modulus
        blinded = m * pow(r, self.e, modulus) % modulus
        # RFC 8017 §5.1.2 with CRT: s1 = c^dP mod p, s2 = c^dQ mod q, h = (s1 - s2) qInv mod p,
        # s = s2 + q h; then the blind is multiplied back out with r^-1 (blinded in turn)
        s1 = pow(blinded % prime1, dp, prime1)
        s2 = pow(blinded % prime2, dq, prime2)
        # (annotated: _private() is typed Any, so the CRT members, and s from them, are Any too)
        s: int = (
            (s2 + qi * (s1 - s2) % prime1 * prime2)
            * _inverse_blinded(r, modulus, _random_below(modulus))
            % modulus
        )
        # a CRT fault (or r sharing a factor with the modulus: never in practice)
        if pow(s, self.e, modulus) != m:
            raise RuntimeError("dpop: RSA signature self-check failed")
        return s.to_bytes((self.size + 7) // 8, "big")

    def verify(self, data: BytesLike, signature: BytesLike, alg: str = "RS256") -> bool:
        """True if ``signature`` is a valid RS256 or PS256 signature of ``data``. Never raises on
        bad bytes."""
        raw, sig = _as_bytes("data", data), _as_bytes("signature", signature)
        k = (self.size + 7) // 8
        s = int.from_bytes(sig, "big")
        if len(sig) != k or s >= self.n or alg not in _RSA_ALGS:
            return False
        m = pow(s, self.e, self.n)
        em = m.to_bytes(k, "big")
        # PS256 (RFC 8017 §9.1.2): EM = maskedDB || H || 0xbc, and DB = maskedDB xor MGF1(H) ends in
        # the 32-byte salt. Steps 4-10 check EM's form and step 14 compares H; all of it is the
        # one comparison below: encoding the message again with that salt must give EM exactly
        # (every EM _encode makes has that form; the bits above emBits, which it clears, are in
        # DB's first byte, never in the salt). RS256 (§8.2.2) has no salt: the 32 bytes read are
        # ignored, and its encoding is compared the same way.
        db_len = (self.size - 258) // 8  # maskedDB's bytes, as in _encode
        salt = bytes(x ^ y for x, y in zip(em[-65:-33], _mgf1(em[-33:-1], db_len)[-32:]))
        # (signature, message and key are all public: no constant-time comparison is needed)
        return m == self._encode(alg, raw, salt)

    def _public(self) -> Tuple[int, int]:
        """(n, e), which __eq__ and __hash__ compare."""
        return self.n, self.e

    def __repr__(self) -> str:
        """Size, kind and thumbprint: never a private member."""
        kind = "private" if self.has_private else "public"
        return "<dpop.RSAKey %d-bit %s jkt=%s>" % (self.size, kind, self.thumbprint())


def _b64_uint(value: int) -> str:
    """An RSA JWK member (RFC 7518 §6.3): the minimal big-endian bytes of ``value``, base64url."""
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _mgf1(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 B.2.1)."""
    out = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range((length + 31) // 32)
    )
    return out[:length]


def _rsa_from_der(der: bytes) -> RSAKey:
    """PKCS#1 RSAPrivateKey or RSAPublicKey, bare or in one wrapper (PKCS#8 or
    SubjectPublicKeyInfo), which holds PKCS#1, never another wrapper."""
    items = _der_sequence(der, "RSA key")
    info = _key_info(items)
    if info is not None:
        _, algorithm, inner, _ = info
        if _der_sequence(algorithm, "AlgorithmIdentifier")[:1] != [(_OID, _OID_RSA)]:
            raise DPoPError("unsupported_key", "not an RSA key")
        items = _der_sequence(inner, "RSA key")
        if _key_info(items) is not None:
            raise DPoPError("unsupported_key", "an RSA key wrapped twice")
    if len(items) == 9 and _der_uint(items[0]) == 0:  # RSAPrivateKey, two primes: version 0
        items = items[1:]  # n, e, d, p, q, dp, dq, qi
    elif len(items) != 2:  # nor RSAPublicKey: n, e
        raise DPoPError(
            "unsupported_key", "not a two-prime RSA key (multi-prime keys are not supported)"
        )
    return RSAKey._new(*map(_der_uint, items))


def load_rsa_key(data: KeyData) -> RSAKey:
    """Load an RSA key from PEM or DER (PKCS#1, PKCS#8, SPKI), a JWK (mapping or
    JSON text) or the file a ``pathlib.Path`` names."""
    jwk = _key_data(data, ("RSA PRIVATE KEY", "RSA PUBLIC KEY", "PRIVATE KEY", "PUBLIC KEY"))
    if isinstance(jwk, bytes):  # DER, or a PEM block's
        return _rsa_from_der(jwk)
    if jwk.get("kty") != "RSA":
        raise DPoPError("unsupported_key", "JWK kty %s is not RSA" % _short_repr(jwk.get("kty")))
    if "oth" in jwk:
        raise DPoPError("bad_key", "multi-prime RSA keys are not supported")
    numbers = []
    for name in ("n", "e") + (_RSA_PRIVATE if "d" in jwk else ()):
        text = _jwk_member(jwk, name)
        number = int.from_bytes(b64url_decode(text), "big")
        # n and e are minimal (RFC 7518 §6.3.1: no leading zero byte, and not empty), which is
        # the text _b64_uint writes for the number (b64url_decode accepts one text per bytes); an
        # empty private member is 0, which _new refuses (p * q is not n, d is below 2, and 0 is
        # no inverse for dp, dq or qi)
        if name in ("n", "e") and _b64_uint(number) != text:
            raise DPoPError("bad_key", "RSA JWK member '%s' is empty or not minimal" % name)
        numbers.append(number)
    return RSAKey._new(*numbers)


# Part II: the client. Everything above (Part I) is the proof path: all that
# make_proof, verify_proof, load_key, generate_key and jwk_thumbprint can run,
# RSA and JWS included, and it reads nothing defined below this line (a test
# checks that on the syntax tree), so it can be audited on its own. Below:
# client authentication, the transport, the session log, the token source,
# Client, the adapters, the Redis stores, the demo and the command line.

# =============================================================================
# 11. Client authentication with a JWT: private_key_jwt and client_secret_jwt
#     (RFC 7523 §2.2 and §3, RFC 7521 §4.2, OpenID Connect Core §9)
# =============================================================================
#
# A token request may prove who the client is with a short-lived JWT signed
# by the client's registered key (private_key_jwt) or MACed with its client
# secret (client_secret_jwt) instead of sending the secret. Servers remember
# the jti and refuse it a second time, so every token request, retries
# included, needs a new assertion.
#
# jws_sign and jws_verify, for a program's own JWTs (the demo server's tokens, the tests'
# assertion checks), live here too: no proof or proof check runs them. ES256 only (RFC 7518
# §3.4), and the verification key is always the caller's, never one the token names. Why one
# algorithm: the header names the algorithm, so a verifier that supports several can be steered
# to the weakest (`none`, or HS256 keyed with the public key). Here the only answer is ES256 and
# everything else is refused before any key is touched.

_MAX_JWS = 64 * 1024


def jws_sign(
    key: ECKey,
    payload: Mapping[str, Any] | BytesLike,
    header: Mapping[str, Any] | None = None,
) -> str:
    """Compact ES256 JWS of ``payload`` (a JSON object, or raw bytes)."""
    if not isinstance(key, ECKey):
        raise _type_error("key", "an ECKey", key)
    payload_bytes = (
        _json_compact(dict(payload))
        if isinstance(payload, Mapping)
        else _as_bytes("payload", payload)
    )
    if header is None:
        header = {}
    if not isinstance(header, Mapping):
        raise _type_error("header", "a mapping", header)
    if header.get("alg", "ES256") != "ES256":
        raise DPoPError("unsupported_alg", "only ES256 is supported")
    # the caller's members in their order, alg (ES256 whatever was asked) where it was or last
    protected = b64url_encode(_json_compact({**header, "alg": "ES256"}))
    return _jws(protected, payload_bytes, key.sign)


def jws_verify(token: str, key: ECKey | Mapping[str, Any]) -> Tuple[Dict[str, Any], bytes]:
    """Check a compact ES256 JWS against ``key``; return (header, payload bytes).

    Raises DPoPError unless the signature is a valid ES256 signature by
    ``key``. A JWK in the header is never used: the caller chooses the key.
    """
    if isinstance(key, Mapping):
        key = _key_from_jwk(key)
    elif not isinstance(key, ECKey):
        raise _type_error("key", "an ECKey or a JWK mapping", key)
    # a segment that is not base64url, or a header that is not a JSON object, is bad_jws
    try:
        header, payload, signature, signed = _jws_split(token, _MAX_JWS)
    except DPoPError as exc:
        raise DPoPError("bad_jws", exc.message) from None
    alg = header.get("alg")
    if alg != "ES256":
        raise DPoPError(
            "unsupported_alg", "JWS alg %s is not accepted; only ES256" % _short_repr(alg)
        )
    if not key.verify(signed, signature):
        raise DPoPError("bad_signature", "JWS signature is not valid for this key")
    return header, payload


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
_HMAC_ALGS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}  # RFC 7518 §3.2
_ASSERTION_ALGS = {
    "private_key_jwt": ("ES256",) + _RSA_ALGS,
    "client_secret_jwt": tuple(_HMAC_ALGS),
}


def _hmac_signature(alg: str, secret: bytes, signing_input: bytes) -> str:
    """The base64url HMAC of a JWS signing input (RFC 7518 §3.2)."""
    return b64url_encode(hmac.digest(secret, signing_input, _HMAC_ALGS[alg]))


def _assertion_algs(key: ECKey | RSAKey | str) -> Tuple[str, ...]:
    """The algorithms a client assertion key signs with, its default first: a client secret HMACs
    (client_secret_jwt), an RSAKey signs RS256 or PS256, an ECKey ES256 (private_key_jwt). Any
    other key is a TypeError here, for client_assertion (Client() passes only loaded keys)."""
    if isinstance(key, str):
        return tuple(_HMAC_ALGS)
    if isinstance(key, _Key):
        return key._algs
    raise _type_error("key", "an ECKey, an RSAKey or the client secret (str)", key)


def client_assertion(
    key: ECKey | RSAKey | str,
    client_id: str,
    audience: str,
    *,
    alg: str | None = None,
    kid: str | None = None,
    now: float | None = None,
) -> str:
    """A client authentication JWT (RFC 7523 §3) for the token endpoint ``audience``.

    ``key`` is the client's ECKey (private_key_jwt: ES256), its RSAKey (RS256,
    or PS256 with ``alg``) or its client secret (client_secret_jwt: HS256, or
    HS384/HS512 with ``alg``). Claims:
    iss = sub = client_id, aud, a new 128-bit jti, iat, exp = iat + 60.
    Header: alg, typ JWT, and kid when given.
    """
    _check_str("client_id", client_id)
    _check_str("audience", audience)
    issued = int(_check_time("now", now))
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": b64url_encode(os.urandom(16)),
        "iat": issued,
        "exp": issued + 60,
    }
    allowed = _assertion_algs(key)  # or TypeError for what is no key
    alg = alg or allowed[0]
    if alg not in allowed:
        raise ValueError("a %s signs %s, not %s" % (type(key).__name__, " or ".join(allowed), alg))
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    # client_secret_jwt MACs the signing input with the secret's UTF-8 bytes (RFC 7518 §3.2)
    sign = (
        functools.partial(hmac.digest, key.encode(), digest=_HMAC_ALGS[alg])
        if isinstance(key, str)
        else functools.partial(key.sign, alg=alg)
    )
    return _jws(b64url_encode(_json_compact(header)), _json_compact(claims), sign)


# =============================================================================
# Everything above is pure: no network, and the clock and randomness only
# where a default (now=None, jti=None, a fresh key or hedge) asks for them.
# Everything below does I/O.
# =============================================================================

# =============================================================================
# 12. HTTP messages: targets, headers, responses, challenges (RFC 9110)
# =============================================================================
#
# Why http.client and not urllib.request: the opener's defaults are wrong
# here. Its redirect handler copies Authorization and DPoP to wherever a
# Location header points, it reads proxies from the environment, it has
# file:/ftp:/data: handlers, and it turns 4xx into exceptions. http.client
# sends exactly the headers we give it, so we know what goes on the wire
# (and the session log shows it byte for byte, secrets masked).
#
# Why the HTTP modules are imported inside functions: ssl and http.client
# cost 15-30 ms to import; a program that only signs proofs should not pay
# that, and neither should the first signature of a fresh process.

if TYPE_CHECKING:
    _Pairs = List[Tuple[str, str]]  # header or form fields, in order
    # headers= and token_params=: a mapping, or (name, value) pairs in order
    _PairsArg = Union[Mapping[str, str], Sequence[Tuple[str, str]], None]
    _Text = Optional[str]
    _Body = Optional[bytes]

_MAX_TOKEN_BODY = 1 << 20
_MAX_API_BODY = 256 << 20
_MAX_LOGGED_BODY = 64 << 10
_REDIRECTS = (301, 302, 303, 307, 308)
# RFC 9110 §9.2.2, as the issue lists
_IDEMPOTENT = frozenset("GET HEAD PUT DELETE OPTIONS".split())
_USER_AGENT = "dpop.py/" + __version__
_AUTH_METHODS = tuple(
    "client_secret_post client_secret_basic client_secret_jwt private_key_jwt none".split()
)
_RESERVED_TOKEN_PARAMS = frozenset(
    "grant_type client_id client_secret client_assertion client_assertion_type".split()
)
_MASKED = "****"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")


def _is_loopback(host: str) -> bool:
    import ipaddress

    # Not *.localhost: RFC 6761 reserves it, but resolvers may still ask DNS.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolvable(host: str) -> bool:
    """Whether the resolver can take ``host`` (its IDNA codec raises UnicodeError otherwise): an IP
    literal, or a name of labels of 1 to 63 characters, 253 in all (a final dot allowed)."""
    name = host.rstrip(".")
    if host.startswith("["):
        return True
    return len(name) <= 253 and all(0 < len(label) < 64 for label in name.split("."))


class _Target:
    """Where one request goes: parsed, normalized and checked once (no __slots__: mypy --strict
    already refuses a misspelt attribute)."""

    def __init__(self, url: str) -> None:
        scheme, host, port, host_port, path, query = _split_url(url)
        if not _resolvable(host):
            raise DPoPError("bad_url", "bad host name: an empty label or one over 63 characters")
        if scheme == "http" and not _is_loopback(host):
            raise DPoPError(
                "insecure_url",
                "plain http is only allowed to loopback hosts; use https for %s" % host,
            )
        self.url = url  # as given: for the proof's htu and Response.url
        self.scheme, self.host, self.port, self.host_header = scheme, host, port, host_port
        self.origin = scheme + "://" + host_port
        self.path, self.target = path, path + query  # the request line's: path and query


class Headers:
    """HTTP headers: case-insensitive, several values per name, arrival order."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[Tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        lname = name.lower()
        return next((value for key, value in self._items if key.lower() == lname), default)

    def get_all(self, name: str) -> List[str]:
        """Every value of ``name``, in order."""
        lname = name.lower()
        return [value for key, value in self._items if key.lower() == lname]

    def items(self) -> List[Tuple[str, str]]:
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return "Headers(%r)" % [(k, _mask_header(k, v)) for k, v in self._items]


class Response:
    """An HTTP response: ``status``, ``reason``, ``headers``, ``body`` (bytes), ``url``.

    From ``request(..., stream=True)``, ``body`` is b"" (not read yet): use ``iter_bytes()``, or
    ``close()`` it."""

    __slots__ = "status reason headers body url version redirects _stream _chunks".split()

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers,
        body: bytes,
        url: str,
        version: str = "HTTP/1.1",
    ) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self.body, self.url, self.version = body, url, version
        self.redirects = 0  # how many redirects request() followed to get here
        self._stream: _BodyStream | None = None
        self._chunks: Iterator[bytes] | None = None

    def iter_bytes(self) -> Iterator[bytes]:
        """The body in chunks: as they arrive for a streamed response (once), else ``body``."""
        return self._chunks or iter([self.body] if self.body else [])

    def close(self) -> None:
        """Stop reading a streamed body (its connection is closed unless it was read to the end)."""
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ok(self) -> bool:
        """True for 2xx and 3xx."""
        return 200 <= self.status < 400

    @property
    def text(self) -> str:
        """The body decoded with the Content-Type charset (UTF-8 by default)."""
        import codecs

        match = re.search(
            r";\s*charset=\"?([A-Za-z0-9._-]+)", self.headers.get("Content-Type") or ""
        )
        try:
            name = codecs.lookup(match[1]).name if match else "utf-8"
        except LookupError:
            name = "utf-8"
        # Only plain character maps and UTFs: a server may name a codec that is
        # not text (rot13), strict (idna) or quadratic (punycode).
        ok = r"utf-(8|16|32)(-[lb]e)?|ascii|latin-1|iso8859-\d+|cp\d+|koi8-\w|mac-\w+"
        ok += r"|shift_jis|euc_\w+|gb\w+|big5\w*"
        return self.body.decode(name if re.fullmatch(ok, name) else "utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; DPoPError(bad_json) if it is not."""
        try:
            return json.loads(self.body.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise DPoPError("bad_json", "response body is not JSON") from None

    def __repr__(self) -> str:
        return "<dpop.Response %d %s, %d bytes>" % (self.status, self.reason, len(self.body))


def _http_date(value: str | None) -> float | None:
    """The POSIX time of an HTTP-date (RFC 9110 §5.6.7), None if it is not one (nor a real time:
    no 31 February, no second 60, no zone over 24 hours off)."""
    import email.utils

    try:  # not a date: ValueError, or TypeError before Python 3.10
        return email.utils.parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError, OverflowError):
        return None


# -- WWW-Authenticate (RFC 9110 §11.6.1) --------------------------------------

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# One item of a WWW-Authenticate field: an auth-param (token = token or quoted-string, an
# unterminated quote running to the end), a scheme with its token68 if it has one (skipped), junk up
# to the next comma, or the end (so that no match fails: a failed match restarts one character on,
# which made a run of commas quadratic).
_CHALLENGE_ITEM = re.compile(
    r"[ \t,]*(?:(?P<name>%s)[ \t]*=[ \t]*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"?|(?P<value>%s))"
    r"|(?P<scheme>%s)(?![ \t]*=)(?:[ \t]+[A-Za-z0-9._~+/-]+=*(?=[ \t]*(?:,|$)))?|[^,]+|$)"
    % (_TCHARS, _TCHARS, _TCHARS)
)


def _parse_challenges(values: Sequence[str]) -> List[Tuple[str, Dict[str, str]]]:
    """Challenges from WWW-Authenticate values (RFC 9110 §11.6.1): [(scheme lower-cased, params)].
    Several challenges per field and several fields, parameters in any order, quoted strings with
    escapes and commas inside, token68 credentials (skipped). Parameter names are lower-cased; the
    first occurrence of a name wins; junk is skipped up to the next comma."""
    challenges: List[Tuple[str, Dict[str, str]]] = []
    for text in values:
        params: Dict[str, str] | None = None  # the current challenge's
        for item in _CHALLENGE_ITEM.finditer(text):
            if item["scheme"]:
                params = {}
                challenges.append((item["scheme"].lower(), params))
            elif item["name"] and params is not None:
                quoted = item["quoted"]
                value = item["value"] if quoted is None else re.sub(r"\\(.)", r"\1", quoted)
                params.setdefault(item["name"].lower(), value)
    return challenges


def _refusals(headers: Headers) -> List[Dict[str, str]]:
    """The parameters of every challenge with an ``error``, DPoP challenges first."""
    challenges = _parse_challenges(headers.get_all("WWW-Authenticate"))
    ordered = sorted(challenges, key=lambda challenge: challenge[0] != "dpop")  # a stable sort
    return [params for _, params in ordered if "error" in params]


# A resource server's side of the same header: what to answer a refused proof with. Not on the
# proof path (verify_proof never calls it), so it lives here beside the parser.


def challenge_headers(
    *,
    error: str | None = None,
    error_description: str | None = None,
    nonce: str | None = None,
    algs: Sequence[str] = ("ES256",),
) -> Dict[str, str]:
    """Response headers for a resource server's 401 (RFC 9449 §7.1, §9).

    ``WWW-Authenticate: DPoP error="use_dpop_nonce", error_description="...",
    algs="ES256"`` and, with ``nonce``, ``DPoP-Nonce``. An authorization
    server answers 400 with a JSON body instead (§8) but sends the same
    DPoP-Nonce header.
    """
    if not all(isinstance(alg, str) and _TCHAR.fullmatch(alg) for alg in algs):
        raise ValueError("algs must be JWS algorithm names")
    params = []
    for name, value in {
        "error": error,
        "error_description": error_description,
        "algs": " ".join(algs),  # printable already: tokens
    }.items():
        if value is None:
            continue
        if re.fullmatch(r"[\x20-\x7e]*", value) is None:  # a header value is one line
            raise ValueError("%s must be printable ASCII, on one line" % name)
        # a quoted-string (RFC 9110 §5.6.4): backslash and double quote escaped, which is all that
        # json.dumps escapes in printable ASCII (it leaves "/" as it is)
        params.append("%s=%s" % (name, json.dumps(value)))
    headers = {"WWW-Authenticate": "DPoP " + ", ".join(params)}
    if nonce is not None:
        headers["DPoP-Nonce"] = _check_nonce(nonce)
    return headers


# =============================================================================
# 13. Inspect: what a proof, an access token or a refusal says (dpop inspect)
# =============================================================================
#
# RFC 9449 §4.3 (the proof checks), §7.1 and §8 (challenges, nonces); RFC 9068 (JWT access
# tokens); RFC 6749 §5.2 and RFC 6750 §3.1 (error codes); RFC 9110 §11.6.1 and §6.6.1
# (WWW-Authenticate, Date); RFC 9728 §5.1 (resource_metadata).
#
# Trusts: sections 6, 9, 10 and 12. Guarantees: a report (a dict: what `dpop inspect --json`
# prints) of a DPoP proof, a JWT access token, a WWW-Authenticate value or an HTTP response, with
# each check as passed (True), failed (False) or not checked (None) and why. A proof's checks are
# verify_proof's own, run with a judge that records them all: none is written here again.
# Nothing secret goes into a report: an access token is shown as its hash (the ath a proof
# carries) unless the caller asks for it, and of a proof only its header and claims, never its
# signature (the proof itself is a credential until it expires). Pure: the time and any JWK Set
# are arguments.
#
# Decisions: a JWS with a jwk or typ dpop+jwt in its header is a proof, any other JWS an access
# token. The clock check uses verify_proof's default window (iat from 60 s old to 5 s ahead). A
# check that needs context that was not given is not checked, which is not a failure, so a proof
# alone can pass. Rejected: checking a JWT's signature with a key from its own header (that proves
# nothing), and fetching a JWK Set from the token's iss (the user names the JWK Set, as the user
# names the token endpoint).

_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# the checks that need context, by the verify_proof argument that gives it
_CHECKED_BY = {
    "method": "proof_htm",
    "url": "proof_htu",
    "nonce": "proof_nonce",
    "access_token": "proof_ath",
    "jkt": "proof_binding",
}
# what DPoP's error codes (RFC 9449 §7.1, §8; RFC 6750 §3.1's invalid_token) and challenge
# parameters mean to a client; the other codes are OAuth's own (RFC 6749 §5.2, RFC 6750 §3.1)
_MEANINGS = {
    "use_dpop_nonce": "the server wants its DPoP-Nonce in the proof: repeat with a new proof",
    "invalid_dpop_proof": "the proof was refused: inspect it with --method and --url",
    "invalid_token": "the access token was refused: expired, revoked, for another API, or bound"
    " to another key (cnf.jkt)",
    "algs": "the algorithms the server takes for proofs",
    "resource_metadata": "the API's metadata (RFC 9728): dpop finds its authorization server there",
}


def _when(seconds: Any, now: float) -> str:
    """A NumericDate as a UTC date and its distance from ``now``; anything else said as such."""
    # None and a str are TypeError (gmtime(None) is now: the subtraction refuses it), NaN
    # ValueError, 1e300 OverflowError (OSError on some platforms)
    # (the distance: "+90 s" is in 90 seconds, "-600 s" ten minutes ago)
    try:
        return "%s (%+d s)" % (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds)),
            round(seconds - now),
        )
    except (TypeError, ValueError, OverflowError, OSError):
        return "not a date: %s" % _short_repr(seconds)


def _inspect_proof(proof: str, now: float, **context: str | None) -> Dict[str, Any]:
    """A proof's header and claims, and verify_proof's checks, each recorded. ``context`` is
    verify_proof's method, url, nonce, access_token and jkt: a check whose value is None runs on
    a stand-in and is reported as not checked."""
    report: Dict[str, Any] = {"kind": "DPoP proof"}
    claims: Dict[str, Any] = {}
    try:  # shown as they are, before any check, so a refused proof still shows what it holds
        report["header"], payload, _, _ = _jws_split(proof, _MAX_PROOF)
        claims = report["claims"] = _json_object(payload, "claims")
        report["iat"] = _when(claims.get("iat"), now)
    except DPoPError:
        pass
    unchecked = {code: name for name, code in _CHECKED_BY.items() if context.get(name) is None}
    checks: List[Tuple[str, bool | None, str]] = []

    def judge(code: str, passed: bool, reason: str) -> None:
        if passed:
            reason = ""
        if code == "proof_htu":  # both sides as they were compared: normalised (RFC 3986 §6.2.2)
            reason = "%s (proof) %s %s (request)" % (
                _normal_htu(claims["htu"]),
                "==" if passed else "!=",
                _normal_htu(given["url"]),
            )
        if code not in unchecked:
            checks.append((code, passed, reason))

    given: Dict[str, Any] = {"method": "GET", "url": "https://stand-in.invalid/", "jkt": ""}
    given.update((name, value) for name, value in context.items() if value is not None)
    try:
        verified = verify_proof(
            proof, now=now, algorithms=("ES256",) + _RSA_ALGS, _judge=judge, **given
        )
        report["jkt"] = verified.jkt
    except DPoPError as exc:  # a check that the later ones need: they did not run
        checks.append((exc.code, False, exc.message + "; the later checks could not run"))
    checks += [(code, None, "not checked: no %s given" % name) for code, name in unchecked.items()]
    report["checks"] = checks
    return report


def _jwks_verifies(jwks: Any, header: Dict[str, Any], signed: bytes, signature: bytes) -> bool:
    """Whether a key of the JWK Set ``jwks`` (RFC 7517 §5) verifies ``signature`` with the header's
    alg: ES256, RS256 or PS256. Every key is tried (a kid only says which one to try first, and
    the set is the issuer's: any of its keys is trusted alike)."""
    keys = jwks.get("keys")  # (a JSON object: _json_object read it)
    if not isinstance(keys, list):
        raise DPoPError("bad_key", "a JWK Set is a JSON object with a list of keys")
    alg = str(header.get("alg"))
    for jwk in keys:
        try:
            # an alg neither names is no key's: RSAKey.verify says False
            key = _key_from_jwk(jwk) if alg == "ES256" else load_rsa_key(jwk)
            if key.verify(signed, signature, alg):
                return True
        # not a JWK (not even an object), or one of another type or curve
        except (DPoPError, TypeError, AttributeError):
            continue
    return False


def _inspect_token(
    token: str,
    now: float,
    jkt: str | None = None,
    jwks: Any = None,
    show: bool = False,
) -> Dict[str, Any]:
    """A JWT access token's header and claims (RFC 9068), its times and cnf.jkt; checks: not
    expired, DPoP-bound, bound to ``jkt`` (the client key's thumbprint) and signed by a key of
    the JWK Set ``jwks``, when they are given."""
    header, payload, signature, signed = _jws_split(token, _MAX_JWS)
    claims = _json_object(payload, "claims")
    report: Dict[str, Any] = {"kind": "access token (JWT)", "header": header, "claims": claims}
    # the token is a credential: by default only its hash, which a proof's ath can be matched to
    report["token"] = token if show else "sha256 " + access_token_hash(token)
    for name in ("iat", "exp"):
        if name in claims:
            report[name] = _when(claims[name], now)
    cnf = claims.get("cnf")
    bound = report["cnf.jkt"] = cnf.get("jkt") if isinstance(cnf, dict) else None
    exp = claims.get("exp")
    live = isinstance(exp, (int, float)) and exp > now  # (True > now is False)
    checks = [
        ("token_exp", live, "" if live else "expired, or no exp"),
        ("token_bound", bound is not None, "" if bound else "no cnf.jkt: not DPoP-bound"),
        ("token_jkt", None if jkt is None else bound == jkt, "cnf.jkt against the key's jkt"),
        ("token_signature", None, "not checked: give --jwks FILE or URL"),
    ]
    if jwks is not None:
        verified = _jwks_verifies(jwks, header, signed, signature)
        checks[-1] = (
            "token_signature",
            verified,
            "by a key of the JWK Set, alg %s" % header.get("alg"),
        )
    report["checks"] = checks
    return report


def _inspect_response(text: str, now: float) -> Dict[str, Any]:
    """What a WWW-Authenticate value, or a whole HTTP response (status line, headers, maybe a JSON
    body), says: each challenge and error code explained, the DPoP-Nonce, and the server's clock
    from its Date. Checks: the status is not 4xx or 5xx, and no error code."""
    import email

    checks = []
    if text.startswith("HTTP/"):
        status, _, text = text.replace("\r\n", "\n").partition("\n")
        report: Dict[str, Any] = {"kind": "HTTP response", "status": status}
        checks.append(("status", not re.match(r"HTTP/\S+ [45]", status), status))
    # an opaque access token would parse as a challenge named by the token: refused, not shown
    elif re.match(r"(?i)(dpop|bearer)([ \t]|$)", text):
        report, text = {"kind": "WWW-Authenticate"}, "WWW-Authenticate: " + text
    else:
        why = "not a DPoP proof, a JWT, a DPoP or Bearer challenge, or an HTTP response"
        raise DPoPError("usage", why)
    fields = email.message_from_string(text)  # the header fields, then the body
    errors = []
    try:  # an authorization server's refusal is a JSON body (RFC 6749 §5.2)
        body = str(fields.get_payload()).encode("utf-8", "replace")
        errors.append(_json_object(body, "body")["error"])
    except (DPoPError, KeyError):
        pass
    for scheme, params in _parse_challenges(fields.get_all("WWW-Authenticate") or []):
        if scheme not in ("dpop", "bearer"):  # (from input: another name may be a token's)
            continue
        report[scheme + " challenge"] = params
        errors += [params["error"]] if "error" in params else []
        for name in ("algs", "resource_metadata"):
            if name in params:
                report[name] = "%s: %s" % (params[name], _MEANINGS[name])
    for error in errors:
        meaning = _MEANINGS.get(str(error), "an OAuth error (RFC 6749 §5.2, RFC 6750 §3.1)")
        checks.append(("error", False, "%s: %s" % (_short_repr(error), meaning)))
    if fields["DPoP-Nonce"] is not None:  # the nonce the next proof to this server must carry
        report["DPoP-Nonce"] = fields["DPoP-Nonce"]
    server_time = _http_date(fields["Date"])
    if server_time is not None:  # (verify_proof's default window: iat 60 s old to 5 s ahead)
        offset = round(server_time - now)
        report["clock"] = "the server's clock is %+d s from this machine's (Date)" % offset
    report["checks"] = checks
    return report


def _verdict(sent: Mapping[str, str], method: str, url: str, jkt: str, answer: Headers) -> str:
    """The line `dpop -v` prints after a refused request (``sent``: its headers, ``answer``: the
    response's): the checks its proof fails, judged at the server's time (its Date, else this
    clock). Not its nonce: a server may send a new DPoP-Nonce with any answer, and a refusal for
    want of one says so itself (use_dpop_nonce, in the log just above)."""
    server_time = _http_date(answer.get("Date"))
    auth = sent.get("Authorization", "")  # a token request's may be Basic, or none
    report = _inspect_proof(
        sent["DPoP"],
        server_time or time.time(),
        method=method,
        url=url,
        access_token=auth[5:] if auth.startswith("DPoP ") else None,
        jkt=jkt,
    )
    failed = ["%s (%s)" % (code, why) for code, passed, why in report["checks"] if passed is False]
    return "RFC 9449 §4.3 checks the proof fails here: %s" % ("; ".join(failed) or "none")


# =============================================================================
# 14. Session log: every exchange, secrets masked, controls escaped
# =============================================================================
#
# What a Client sent and received, for --session-log and Client(session_log=...). Every secret the
# client knows goes through _Scrubber before a line is written.


def _mask_header(name: str, value: str) -> str:
    lname = name.lower()
    if lname in ("authorization", "proxy-authorization"):
        scheme, _, rest = value.partition(" ")
        return scheme + " " + _MASKED if rest else _MASKED
    if lname in ("dpop", "cookie", "set-cookie", "x-api-key", "api-key"):
        return _MASKED
    return value


_FORM_SECRET_NAMES = "client_secret|client_assertion|refresh_token|password|code_verifier|assertion"
# The fields that carry secrets, in any logged body: a form's (group 1: what stays in front of the
# masked value) and a JSON string member holding a token (group 2: likewise). A JSON value is
# matched escape by escape (\\. as a unit), so no \u escape or \" inside it ends the match early.
_SECRET_FIELDS = re.compile(
    r"((?:^|&)(?:%s)=)[^&]*" % _FORM_SECRET_NAMES
    + r'|("(?:access_token|refresh_token|id_token)"\s*:\s*")(?:[^"\\]|\\.)*(?=")'
)


class _Scrubber:
    """Replaces every occurrence of the secrets it was given (and their URL-encoded forms) by ****,
    whatever surrounds them: a word-boundary rule let "token <T>." and "/t/<T>/x" through. The price
    is that a short secret also masks innocent text (a secret "api" masks "/api/"); that is the safe
    side, and real secrets are long."""

    def __init__(self) -> None:
        self._lasting: List[str] = []  # the client's own secrets
        # issued tokens: only the last 8, as a client may refresh forever
        self._recent: List[str] = []
        self.others: List[_Scrubber] = []  # applied too (the CLI adds its client's)

    def add(self, secret: str, lasting: bool = True) -> None:
        from urllib.parse import quote, quote_plus

        kept = self._lasting if lasting else self._recent
        escaped = json.dumps(secret)[1:-1]  # as a JSON string spells it, "/" also as "\/"
        raw = secret.encode("utf-8", "surrogatepass")  # a server's text may hold a lone surrogate
        for form in (
            secret,
            quote_plus(raw),
            quote(raw, safe=""),
            escaped,
            escaped.replace("/", "\\/"),
        ):
            if form and form not in kept:
                kept.append(form)
        del self._recent[:-40]  # 8 secrets, 5 forms each

    def learn(self, data: Dict[str, Any]) -> None:
        """The tokens ``data`` names are secrets, for logs and errors: a token response's, a cache
        entry's, and any JSON response's that the session log writes."""
        for name in ("access_token", "refresh_token", "id_token"):
            value = data.get(name)
            if isinstance(value, str):  # (an empty one masks nothing: add skips it)
                self.add(value, lasting=False)

    def __call__(self, text: str) -> str:
        # str.replace, longest first (a secret that holds another is masked whole), over a few
        # dozen strings sorted at every call: a regex alternation of long tokens took ~90 ms to
        # compile at every new token
        for secret in sorted(set(self._lasting + self._recent), key=len, reverse=True):
            text = text.replace(secret, _MASKED)
        for other in self.others:
            text = other(text)
        return text


def _open_private(path: str | os.PathLike[str]) -> Any:
    """``path`` opened for appending text, readable by its owner only: created 0600, an existing
    file tightened to 0600, a symlink refused (O_NOFOLLOW)."""
    import errno
    import stat

    name, fd = os.fspath(path), -1
    try:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & 0o077 and hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
    except OSError as exc:  # opening it, or tightening an existing file
        if fd >= 0:
            os.close(fd)
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise DPoPError(
            "io_error", "cannot open session log %s (owner only, mode 0600): %s" % (name, why)
        ) from None
    return os.fdopen(fd, "a", encoding="utf-8")


_LOG_ESCAPES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _log_escape(match: Any) -> str:
    code = ord(match[0])
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


class _SessionLog:
    """Every request and response, in order, secrets replaced by ****, in two layers: the fields
    that carry secrets are masked by structure (Authorization and DPoP headers; in any body, a
    form's client_secret and the like and a JSON member's token: _SECRET_FIELDS), and every
    secret the client knows (client secret, tokens it was issued) is also scrubbed wherever else
    it appears."""

    def __init__(self, sink: Any, scrub: _Scrubber) -> None:
        self._own = isinstance(sink, (str, os.PathLike))
        if self._own:
            sink = _open_private(sink)
        if not callable(getattr(sink, "write", None)):
            raise _type_error("session_log", "a path or a text file object", sink)
        self._sink, self._scrub, self._lock = sink, scrub, threading.Lock()

    def _body(self, body: _Body) -> str:
        """``body`` as logged: its secret fields masked (_SECRET_FIELDS, whatever the body is: a
        form's client_secret or password, a JSON member access_token, refresh_token or id_token,
        as they are spelt there), then cut to 64 KiB. Masked
        whole, then cut: a cut cannot leave part of a secret, nor hide the name that marks it."""
        if not body:
            return ""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "<%d bytes of binary data>\n" % len(body)
        text = _SECRET_FIELDS.sub(r"\g<1>\g<2>" + _MASKED, text)[:_MAX_LOGGED_BODY]
        more = len(body) - _MAX_LOGGED_BODY
        return text + ("\n<%d more bytes not logged>" % more if more > 0 else "") + "\n"

    def _write(self, kind: str, first: str, headers: Sequence[Tuple[str, str]], body: str) -> None:
        """An entry: its ``first`` line, then ``headers`` (their secrets masked), then ``body``."""
        lines = [first] + ["%s: %s" % (name, _mask_header(name, value)) for name, value in headers]
        now = time.time()
        stamp = "%s.%03dZ" % (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
            now * 1000 % 1000,
        )
        # Secrets are masked first, as they came. Then what a server sent cannot fake the log's own
        # entry lines, nor reach a reader's terminal as escapes: every control character but \t and
        # \n, and every other line break (\r, \v, \x85, \u2028...), is written as an escape, and a
        # line that starts like an entry is indented.
        content = self._scrub("\n".join(lines) + "\n\n" + body)
        content = _LOG_ESCAPES.sub(_log_escape, content)
        text = "---- %s %s ----\n%s" % (kind, stamp, re.sub(r"(?m)^----", " ----", content))
        with self._lock:
            try:
                self._sink.write(text)
                self._sink.flush()
            except OSError as exc:  # not a network failure: the log's own (a full disk)
                raise DPoPError(
                    "io_error", "cannot write the session log: %s" % exc.strerror
                ) from None

    def note(self, kind: str, text: str) -> None:
        self._write(kind, text, [], "")

    def request(self, method: str, target: _Target, headers: _Pairs, body: _Body) -> None:
        first = "%s %s HTTP/1.1" % (method, target.target)
        self._write("Sending", first, headers, self._body(body))

    def response(self, response: Response, learn: bool) -> None:
        first = "%s %d %s" % (response.version, response.status, response.reason)
        body = "<body streamed to the caller, not logged>\n"
        if response._stream is None:
            # With ``learn`` (an answer to a request that carried no access token: the token
            # endpoint's, before the Client parses it), its tokens are secrets from here on,
            # wherever they appear however the JSON spells them. Never an API's answers: the
            # scrubber keeps only the last few tokens, and an API's token-named fields must not
            # push out the client's own (_SECRET_FIELDS masks those fields in its log entry).
            # (a body larger than a token response may be is never one: not parsed, at any size)
            try:  # the strict parser: a server's nesting depth or lone surrogates cannot raise
                if learn and len(response.body) <= _MAX_TOKEN_BODY:
                    self._scrub.learn(_json_object(response.body, "response"))
            except DPoPError:
                pass  # not a JSON object: no tokens to learn
            body = self._body(response.body)
        self._write("Received", first, response.headers.items(), body)

    def close(self) -> None:
        if self._own:
            self._sink.close()


# =============================================================================
# 15. Connections: proxies (curl's rules), CONNECT tunnels, TLS, keep-alive, bodies
# =============================================================================


_PROXY_URL = re.compile(
    r"(?:([A-Za-z][A-Za-z0-9+.-]*)://)?"  # scheme
    r"(?:([!-.0-?A-~]*)@)?"  # userinfo
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?"  # host, port
)


class _Proxy:
    """An http:// proxy; userinfo (percent-decoded) becomes Proxy-Authorization: Basic. With no
    port, 1080 as in curl. ``shown`` has the password masked. No __slots__: mypy --strict already
    refuses a misspelt attribute."""

    # without userinfo: no Proxy-Authorization, nothing for the scrubber (set on the instance)
    auth: _Text = None
    secrets: Tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote

        match = _PROXY_URL.fullmatch(url.strip())
        if match is None:
            raise ValueError("not a proxy URL")  # never the URL itself: it may hold a password
        scheme, userinfo, host, port = match.groups()
        if (scheme or "http").lower() != "http":
            raise ValueError("only http:// proxies are supported")
        self.port = int(port or 1080)
        if not 0 < self.port < 65536:
            raise ValueError("not a proxy URL")
        if not _resolvable(host):
            raise ValueError("bad proxy host name: an empty label or one over 63 characters")
        self.host, self.shown = host.strip("[]"), "http://%s:%d" % (host, self.port)
        if userinfo is not None:
            user, _, password = userinfo.partition(":")
            pair = unquote(user) + ":" + unquote(password)
            self.auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
            self.shown = "http://%s:%s@%s:%d" % (user, _MASKED, host, self.port)
            # an empty password is skipped by the scrubber (it skips empty forms)
            self.secrets = (password, unquote(password), self.auth[6:])


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """True when the NO_PROXY list (commas or spaces) names ``host``: "*", the host or a parent
    domain (a leading dot changes nothing), an IP address or CIDR block (addresses are never
    suffix-matched), each with an optional :PORT."""
    import ipaddress

    host = host.strip("[]").lower()
    try:
        address: Any = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.lower().replace(",", " ").split():
        if entry == "*":
            return True
        name, want = entry, ""
        if entry.count(":") == 1 or (entry.startswith("[") and "]:" in entry):
            name, _, want = entry.rpartition(":")
        name = name.strip("[]").lstrip(".")
        if not name or (want and want != str(port)):
            continue
        try:  # an address or block matches addresses only; a name, names only
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            if address is None and (host == name or host.endswith("." + name)):
                return True
            continue
        if address is not None and address in network:
            return True
    return False


_MAX_TUNNEL_HEAD = 16 << 10


def _tunnel(proxy: _Proxy, authority: str, deadline: float) -> Any:
    """A socket to ``authority`` ("host:port", IPv6 in brackets) through ``proxy``'s CONNECT (RFC
    9110 §9.3.6), before ``deadline`` (time.monotonic()) and with at most 16 KiB of answer head: a
    proxy that trickles header lines cannot hold the connection past the connect timeout
    (http.client before 3.12 reads them without a limit). The socket is closed on any failure;
    returned, its timeout is what is left before ``deadline``, for the TLS handshake that
    HTTPSConnection.connect() then makes in it."""
    import socket

    request = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (authority, authority)
    if proxy.auth:
        request += "Proxy-Authorization: %s\r\n" % proxy.auth
    head, sock = b"", None
    try:
        sock = socket.create_connection(
            (proxy.host, proxy.port), timeout=max(0.001, deadline - time.monotonic())
        )
        sock.sendall((request + "\r\n").encode("ascii"))
        # the head, until it ends, the proxy closes the connection, or it is over 16 KiB
        while b"\r\n\r\n" not in head and len(head) <= _MAX_TUNNEL_HEAD:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        answer, ended, after = head.partition(b"\r\n\r\n")
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        if not ended and len(head) > _MAX_TUNNEL_HEAD:
            why = " answered CONNECT with over 16 KiB of header lines"
        elif not ended:
            why = " closed the connection before answering CONNECT"
        # after: the origin speaks last
        elif re.fullmatch(r"HTTP/1\.[01] 2[0-9][0-9]( .*)?", status) is None or after:
            # the status line, or what came instead of one (_printable: section 21, called at run
            # time)
            why = " refused CONNECT %s: %s" % (authority, _printable(status[:200]))
        else:
            # what is left for the TLS handshake to the origin, which follows in the tunnel
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            return sock
    except OSError as exc:  # connecting to the proxy, or waiting for its answer
        timed_out = isinstance(exc, socket.timeout)
        why = ": CONNECT timed out (--connect-timeout)" if timed_out else " failed" + _reason(exc)
    if sock is not None:
        sock.close()
    raise DPoPError("proxy", "proxy %s%s" % (proxy.shown, why))


def _still_open(sock: Any) -> bool:
    """Whether an idle connection's socket is still open: nothing to read, neither data nor the
    server's FIN. An idle connection always has its socket: only one whose response did not say
    will_close goes back to the pool, and http.client drops the socket only on close().
    selectors picks the system's best (epoll, kqueue, poll; select on Windows): select() alone
    cannot take a descriptor over 1023."""
    import selectors

    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            return not selector.select(0)
    except (OSError, ValueError):  # a closed socket (fileno -1) is a ValueError
        return False


class _Pool:
    """Idle keep-alive connections per origin (whether a proxy is used follows from the origin and
    this pool's settings, so it needs no place in the key). The TLS context is made on the
    first https connection: loading the CA store costs ~30 ms, which a run against loopback http
    never needs. A new connection (its proxy tunnel and TLS handshake too) has ``connect`` seconds;
    then each read or write has ``timeout``. ``client_cert``: the client certificate file, or
    (certificate, key) files. A CA or certificate file that is missing or broken fails here, not at
    the first https request."""

    def __init__(
        self,
        connect: float,
        timeout: float,
        context: Any,
        cafile: _Text,
        client_cert: str | os.PathLike[str] | Tuple[str, str] | None,
        proxy: _Proxy | None,
        no_proxy: str,
    ) -> None:
        self._connect, self.timeout, self._context, self._cafile = connect, timeout, context, cafile
        self._proxy, self._no_proxy = proxy, no_proxy
        self._idle: Dict[str, List[Any]] = {}
        self._lock = threading.Lock()
        if client_cert is not None:  # loaded here, on the context made now
            pair = client_cert if isinstance(client_cert, tuple) else (client_cert, None)
            # a certificate that is not a path (None, 42) is ssl's TypeError, at load_cert_chain
            if context is not None or len(pair) != 2:
                raise TypeError(
                    "client_cert= takes a file or (certificate, key) files, without ssl_context="
                )
            cert, key = pair
            try:  # RFC 8705 §2: shown to every server that asks for one; an encrypted key gets ""
                # rather than a prompt on the terminal
                self._tls().load_cert_chain(cert, key, password="")
            except OSError as exc:  # ssl.SSLError too, here and in _tls
                raise DPoPError(
                    "tls", "cannot load client certificate %s%s" % (cert, _reason(exc))
                ) from None
        elif cafile is not None:
            self._tls()

    def _tls(self) -> Any:
        import ssl

        with self._lock:
            if self._context is None:
                try:
                    self._context = ssl.create_default_context(cafile=self._cafile)
                except OSError as exc:
                    why = "cannot load CA certificates %s%s" % (self._cafile or "", _reason(exc))
                    raise DPoPError("tls", why) from None
            return self._context

    def get(self, target: _Target, note: Callable[[str, _Text], None]) -> Tuple[Any, bool]:
        """An idle connection (True) or a new one (False), not yet connected: its connect() opens
        the proxy tunnel, if any, and TLS to the origin."""
        import http.client

        while True:
            with self._lock:
                idle = self._idle.get(target.origin)
                if not idle:
                    break
                conn = idle.pop()
            if _still_open(conn.sock):
                return conn, True
            conn.close()  # the server closed it while it was idle: found before a byte is written
        host, proxy = target.host.strip("[]"), self._proxy
        # plain http (loopback only) never goes to a proxy: it would see the credentials
        if target.scheme == "http":
            return http.client.HTTPConnection(host, target.port, timeout=self._connect), False
        conn = http.client.HTTPSConnection(
            host, target.port, timeout=self._connect, context=self._tls()
        )
        if proxy is None or _bypass(target.host, target.port, self._no_proxy):
            return conn, False
        # target.host keeps an IPv6 literal's brackets
        authority = "%s:%d" % (target.host, target.port)
        auth = "\nProxy-Authorization: Basic " + _MASKED if proxy.auth else ""
        note("CONNECT %s via %s%s" % (authority, proxy.shown, auth), "Proxy")
        # connect() opens the tunnel in place of a TCP connection, then makes TLS to the origin in
        # it (with the context and server_hostname above); a reconnect tunnels again, never around
        # the proxy. The whole set-up (tunnel and TLS handshake) has the connect timeout: _tunnel
        # leaves the socket's timeout at what is left of it. (_create_connection is an attribute of
        # every HTTPConnection since Python 3.4, set in __init__ and called by connect(); typeshed
        # does not declare it.)
        conn._create_connection = lambda *_: _tunnel(  # type: ignore[attr-defined]
            proxy, authority, time.monotonic() + self._connect
        )
        return conn, False

    def put(self, target: _Target, conn: Any) -> None:
        with self._lock:
            self._idle.setdefault(target.origin, []).append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _inflater(encoding: _Text) -> Any:
    """A gzip or deflate Content-Encoding's decompressor; None for identity and unknown codings
    (passed on as is)."""
    import zlib

    coding = (encoding or "").strip().lower()
    if coding not in ("gzip", "x-gzip", "deflate"):
        return None
    return zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS)


class _BodyStream:
    """A response body read as it arrives, in decoded chunks of at most 64 KiB, so memory stays flat
    whatever its size. Its connection is released once: back to the pool when the body was read to
    its end, closed otherwise (closing early, an error, or never reading)."""

    def __init__(self, resp: Any, encoding: _Text, release: Callable[[bool], None]) -> None:
        self._resp, self._encoding = resp, encoding
        self._release: Callable[[bool], None] | None = release

    def close(self, complete: bool = False) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(complete)

    def __iter__(self) -> Iterator[bytes]:
        import http.client
        import socket
        import zlib

        inflater = _inflater(self._encoding)
        complete = False
        try:
            while raw := self._resp.read(65536):
                if inflater is None:
                    yield raw
                    continue
                # 64 KiB at a time: a small gzip body may inflate to gigabytes. What the first
                # call left unread comes back as unconsumed_tail.
                while data := inflater.decompress(raw, 65536):
                    yield data
                    raw = inflater.unconsumed_tail
            # http.client's read(amt) ends quietly when the connection closes short of
            # Content-Length (it only counts down resp.length): a truncated body must not pass for
            # a whole one.
            if self._resp.length:
                raise http.client.IncompleteRead(b"", self._resp.length)
            if inflater is not None:
                if tail := inflater.flush():
                    yield tail
                # its stream must end with the body, not before or after
                if not inflater.eof or inflater.unused_data:
                    why = "%s response body is cut short or followed by junk" % self._encoding
                    raise DPoPError("bad_response", why)
            complete = True
        except zlib.error:
            raise DPoPError(
                "bad_response", "response body is not valid %s" % self._encoding
            ) from None
        except socket.timeout:
            raise DPoPError("timeout", "reading the response body timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DPoPError(
                "network", "the connection broke while reading the response body" + _reason(exc)
            ) from None
        except ValueError:  # http.client's read() of a negative chunk size
            raise DPoPError(
                "bad_response", "the response body's chunked framing is malformed"
            ) from None
        finally:
            self.close(complete)

    def read(self, limit: int) -> bytes:
        """The whole (decoded) body, in memory; more than ``limit`` bytes is response_too_large."""
        data = bytearray()
        for chunk in self:
            data += chunk
            if len(data) > limit:  # at most one chunk (64 KiB) over
                self.close()
                raise DPoPError(
                    "response_too_large", "response body is larger than %d bytes" % limit
                )
        return bytes(data)


# =============================================================================
# 16. The token cache: access tokens kept across runs (FileTokenCache)
# =============================================================================


# Opening a cache file: never through a symbolic link, and never waiting on a FIFO (there is no
# writer or reader to wait for: it is refused as not a regular file once open)
_OPEN_NO_LINK_NO_WAIT = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class FileTokenCache:
    """Access tokens kept across processes in one JSON file (``Client(token_cache=...)``).

    The file is mode 0600 in a 0700 folder, replaced atomically (a temporary file and os.replace),
    and read and written under an advisory lock (fcntl; none on Windows) so that processes started
    together fetch one token. A file that is not a regular file owned by this user, is readable by
    others, or does not parse is ignored with one warning, never trusted. Any object with the same
    ``get(key)``, ``set(key, entry, ttl)`` and ``delete(key)`` can stand in (a shared store);
    ``lock()`` is optional."""

    # class defaults, set on the instance when they change:
    # a path that is not a regular file (a FIFO, a device): the run goes on without the cache
    _off = False
    _warned = False  # whether _warn_once has warned

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        warn: Callable[[str], None] | None = None,
    ):
        if path is None:
            home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            path = os.path.join(home, "dpop", "tokens.json")
        self.path, self._warn = os.fspath(path), warn

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            import warnings

            self._warned = True
            (self._warn or (lambda text: warnings.warn(text, RuntimeWarning, stacklevel=4)))(
                "token cache %s ignored: %s" % (self.path, why)
            )

    def _read(self) -> Dict[str, Any]:
        import stat

        if self._off:
            return {}
        try:
            fd = os.open(self.path, os.O_RDONLY | _OPEN_NO_LINK_NO_WAIT)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            why = exc.strerror or "cannot open it"
        else:
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(fd)
                uid = getattr(os, "geteuid", lambda: info.st_uid)()
                self._off = not stat.S_ISREG(info.st_mode)
                if self._off:
                    why = "not a regular file"
                elif info.st_mode & 0o077 or info.st_uid != uid:
                    why = "not a private file of this user (mode 0600)"
                else:
                    try:
                        return _json_object(f.read(1 << 20), "token cache")
                    except DPoPError:
                        why = "not a JSON object"
        self._warn_once(why)
        return {}

    def _folder(self) -> str:
        """The cache file's folder, made (0700) if it is missing: for the file and its lock."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return folder

    def _write(self, entries: Dict[str, Any]) -> None:
        import tempfile

        if self._off:
            return
        try:
            fd, temporary = tempfile.mkstemp(dir=self._folder(), prefix=".tokens-")  # created 0600
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f)
            os.replace(temporary, self.path)
        except OSError as exc:
            raise DPoPError(
                "io_error", "cannot write token cache %s: %s" % (self.path, exc.strerror)
            ) from None

    def get(self, key: str) -> Any:
        # as any store's answer, checked by the Client (_cached_token, _keep_nonces) before use
        return self._read().get(key)

    def set(self, key: str, entry: Dict[str, Any], ttl: float) -> None:
        # the entry as given: the Client stamps its expiry (until) in it; expired ones are dropped
        entries = {k: v for k, v in self._read().items() if _usable_entry(v)}
        entries[key] = entry
        self._write(entries)

    def delete(self, key: str) -> None:
        entries = self._read()
        if entries.pop(key, None) is not None:
            self._write(entries)

    def lock(self) -> Any:
        """An exclusive advisory lock on PATH.lock, taken now; a context manager that releases it
        (closing the file releases the lock)."""
        import contextlib

        held = contextlib.ExitStack()
        try:
            self._folder()
            flags = os.O_WRONLY | os.O_CREAT | _OPEN_NO_LINK_NO_WAIT
            fd = os.open(self.path + ".lock", flags, 0o600)
            held.callback(os.close, fd)
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover  (Windows: no advisory lock)
            pass
        # a FIFO no one reads, a folder, no permission: the run goes on without the cache
        except OSError as exc:
            self._off = True
            self._warn_once("cannot lock it: %s" % exc.strerror)
        return held

    def __repr__(self) -> str:
        return "<dpop.FileTokenCache %s>" % self.path


def _usable_entry(entry: Any) -> bool:
    """A token cache entry that is well formed and not expired (a file's content is never
    trusted)."""
    if not isinstance(entry, dict):
        return False
    until, token, nonces = entry.get("until", 0), entry.get("access_token"), entry.get("nonces")
    now = time.time()
    # inf or 1e300: malformed, not "never"
    fresh = type(until) in (int, float) and now < until < now + 2**31
    tidy = isinstance(nonces, dict) and all(map(_good_nonce, nonces.values()))
    return fresh and tidy and isinstance(token, str) and _TOKEN68.fullmatch(token) is not None


def _good_nonce(value: Any) -> bool:
    """Whether ``value`` may go into a proof as a nonce: section 8's _check_nonce, as a test."""
    try:
        _check_nonce(value)
    except (TypeError, DPoPError):
        return False
    return True


# =============================================================================
# 17. Client: client_credentials with DPoP (RFC 6749 §4.4, RFC 9449 §5-§9)
# =============================================================================
#
# Decisions, each visible to users:
#  * A token response without expires_in is used until an API answers
#    401 invalid_token; then one new token is fetched and the request retried.
#  * A token is replaced once it is within refresh_margin seconds of expiry,
#    the margin capped at half the token's lifetime (a 10 s token is reused
#    for 5 s, not never).
#  * Plain http is refused except to loopback hosts (localhost, 127/8, ::1).
#  * Proxies: curl's variables and rules (_Proxy, _bypass), https origins
#    only (loopback http never) and through a CONNECT tunnel: the proxy never
#    sees a request line, Authorization, DPoP or a client credential. Only
#    http:// proxies (TLS to the proxy would be TLS inside TLS, which
#    http.client cannot do). Proxy failures (unreachable, CONNECT refused,
#    not answered in time or not in HTTP) are not retried; once the tunnel is
#    open, a connection that breaks or stalls is the origin's failure
#    (network, timeout), retried like any other.
#  * 429 and 503 are retried (Retry-After, else backoff with jitter), and so
#    are connection failures: always at the token endpoint, for the API only
#    where a repeat cannot hurt (idempotent methods, or nothing was sent).
#  * A pooled keep-alive connection that the server closed while idle is
#    retried once on a new connection, with a fresh proof.
#  * Token endpoint and discovery bodies are capped at 1 MiB, API bodies at
#    256 MiB (after gzip decoding); larger ones raise response_too_large.


class _Token:
    """An access token and when to replace it; its repr never shows the value. (No __slots__: a
    client holds one or two, and mypy --strict already refuses a misspelt attribute.)"""

    def __init__(self, value: str, refresh_at: float | None, lifetime: float | None = None) -> None:
        # refresh_at: time.time(), as the cache's until (None: until refused);
        # lifetime: seconds left when it came
        self.value, self.refresh_at, self.lifetime = value, refresh_at, lifetime

    def __repr__(self) -> str:
        return "<dpop token ****>"


_AUTH_ALIASES = {"post": "client_secret_post", "basic": "client_secret_basic"}


def _str_pairs(what: str, given: _PairsArg, reserved: frozenset[str] = frozenset()) -> _Pairs:
    """headers= or token_params= as (name, value) pairs, in order; TypeError unless all are str,
    ValueError for a name in ``reserved`` (token_params: the fields the client sets)."""
    pairs = list(given.items()) if isinstance(given, Mapping) else list(given or [])
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("%s must map str to str" % what)
        if name in reserved:
            raise ValueError("%s may not set %s" % (what, name))
    return pairs


def _assertion_signer(
    method: str, data: Any, alg: str | None, secret: _Text
) -> Tuple[ECKey | RSAKey | str, str | None]:
    """What signs client assertions, and the kid its JWK form names: for private_key_jwt the
    key (P-256 or RSA), else the client secret (client_secret_jwt MACs with it); checks
    ``alg`` against it (HMAC for a secret, the key's own algorithms), and against auth_method."""
    key: Any = str(secret)
    kid = None
    if method == "private_key_jwt":
        if data is None:
            raise TypeError("auth_method private_key_jwt needs assertion_key=")
        key = data
        if not isinstance(data, (ECKey, RSAKey)):
            if isinstance(data, os.PathLike):
                data = _read_key_file(data)  # read once, for the key and for its kid
            try:  # each loader reads a PEM block only under its own labels
                try:
                    key = load_key(data)
                except DPoPError as exc:
                    if exc.code != "unsupported_key":
                        raise
                    key = load_rsa_key(data)  # not P-256: RSA, or the RSA loader's own refusal
            except DPoPError as exc:
                raise DPoPError(exc.code, "assertion key: " + exc.message) from None
            # it loaded, so this parses again: a JWK's mapping (for its kid), or a PEM block's DER
            value = _key_data(data, _EC_PEM_LABELS + ("RSA PRIVATE KEY", "RSA PUBLIC KEY"))
            kid = value.get("kid") if isinstance(value, Mapping) else None
        if not key.has_private:
            why = "assertion key: it is a public key; signing needs the private key"
            raise DPoPError("no_private_key", why)
    if alg is not None and (not method.endswith("_jwt") or alg not in _assertion_algs(key)):
        why = "assertion_alg %s does not go with auth_method %s and a %s"
        raise ValueError(why % (alg, method, type(key).__name__))
    return key, kid if isinstance(kid, str) else None


def _proxy_settings(
    proxy: str | None, no_proxy: str | None, trust_env: bool
) -> Tuple[_Proxy | None, str]:
    """The proxy and the NO_PROXY list: the arguments, else (with trust_env) curl's variables,
    https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY, the first one set."""
    env = os.environ if trust_env else {}
    where = "proxy="
    if proxy is None:
        names = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
        where = next((name for name in names if env.get(name)), "")
        proxy = env.get(where, "")
    try:
        chosen = _Proxy(proxy) if proxy else None
    except ValueError as exc:  # never the URL itself: it may hold a password
        raise DPoPError("proxy", "%s: %s" % (where, exc)) from None
    if no_proxy is None:
        no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    return chosen, no_proxy


def _verb(method: str) -> Callable[..., Response]:
    """Client.get(url, **kwargs) and the others: request() with ``method`` (a subclass's request()
    too)."""

    def verb(self: Client, url: str, **kwargs: Any) -> Response:
        return self.request(method, url, **kwargs)

    return verb


class Client:
    """An HTTP client that calls a DPoP-protected API with client_credentials.

    The first request fetches an access token from the token endpoint (a POST with a DPoP proof, RFC
    9449 §5); every request then carries ``Authorization: DPoP <token>`` and a fresh proof bound to
    it (§7). The token is reused until ``refresh_margin`` seconds before it expires. ``DPoP-Nonce``
    challenges are answered once (§8, §9), a 401 ``invalid_token`` gets one new token and one retry,
    and ``session_log`` (a path or a text file) records every exchange with secrets masked.

    Thread-safe: threads may share one Client; they share its token (fetched once however many
    threads need it) and its keep-alive connections."""

    # State that starts empty, as class defaults (each set on the instance when it changes): the
    # token (_current_token), whether close() was called, and for RFC 9728 discovery
    # (_find_issuer, with no token endpoint given) the first request's target (probed with a GET),
    # and the resource its metadata named (RFC 8707's resource=).
    _token: _Token | None = None
    _closed = False
    _api: _Target | None = None
    _resource: str | None = None

    def __init__(
        self,
        key: ECKey | KeyData,
        *,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        client_id: str,
        client_secret: str | None = None,
        scope: str | None = None,
        auth_method: str = "client_secret_post",
        token_params: _PairsArg = None,
        timeout: float = 30,
        ssl_context: Any = None,
        cafile: str | None = None,
        session_log: Any = None,
        follow_redirects: bool = False,
        refresh_margin: float = 60,
        max_redirects: int = 10,
        assertion_key: ECKey | KeyData | None = None,
        assertion_kid: str | None = None,
        assertion_alg: str | None = None,
        assertion_audience: str | None = None,
        max_retries: int = 2,
        retry_max_time: float = 60,
        clock_skew: float = 0,
        token_cache: Any = None,
        proxy: str | None = None,
        no_proxy: str | None = None,
        trust_env: bool = True,
        connect_timeout: float | None = None,
        client_cert: str | os.PathLike[str] | Tuple[str, str] | None = None,
    ) -> None:
        if not isinstance(key, ECKey):
            key = load_key(key)
        key._private()  # fails early for a public key
        texts = {
            "client_secret": client_secret,
            "scope": scope,
            "proxy": proxy,
            "no_proxy": no_proxy,
            "assertion_kid": assertion_kid,
            "assertion_audience": assertion_audience,
        }
        for name, value in texts.items():  # each None or a str (TypeError)
            if value is not None:
                _check_str(name, value)
        if not _check_str("client_id", client_id):  # a str (TypeError), not empty
            raise ValueError("client_id must not be empty")
        auth_method = _AUTH_ALIASES.get(auth_method, auth_method)
        if auth_method not in _AUTH_METHODS:
            raise ValueError("auth_method must be one of %s" % ", ".join(_AUTH_METHODS))
        if auth_method.startswith("client_secret") and not client_secret:
            raise TypeError("auth_method %s needs client_secret=" % auth_method)
        signer, kid = _assertion_signer(auth_method, assertion_key, assertion_alg, client_secret)
        self._assertion = functools.partial(  # a new client assertion for an audience every call
            client_assertion, signer, client_id, alg=assertion_alg, kid=assertion_kid or kid
        )
        self._assertion_audience = assertion_audience
        _setting("timeout", timeout, 0.001, 86400)
        self._refresh_margin = _setting("refresh_margin", refresh_margin, 0, 86400)
        self._max_redirects = _setting("max_redirects", max_redirects, 0, 100, integer=True)
        self._max_retries = _setting("max_retries", max_retries, 0, 100, integer=True)
        self._retry_max_time = _setting("retry_max_time", retry_max_time, 0, 86400)
        self._clock_skew = _setting("clock_skew", clock_skew, -86400, 86400)
        # origin -> seconds its clock is ahead of ours, learnt from Date
        self._skews: Dict[str, float] = {}
        self._cache = token_cache
        params = _str_pairs("token_params", token_params, _RESERVED_TOKEN_PARAMS)
        for url in (token_endpoint, issuer):
            if url is not None:
                _Target(url)  # bad or insecure URLs fail here, before any I/O
        # a cached token is only ever reused by the same client with the same key it is bound to
        self._identity = [token_endpoint, issuer, client_id, auth_method, scope, params]
        self._identity.append(key.thumbprint())
        self._key, self._token_endpoint, self._issuer = key, token_endpoint, issuer
        self._client_id, self._client_secret = client_id, client_secret
        self._scope, self._auth_method = scope, auth_method
        self._token_params, self._follow = params, follow_redirects
        self._scrub = _Scrubber()  # every secret this client knows, for logs and errors
        chosen, no_proxy = _proxy_settings(proxy, no_proxy, trust_env)
        for secret in [client_secret or "", *(chosen.secrets if chosen else ())]:
            self._scrub.add(secret)  # (an empty one adds nothing)
        connect = timeout if connect_timeout is None else connect_timeout
        _setting("connect_timeout", connect, 0.001, 86400)
        self._pool = _Pool(connect, timeout, ssl_context, cafile, client_cert, chosen, no_proxy)
        self._log = _SessionLog(session_log, self._scrub) if session_log is not None else None
        self._nonces: Dict[str, str] = {}
        self._token_lock = threading.Lock()
        self.token_requests = 0  # how many times the token endpoint was called

    # -- public API --------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: _PairsArg = None,
        data: str | BytesLike | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> Response:
        """Send one request with DPoP; return the final Response (any status).

        In-memory bodies are capped at 256 MiB (``response_too_large``); ``stream=True`` returns
        before the body is read: no cap, flat memory (``Response.iter_bytes()``)."""
        import urllib.parse

        if not isinstance(method, str) or _TCHAR.fullmatch(method) is None:
            raise DPoPError("bad_argument", "method is not an HTTP method token")
        method = method.upper()
        extra = self._user_headers(headers)
        body: bytes | None = None
        if data is not None and json is not None:
            raise TypeError("give data= or json=, not both")
        if json is not None:
            body = _json_compact(json)
            if "Content-Type" not in Headers(extra):  # a caller's own, in any case, stays
                extra.append(("Content-Type", "application/json"))
        elif data is not None:
            body = data.encode("utf-8") if isinstance(data, str) else _as_bytes("data", data)
        first = target = _Target(url)
        if self._token_endpoint is None and self._api is None:
            self._api = first  # the API _find_issuer probes, with a GET and no body
        if self._api is not None and first.origin != self._api.origin:
            # a discovered token is for one resource: it never goes to another API
            why = "this Client discovered its token for another API: use another Client for "
            raise DPoPError("discovery", why + first.origin)
        for hops in range(self._max_redirects + 1):
            headers = _base_headers(target, "*/*", extra) + extra
            # Credentials only ever go to the origin the caller named: DPoP there, plain elsewhere.
            if target.origin == first.origin:
                token = self._current_token().value
                response = self._attempts(
                    method, target, headers, body, _MAX_API_BODY, token=token, stream=stream
                )
            else:
                response = self._exchange(
                    method, target, headers, body, _MAX_API_BODY, stream=stream
                )
            response.redirects = hops
            location = response.headers.get("Location")
            if not self._follow or response.status not in _REDIRECTS or not location:
                return response
            here = target
            # Where Location (RFC 9110 §10.2.2) points from here, parsed once; one this client
            # cannot use is bad_response (never urljoin's ValueError, nor the resolver's
            # UnicodeError later).
            try:
                target = _Target(urllib.parse.urljoin(here.url, location.strip()))
            except (ValueError, DPoPError) as exc:
                # a DPoPError's code (a ValueError has none)
                if getattr(exc, "code", None) == "insecure_url":
                    raise
                raise DPoPError(
                    "bad_response", "the redirect's Location is not a usable URL"
                ) from None
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                if method != "HEAD":
                    method = "GET"
                body = None
                # the caller's Content-Type goes with the body (Content-Length is never theirs)
                extra = [(n, v) for n, v in extra if n.lower() != "content-type"]
            if target.origin != here.origin:
                # As curl since CVE-2022-27776: the user's headers (Cookie, API keys) stay with
                # their origin, and so does a body that a 307/308 would re-send: that redirect is
                # returned instead.
                if body is not None:
                    return response
                extra = [(n, v) for n, v in extra if n.lower() in ("accept", "user-agent")]
        raise DPoPError("too_many_redirects", "more than %d redirects" % self._max_redirects)

    get = _verb("GET")
    post = _verb("POST")
    put = _verb("PUT")
    patch = _verb("PATCH")
    delete = _verb("DELETE")

    def access_token(self) -> str:
        """The current access token, fetching or refreshing it if needed."""
        return self._current_token().value

    def close(self) -> None:
        """Close pooled connections and the session log (if the client opened it)."""
        try:
            if not self._closed:
                self._keep_nonces()
        except Exception as exc:  # any store's failure: the run's work is done, one 401 is the cost
            self._note("token cache: the nonces were not kept (%s)" % type(exc).__name__)
        finally:
            self._closed = True
            self._pool.close()
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<dpop.Client client_id=%r at %s jkt=%s>" % (
            self._client_id,
            self._token_endpoint or self._issuer,
            self._key.thumbprint(),
        )

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _user_headers(headers: _PairsArg) -> _Pairs:
        items = _str_pairs("headers", headers)
        for name, value in items:
            if _HEADER_NAME.fullmatch(name) is None:
                raise DPoPError("bad_argument", "bad header name")
            if re.search(r"[^\t\x20-\x7e]", value):  # http.client would raise, or split the header
                raise DPoPError(
                    "bad_argument",
                    "header values must be printable ASCII (encode others, RFC 8187)",
                )
            if name.lower() in ("authorization", "dpop", "host", "content-length"):
                raise DPoPError("bad_argument", "the %s header is set by the client" % name)
        return items

    def _current_token(self) -> _Token:
        # Every use of a Client needs its token first (a request's first hop, access_token(), the
        # adapters' _sign_hop): a closed one is refused here, once for all of them.
        if self._closed:
            raise DPoPError("closed", "this Client was closed")
        # Single flight: one fetch however many threads wait. The lock is taken every time (an
        # uncontended lock costs well under a microsecond, no more than checking twice).
        with self._token_lock:
            token = self._token
            if token is None or (token.refresh_at is not None and time.time() >= token.refresh_at):
                token = self._fetch_token() if self._cache is None else self._cached_token()
                self._token = token
            return token

    def _cached_token(self) -> _Token:
        """A token from the shared cache, or a new one put there; under its lock (if any): processes
        fetch one token."""
        key = self._cache_key()
        with self._cache_lock():
            entry = self._cache.get(key)
            if _usable_entry(entry):  # any store's answer is checked like the file's
                self._scrub.learn(entry)  # a secret, wherever it comes from
                self._nonces.update(entry["nonces"])
                until = entry["until"]
                return _Token(entry["access_token"], until, until - time.time())
            token = self._fetch_token()
            if token.refresh_at is not None:  # without expires_in: not cached
                entry = {
                    "access_token": token.value,
                    "nonces": dict(self._nonces),
                    "until": token.refresh_at,
                }
                self._cache.set(key, entry, token.refresh_at - time.time())
            return token

    def _keep_nonces(self) -> None:
        """Before closing: the nonces of every origin this client talked to go into the cache entry
        of the token it used (so that the next run's first request carries the API's nonce too), if
        that entry is still there and its nonces are not these."""
        token = self._token
        if self._cache is None or token is None:
            return
        key = self._cache_key()
        with self._cache_lock():
            entry = self._cache.get(key)
            if (
                _usable_entry(entry)  # so its until is still ahead: the ttl left is positive
                and entry["access_token"] == token.value
                and entry["nonces"] != self._nonces
            ):
                left = entry["until"] - time.time()
                self._cache.set(key, dict(entry, nonces=dict(self._nonces)), left)

    def _cache_key(self) -> str:
        """This client's key in the token cache: the same settings and DPoP key, and with discovery
        the same API origin (a token is issued for one resource)."""
        api = self._api.origin if self._api is not None else None
        return hashlib.sha256(_json_compact(self._identity + [api])).hexdigest()

    def _cache_lock(self) -> Any:
        """The token cache's lock(), if it has one (FileTokenCache, RedisTokenCache)."""
        import contextlib

        return getattr(self._cache, "lock", contextlib.nullcontext)()

    def _drop_token(self, value: str) -> None:
        with self._token_lock:
            if self._token is not None and self._token.value == value:
                self._token = None
                if self._cache is not None:
                    self._cache.delete(self._cache_key())

    def _remember_nonce(self, origin: str, headers: Headers) -> None:
        nonce = headers.get("DPoP-Nonce")
        if nonce is not None and _good_nonce(nonce):
            self._nonces[origin] = nonce

    def _note(self, text: str, kind: str | None = None) -> None:
        """A DEBUG record on logging.getLogger("dpop") (a NullHandler unless the program adds one);
        with ``kind``, a session log entry too. The record is free until the program imports
        logging: without it no handler or level can have been set, so nothing could be shown."""
        import sys

        if kind is not None and self._log is not None:
            self._log.note(kind, text)
        logging = sys.modules.get("logging")
        if logging is not None:
            logger = logging.getLogger("dpop")
            if not logger.handlers:
                logger.addHandler(logging.NullHandler())
            logger.debug(_printable(self._scrub(text)))

    def _retry_refused(
        self,
        origin: str,
        status: int,
        headers: Headers,
        token: _Text,
        sent: _Text,
        tried: Set[str],
    ) -> bool:
        """Whether a refusal of a request with a proof (``sent``: the nonce it carried; ``token``
        None: the token request) earns one more try, each reason once: invalid_token (the token is
        dropped), a new nonce (RFC 9449 §8, §9; never for the nonce just sent), a server clock
        learnt from Date. Any 401, and a token endpoint's 400, may be the proof's fault, whatever
        error it names."""
        errors = [params["error"] for params in _refusals(headers)] if status == 401 else []
        # any 401, and a token endpoint's 400, may be about the proof, whatever error it names
        # (RFC 9449 §8: use_dpop_nonce, invalid_dpop_proof; Keycloak: invalid_request)
        proof = status == 401 or (token is None and status == 400)
        if "invalid_token" in errors and token is not None and "token" not in tried:
            tried.add("token")
            self._drop_token(token)
        elif proof and "nonce" not in tried and self._nonces.get(origin) not in (None, sent):
            tried.add("nonce")
        elif proof and "skew" not in tried and self._learn_skew(origin, headers):
            tried.add("skew")
        else:
            return False
        self._note(
            "%s answered %d %s: sending again with a new proof"
            % (origin, status, ", ".join(errors))
        )
        return True

    def _sign_hop(self, headers: Any, method: str, url: str, origin: str | None = None) -> str:
        """Sign a request (or redirect hop) another library sends, ``headers`` being its mutable
        mapping: Authorization and a new proof at ``origin`` (None: the URL's own), neither
        elsewhere; returns the URL's origin."""
        try:
            here = _Target(url).origin
        except DPoPError:
            if origin is None:
                raise
            here = ""
        if here == (origin or here):
            token = self._current_token().value
            proof = self._proof(method, url, here, token, self._nonces.get(here))
            headers.update({"Authorization": "DPoP " + token, "DPoP": proof})
        else:
            for name in ("Authorization", "DPoP"):
                headers.pop(name, None)
        return here

    def _resend_after(self, origin: str, response: Any, items: Any, tried: Set[str]) -> bool:
        """After another library's ``response`` (``items``: its header pairs): remember the nonce;
        True to resend."""
        headers, sent = Headers(items), response.request.headers
        self._remember_nonce(origin, headers)
        proof, token = sent.get("DPoP"), (sent.get("Authorization") or "")[5:]
        if proof is None or response.status_code != 401:  # only a 401 earns another try
            return False
        # our own proof
        nonce = _json_object(b64url_decode(proof.split(".")[1]), "proof").get("nonce")
        return self._retry_refused(origin, 401, headers, token, nonce, tried)

    def requests_auth(self) -> Any:
        """``auth=`` for requests and requests.Session (see the README)."""
        return _requests_auth(self)

    def httpx_auth(self) -> Any:
        """An httpx.Auth for httpx.Client and httpx.AsyncClient (imports httpx)."""
        return _httpx_auth(self)

    def _attempts(
        self,
        method: str,
        target: _Target,
        headers: _Pairs,
        body: _Body,
        limit: int,
        *,
        token: _Text = None,
        stream: bool = False,
    ) -> Response:
        """A request with a proof, attempted until it is answered for good; every attempt has a new
        proof (a fresh jti, RFC 9449 §7.3) and a new body (a new client assertion). Attempts follow
        429/503 and failed connections where a repeat cannot hurt (_retry), and the refusals
        _retry_refused answers. ``token`` None is the token request, which may always be
        repeated."""
        tried: Set[str] = set()
        repeatable = token is None or method in _IDEMPOTENT
        attempt, started = 0, time.monotonic()
        while True:
            sent = self._nonces.get(target.origin)
            auth = [] if token is None else [("Authorization", "DPoP " + token)]
            proof = functools.partial(self._proof, method, target.url, target.origin, token, sent)
            try:
                # the token request's form is new every time: a new client assertion
                data = self._token_form(target.url) if token is None else body
                response = self._exchange(
                    method, target, headers + auth, data, limit, stream, proof
                )
            except DPoPError as exc:  # repeated where it cannot hurt, or when nothing was sent
                if (
                    (repeatable or exc._unsent)
                    and exc.code in ("network", "timeout")
                    and self._retry(attempt, started, exc.code)
                ):
                    attempt += 1
                    continue
                raise
            if (
                response.status in (429, 503)
                and repeatable
                and self._retry(
                    attempt,
                    started,
                    "HTTP %d" % response.status,
                    response.headers.get("Retry-After"),
                )
            ):
                response.close()
                attempt += 1
                continue
            if not self._retry_refused(
                target.origin, response.status, response.headers, token, sent, tried
            ):
                return response
            # a new one after invalid_token
            token = None if token is None else self._current_token().value

    def _proof(self, method: str, url: str, origin: str, token: _Text, nonce: _Text) -> str:
        """A new proof (a fresh jti every time, RFC 9449 §7.3), its iat on ``origin``'s clock as far
        as this client knows it (_learn_skew)."""
        now = time.time() + self._skews.get(origin, self._clock_skew)
        return make_proof(self._key, method, url, access_token=token, nonce=nonce, now=now)

    def _exchange(
        self,
        method: str,
        target: _Target,
        fields: _Pairs,
        body: _Body,
        limit: int,
        stream: bool = False,
        proof: Callable[[], str] | None = None,
    ) -> Response:
        """One HTTP exchange on a pooled connection; maps failures to DPoPError. With ``stream``, a
        final response (not a 401, nor a redirect to be followed: those are retried or followed)
        keeps its body unread. ``proof`` makes the DPoP header: a new one for every connection
        tried."""
        import http.client
        import socket
        import ssl

        retried = False  # a stale keep-alive connection is retried once
        request = "%s %s%s" % (method, target.origin, target.path)  # for notes and errors
        while True:
            conn, reused = self._pool.get(target, self._note)
            headers = fields + ([] if proof is None else [("DPoP", proof())])
            headers += [] if body is None else [("Content-Length", str(len(body)))]
            written = False  # whether any byte of this request may have gone out
            answered = False  # until then, any failure closes the connection (its state is unknown)
            try:
                # connected within the connect timeout; then each read within the other
                if not reused:
                    conn.connect()
                    conn.sock.settimeout(self._pool.timeout)
                if self._log is not None:
                    self._log.request(method, target, headers, body)
                conn.putrequest(method, target.target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                written = True  # putrequest and putheader only buffer; endheaders writes
                conn.endheaders(body)
                response = self._answer(conn, method, target, limit, stream)
                answered = True
            except ssl.SSLError as exc:  # the handshake, direct or through a proxy's tunnel
                # (an SSLError made in Python, not by the C module, has no reason)
                detail = (
                    getattr(exc, "verify_message", None)
                    or getattr(exc, "reason", None)
                    or "handshake failed"
                )
                raise DPoPError("tls", "%s: %s" % (target.origin, detail)) from None
            # socket.timeout (TimeoutError) too; before HTTPException: http.client's
            # RemoteDisconnected is a ConnectionResetError too
            except OSError as exc:
                # A keep-alive connection the server closed as we used it: once more on a new
                # connection, if that cannot repeat a request that went out whole (a POST the server
                # may have acted on). (A reused connection is connected: it cannot be refused, so
                # its ConnectionError is a reset, an abort or a broken pipe.) Not left to _attempts:
                # it races with a server's idle timeout, and max_retries may be 0.
                stale = reused and not retried and isinstance(exc, ConnectionError)
                if stale and (not written or method in _IDEMPOTENT):
                    retried = True
                    continue
                code, what = "network", "connection broke" if written else "cannot connect"
                if isinstance(exc, socket.timeout):  # the reason says what timed out
                    code, what = "timeout", "no answer in time"
                why = "%s: %s%s" % (request, what, _reason(exc))
                error = DPoPError(code, why)
                # unless written, a failure that a retry cannot repeat, whatever the method
                error._unsent = not written
                raise error from None
            # ValueError: http.client on bad framing. (A body cut short never comes here:
            # getresponse() reads only the head, and _BodyStream makes every HTTPException while
            # reading the body, IncompleteRead too, a network DPoPError.)
            except (http.client.HTTPException, ValueError) as exc:
                why = "%s: malformed HTTP response (%s)" % (target.origin, type(exc).__name__)
                raise DPoPError("bad_response", why) from None
            finally:
                if not answered:
                    conn.close()
            if self._log is not None:
                sent = dict(headers)
                self._log.response(response, "Authorization" not in sent)
                # a refusal of a proof: what inspect finds wrong with it, on the next line
                if proof is not None and response.status in (400, 401):
                    jkt = self._key.thumbprint()
                    self._note(_verdict(sent, method, target.url, jkt, response.headers), "Inspect")
            self._remember_nonce(target.origin, response.headers)
            self._note("%s: %d %s" % (request, response.status, response.reason))
            return response

    def _answer(
        self, conn: Any, method: str, target: _Target, limit: int, stream: bool
    ) -> Response:
        """The answer on ``conn``: its body read (at most ``limit`` bytes, decoded), or left to
        stream for a final answer when ``stream`` (not a 401, nor a redirect to follow)."""
        resp = conn.getresponse()
        followed = self._follow and resp.status in _REDIRECTS and resp.getheader("Location")
        streaming = stream and not (resp.status == 401 or followed)
        # RFC 9110 §6.4.1: HEAD, 1xx, 204 and 304 have no body, whatever Content-Encoding says
        bodiless = method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        encoding = None if bodiless else resp.getheader("Content-Encoding")

        # called once: the connection goes back to the pool after the whole body, else it is closed
        def release(complete: bool) -> None:
            if complete and not resp.will_close:
                self._pool.put(target, conn)
            else:
                conn.close()

        body_stream = _BodyStream(resp, encoding, release)
        got = Headers([(k, re.sub(r"\r?\n[ \t]*", " ", v)) for k, v in resp.getheaders()])
        data = b"" if streaming else body_stream.read(limit)
        version = "HTTP/%d.%d" % divmod(resp.version, 10)
        response = Response(resp.status, resp.reason, got, data, target.url, version)
        if streaming:
            response._stream, response._chunks = body_stream, iter(body_stream)
        return response

    def _retry(self, attempt: int, started: float, reason: str, after: str | None = None) -> bool:
        """Wait before a retry and say True; False when the retries or the time for them
        (retry_max_time) are spent. The wait is Retry-After (``after``) when the answer has one,
        else exponential backoff with jitter; ``reason`` (an HTTP status or an error code) is
        noted."""
        import random  # jitter, not a secret

        if attempt >= self._max_retries:
            return False
        delay = min(8.0, 0.5 * 2**attempt) * (0.5 + random.random())
        after = (after or "").strip()
        # Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date
        when = _http_date(after)
        if re.fullmatch(r"[0-9]{1,9}", after):
            delay = float(after)
        elif when is not None:
            delay = max(0.0, when - time.time())
        if time.monotonic() - started + delay > self._retry_max_time:
            return False
        attempts = (attempt + 2, self._max_retries + 1, delay, reason)
        self._note("attempt %d of %d in %.2f s after %s" % attempts, "Retrying")
        time.sleep(delay)
        return True

    def _learn_skew(self, origin: str, headers: Headers) -> bool:
        """After a refused proof: True if the answer's Date shows the server's clock more than 5 s
        from ours (as corrected so far); the offset is then kept for that origin and the proof's iat
        follows it. Servers without nonces judge iat alone (Keycloak: -25 s to +15 s)."""
        server_time = _http_date(headers.get("Date"))
        if server_time is None:
            return False
        offset = server_time - time.time()
        if abs(offset - self._skews.get(origin, self._clock_skew)) <= 5:
            return False
        self._skews[origin] = offset
        self._note(
            "%s is %+.0f s from this clock: proofs for it follow its clock" % (origin, offset),
            "Clock",
        )
        return True

    # -- token endpoint ------------------------------------------------------------

    def _token_form(self, endpoint: str) -> bytes:
        """The token request's body, with a new client assertion every time: made for each call of
        the token endpoint, which it counts."""
        import urllib.parse

        self.token_requests += 1

        form = [("grant_type", "client_credentials")]
        if self._auth_method != "client_secret_basic":
            form.append(("client_id", self._client_id))
        if self._auth_method == "client_secret_post":
            form.append(("client_secret", str(self._client_secret)))
        elif self._auth_method.endswith("_jwt"):
            assertion = self._assertion(self._assertion_audience or endpoint)
            self._scrub.add(assertion, lasting=False)
            form += [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion)]
        if self._scope is not None:
            form.append(("scope", self._scope))
        if self._resource is not None:  # RFC 8707 §2: the resource the token is for
            form.append(("resource", self._resource))
        form += self._token_params
        return urllib.parse.urlencode(form).encode("ascii")

    def _discover(self, issuer: str | None) -> str:
        """RFC 8414 metadata, then OpenID discovery, for ``issuer``."""
        if issuer is None:
            why = "no token endpoint: give token_endpoint= or issuer=, or request the API first"
            raise DPoPError("discovery", why)
        issuer = issuer.rstrip("/")  # compared without a final slash
        target = _Target(issuer)
        problems = []
        for url in (  # RFC 8414 §3 first
            target.origin + "/.well-known/oauth-authorization-server" + target.path.rstrip("/"),
            issuer + "/.well-known/openid-configuration",  # OpenID Discovery §4
        ):
            response = self._get(url)
            if response.status != 200:
                problems.append("%s answered %d" % (url, response.status))
                continue
            try:
                metadata = _json_object(response.body, "metadata")
            except DPoPError:
                problems.append("%s is not a JSON object" % url)
                continue
            if str(metadata.get("issuer", "")).rstrip("/") != issuer:
                raise DPoPError("discovery", "metadata issuer does not match %s" % issuer)
            endpoint = metadata.get("token_endpoint")
            if not isinstance(endpoint, str):
                raise DPoPError("discovery", "metadata has no token_endpoint")
            # (its URL is checked by _fetch_token, which parses it for use)
            _check_algs(metadata, "the authorization server")
            return endpoint
        raise DPoPError(
            "discovery", "no authorization server metadata found: " + "; ".join(problems)
        )

    def _get(self, url: str, stream: bool = False) -> Response:
        """A GET with no credentials and no proof (discovery's probe and metadata, a JWK Set for
        dpop inspect), under the client's own TLS, proxy, timeout, size and redirect rules."""
        where = _Target(url)
        return self._exchange("GET", where, _base_headers(where), None, _MAX_TOKEN_BODY, stream)

    def _find_issuer(self, api: _Target) -> str:
        """RFC 9728: the authorization server the API names, and the resource identifier to ask
        it for (RFC 8707). The probe goes without credentials; its 401 may point at the metadata
        (§5.1, resource_metadata= in a DPoP or Bearer challenge), else the well-known URIs of the
        API's path and of its origin (§3.1). Metadata found by a pointer names a resource whose
        path is the API's or a prefix of it (a segment at a time, as draft-ietf-oauth-rfc9728bis
        allows); found at a well-known URI, exactly the identifier that URI was built from
        (§3.3)."""
        # always a GET with no body (whatever the request it stands for: a GET is safe to send
        # again), streamed and closed unread: only its status and challenges count
        probe = self._get(api.url, stream=True)
        probe.close()
        challenges = _parse_challenges(probe.headers.get_all("WWW-Authenticate"))
        pointers = [p.get("resource_metadata") for s, p in challenges if s in ("dpop", "bearer")]
        candidates = [(url, "") for url in pointers if url and probe.status == 401]
        for suffix in dict.fromkeys(
            (api.path.rstrip("/"), "")
        ):  # the API's path, then its origin's
            well_known = api.origin + "/.well-known/oauth-protected-resource" + suffix
            candidates.append((well_known, api.origin + suffix))
        for url, identifier in candidates:
            response = self._get(url)
            if response.status == 200:
                return self._check_resource(api, _json_object(response.body, url), identifier)
        if self._issuer is None:
            why = "%s publishes no protected resource metadata (RFC 9728): give --issuer or"
            raise DPoPError("discovery", why % api.origin + " --token-endpoint")
        return self._issuer

    def _check_resource(self, api: _Target, metadata: Dict[str, Any], identifier: str) -> str:
        """RFC 9728 §3.3's checks of protected resource metadata; the issuer to use: issuer= if
        the metadata names it (refused if not), else the first it names."""
        resource = str(metadata.get("resource"))  # not a str: no URL, so refused
        named = _Target(resource)
        named_path = named.origin + named.path.rstrip("/")
        api_path = api.origin + api.path.rstrip("/")
        # at a well-known URI: its identifier exactly; through a pointer (identifier ""): the API or
        # a prefix of its path
        within = not identifier and (api_path + "/").startswith(named_path + "/")
        if (named_path != identifier and not within) or "#" in resource:
            # (RFC 8707 §2: a resource has no fragment)
            why = "the metadata's resource %s is not the API %s" % (_short_repr(resource), api_path)
            raise DPoPError("discovery", why)
        servers = metadata.get("authorization_servers")
        if (
            not isinstance(servers, list)
            or not servers
            or not all(isinstance(one, str) for one in servers)
        ):
            raise DPoPError("discovery", "the metadata names no authorization_servers")
        _check_algs(metadata, "the API")
        # issuer= if given, else the first server named (which the test below then always passes)
        issuer: str = self._issuer or servers[0]
        if issuer.rstrip("/") not in [server.rstrip("/") for server in servers]:
            why = "the API does not name issuer %s among its authorization servers"
            raise DPoPError("discovery", why % issuer)
        self._note("discovery: resource %s, issuer %s" % (resource, issuer), "Discovery")
        self._resource = resource
        return issuer

    def _fetch_token(self) -> _Token:
        """POST client_credentials with a proof; one retry for a new nonce."""
        import urllib.parse

        endpoint = self._token_endpoint
        if endpoint is None:
            issuer, api = self._issuer, self._api
            if api is not None:
                issuer = self._find_issuer(api)
            endpoint = self._discover(issuer)
            # Credentials go only where the user meant them to: issuer= named the server; a
            # private_key_jwt assertion names its own audience (unless assertion_audience= fixed
            # it); else the token endpoint must be on the API's own origin.
            free = self._auth_method == "private_key_jwt" and self._assertion_audience is None
            home = api.origin if api is not None else ""
            if not (self._issuer or free) and _Target(endpoint).origin != home:
                why = "%s names the authorization server %s; to send it your credentials, confirm"
                raise DPoPError("discovery", why % (home, issuer) + " it with --issuer")
        target = _Target(endpoint)  # a discovered one too: kept only if it is a usable URL
        self._token_endpoint = endpoint
        base = _base_headers(target) + [("Content-Type", "application/x-www-form-urlencoded")]
        if self._auth_method == "client_secret_basic":
            userpass = ":".join(
                map(urllib.parse.quote_plus, (self._client_id, str(self._client_secret)))
            )
            basic = base64.b64encode(userpass.encode("utf-8")).decode("ascii")
            base.append(("Authorization", "Basic " + basic))
            self._scrub.add(basic)
        response = self._attempts("POST", target, base, None, _MAX_TOKEN_BODY)
        if 200 <= response.status < 300:
            token = self._parse_token(response)
            # "expires in None s" without expires_in
            self._note(
                "token from %s%s: expires in %s s" % (target.origin, target.path, token.lifetime)
            )
            return token
        error, description = _oauth_error(response, self._scrub)
        text = "token endpoint answered HTTP %d without an OAuth error" % response.status
        if error is not None:
            detail = error + (": " + description if description else "")
            text = "token endpoint: %s (HTTP %d)" % (detail, response.status)
        raise DPoPError("oauth_error", self._scrub(text), oauth_error=error, status=response.status)

    def _parse_token(self, response: Response) -> _Token:
        try:
            data = _json_object(response.body, "token response")
        except DPoPError:
            raise DPoPError("bad_token_response", "token response is not a JSON object") from None
        self._scrub.learn(data)
        value = data.get("access_token")
        if not isinstance(value, str) or _TOKEN68.fullmatch(value) is None:
            raise DPoPError("bad_token_response", "token response has no usable access_token")
        token_type = data.get("token_type")
        # str(): only a string spells "dpop" (JSON's null, true, numbers, arrays, objects do not)
        if str(token_type).lower() != "dpop":
            # RFC 9449 §5: a Bearer token here means no key binding; refuse it rather than silently
            # downgrading.
            why = "token_type is %s, not DPoP: the server did not bind the token to the key"
            raise DPoPError("token_type", why % _short_repr(token_type))
        lifetime = data.get("expires_in")
        # str.isdigit() takes "²"
        if isinstance(lifetime, str) and re.fullmatch(r"[0-9]{1,10}", lifetime):
            lifetime = int(lifetime)
        if lifetime is None:
            return _Token(value, None)
        # exact types: a JSON true is not a number of seconds
        if type(lifetime) not in (int, float) or not 0 < lifetime < 2**31:
            raise DPoPError(
                "bad_token_response", "expires_in is not a number of seconds from 1 to 2^31 - 1"
            )
        margin = min(self._refresh_margin, lifetime / 2)
        return _Token(value, time.time() + lifetime - margin, lifetime)


def _check_algs(metadata: Dict[str, Any], who: str) -> None:
    """Metadata's dpop_signing_alg_values_supported (RFC 9449 §5.1, RFC 9728 §2), when given,
    must list ES256, the one algorithm a Client's proofs use."""
    algs = metadata.get("dpop_signing_alg_values_supported")
    if algs is not None and (not isinstance(algs, list) or "ES256" not in algs):
        why = " does not accept ES256 DPoP proofs (dpop_signing_alg_values_supported)"
        raise DPoPError("unsupported_alg", who + why)


def _base_headers(
    target: _Target, accept: str = "application/json", given: Sequence[Tuple[str, str]] = ()
) -> _Pairs:
    """A request's own headers: Host, User-Agent and Accept (unless the caller's ``given`` headers
    name them), Accept-Encoding: gzip. JSON is what the token endpoint and discovery answer."""
    named = Headers(given)  # case-insensitive
    base = [("Host", target.host_header), ("User-Agent", _USER_AGENT), ("Accept", accept)]
    return [(n, v) for n, v in base if n not in named] + [("Accept-Encoding", "gzip")]


def _oauth_error(response: Response, scrub: Callable[[str], str]) -> Tuple[str | None, str | None]:
    """(error, error_description) of a refusal: from a WWW-Authenticate challenge (DPoP first; RFC
    9449 §7.1, RFC 6750 §3), else from an RFC 6749 §5.2 JSON body. Secrets are masked first (before
    cleaning or cutting could hide them), then only printable ASCII is kept, and cut."""
    refusals = _refusals(response.headers)
    if refusals:
        found: Mapping[str, Any] = refusals[0]
    else:
        try:
            found = _json_object(response.body, "error response")
        except DPoPError:
            return None, None

    def clean(text: Any, limit: int) -> str | None:
        return re.sub(r"[^\x20-\x7e]", "?", scrub(text))[:limit] if isinstance(text, str) else None

    return clean(found.get("error"), 100), clean(found.get("error_description"), 300)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " (%s)" % text if text else ""


# =============================================================================
# 18. requests and httpx: a Client's DPoP as their auth (RFC 9449 §7, §8, §9)
# =============================================================================
#
# The program keeps its HTTP library; the Client brings the token, the proofs
# and the nonces. Neither library is imported here until its auth is made.
# Both follow redirects their own way, so each hop is signed for its own URL
# at the first request's origin and stripped of Authorization and DPoP
# anywhere else (requests itself strips only Authorization, httpx likewise).


def _requests_auth(client: Client) -> Any:
    """requests' ``auth=`` (any callable taking and returning the PreparedRequest): signs the
    prepared request; a response hook sends it again after a nonce challenge, invalid_token or a
    learnt clock, and signs (or strips) the request requests copies for a redirect."""

    import requests

    def answer(response: Any, **kwargs: Any) -> Any:
        first = response.request  # what requests copies for a redirect
        origin, tried = _Target(first.url).origin, set()  # type: Tuple[str, Set[str]]
        while client._resend_after(origin, response, response.headers.items(), tried):
            again = response.request.copy()
            # a body that cannot be sent again whole: the caller gets the 401
            if not _rewound(again):
                break
            client._sign_hop(again.headers, again.method, again.url, origin)
            _ = response.content  # read, so that the connection is reused
            response.close()
            retried = response.connection.send(again, **kwargs)
            retried.history.append(response)
            retried.request = again
            response = retried
        if response.is_redirect and "DPoP" in first.headers:
            # requests' own next hop: the URL and method it will use (Session.resolve_redirects,
            # which with yield_requests only prepares the hop; requests calls it so itself when
            # it does not follow, for Response.next), so DPoP is judged on what requests sends,
            # not on a second opinion of ours. It copies first, so what is signed here goes along.
            with requests.Session() as session:
                # no .netrc or proxy variables: only the URL and the method matter here
                session.trust_env = False
                try:
                    after: Any = next(
                        session.resolve_redirects(response, first, yield_requests=True)
                    )
                # a Location requests cannot read either (it fails on it too), or an empty one
                # (it follows none): nothing is signed for it
                except (ValueError, StopIteration):
                    after = first.copy()
                    after.url = ""
            client._sign_hop(first.headers, after.method, after.url, origin)
        return response

    def auth(request: Any) -> Any:
        client._sign_hop(request.headers, request.method, request.url)
        request.register_hook("response", answer)
        return request

    return auth


def _rewound(request: Any) -> bool:
    """Whether a requests PreparedRequest's body can be sent again whole: none, bytes or str, or a
    file that requests noted the start of, rewound to it here by requests' own rewind_body (as its
    redirects do)."""
    from requests.utils import rewind_body  # loaded: requests is calling us

    if request.body is None or isinstance(request.body, (bytes, bytearray, memoryview, str)):
        return True
    try:  # a generator, a pipe, or a file whose position requests could not read: refused
        rewind_body(request)
    except (OSError, ValueError):  # UnrewindableBodyError is an OSError; ValueError: a closed file
        return False
    return True


def _httpx_auth(client: Client) -> Any:
    import httpx

    class DPoPAuth(httpx.Auth):
        """Signs the request, and sends it again after a nonce challenge, invalid_token or a learnt
        clock. httpx follows redirects inside one auth flow, so with follow_redirects=True also pass
        ``event_hooks={"request": [auth.hook]}`` (``auth.async_hook`` for an AsyncClient): each hop
        is then signed, or stripped. In an AsyncClient, a token fetch blocks the event loop (one
        request)."""

        def auth_flow(self, request: Any) -> Any:
            # new at the first hop (httpx hands its extensions to every redirect)
            hops = request.extensions.get("dpop", {})
            request.extensions = dict(request.extensions, dpop=hops)
            tried: Set[str] = set()
            while True:
                here = client._sign_hop(
                    request.headers, request.method, str(request.url), hops.get("origin")
                )
                hops.setdefault("origin", here)
                hops["signed"] = request
                response = yield request
                # without the hook, the redirect hops httpx followed carried the first proof
                if not hops.get("hooked") and any(hop.is_redirect for hop in response.history):
                    raise DPoPError(
                        "bad_argument",
                        "httpx followed a redirect without auth.hook in its event_hooks",
                    )
                here = _Target(str(response.request.url)).origin  # after the hops httpx followed
                if (
                    here != hops["origin"]
                    or not client._resend_after(
                        here, response, response.headers.multi_items(), tried
                    )
                    # httpx's own mark on a body from an iterator, read once and gone (bytes, forms
                    # and multipart files it sends again whole, rewinding the files)
                    or getattr(response.request.stream, "_is_stream_consumed", False)
                ):
                    return

        def hook(self, request: Any) -> None:
            hops = request.extensions.get("dpop")
            if hops is None:  # not a request of this auth's
                return
            hops["hooked"] = True
            if hops.get("signed") is not request:
                client._sign_hop(request.headers, request.method, str(request.url), hops["origin"])

        async def async_hook(self, request: Any) -> None:
            self.hook(request)

    return DPoPAuth()


# =============================================================================
# 19. Shared stores on Redis: the replay cache and the token cache
# =============================================================================
#
# Servers that verify proofs in several processes must share what they have
# seen; clients on several machines may share tokens. Both classes take any
# object with redis-py's set(name, value, nx=, ex=), get and delete (they
# import nothing), and keep every key under ``prefix``.


class _RedisStore:
    """What both stores hold: the redis client and the prefix of every key."""

    def __init__(self, redis: Any, prefix: str = "dpop:") -> None:
        self._redis = redis
        self._prefix = prefix


class RedisReplayCache(_RedisStore):
    """verify_proof(replay=...) shared through Redis: SET NX EX keeps each jti for the acceptance
    window. A store that fails refuses the proof (``replay_store``, status 503): nothing is accepted
    twice."""

    def add(self, key: str, ttl: int) -> bool:
        try:
            answer = self._redis.set(
                self._prefix + "jti:" + key, b"1", nx=True, ex=max(1, int(ttl))
            )
        except Exception as exc:  # any client's errors: fail closed
            answer = exc
        if answer is None or answer is False:
            return False  # already there: a replay
        if answer is True or answer in ("OK", b"OK"):
            return True
        # an error, or a client that does not answer now (asyncio, a pipeline): never taken as "new"
        getattr(answer, "close", lambda: None)()
        why = "the replay store failed (%s): proof refused" % type(answer).__name__
        raise DPoPError("replay_store", why, status=503)


class RedisTokenCache(_RedisStore):
    """Client(token_cache=...) shared through Redis: one JSON entry per key, expiring with its
    token; lock() is a SET NX lease, so that clients started together fetch one token. A store that
    fails is a miss, with a warning: the client then fetches its own token."""

    _failed = False  # set on the instance once a call to the store fails

    def _call(self, what: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """The store's ``what`` on the key ``name`` under the prefix; None (a miss) if it fails."""
        import warnings

        try:
            return getattr(self._redis, what)(self._prefix + name, *args, **kwargs)
        except Exception as exc:  # any client's errors: a miss
            self._failed = True
            why = "token cache %s*: %s failed (%s)" % (self._prefix, what, type(exc).__name__)
            warnings.warn(why, RuntimeWarning, stacklevel=4)
            return None

    def get(self, key: str) -> Any:
        try:
            return json.loads(self._call("get", "token:" + key))
        # not JSON, or None (no entry, or a failed store), or an async client's awaitable: a miss
        except (ValueError, TypeError, RecursionError):
            return None

    def set(self, key: str, entry: Dict[str, Any], ttl: float) -> None:
        # the entry as given (the Client stamps its expiry, until, in it), gone after ttl
        self._call("set", "token:" + key, json.dumps(entry), ex=max(1, int(ttl)))

    def delete(self, key: str) -> None:
        self._call("delete", "token:" + key)

    def lock(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            mine = os.urandom(8).hex()
            deadline = time.monotonic() + 30
            while (
                not (self._call("set", "lock", mine, nx=True, ex=30) or self._failed)
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            try:
                yield
            finally:
                if self._call("get", "lock") in (mine, mine.encode()):
                    self._call("delete", "lock")

        return held()


# =============================================================================
# 20. Demo servers: a local authorization server and API (python dpop.py demo)
# =============================================================================
#
# Loopback only. The authorization server issues JWT access tokens bound to
# the proof key (cnf.jkt, RFC 9449 §6.1), signed with its own ES256 key; the
# API checks the token and then the proof with verify_proof(). The same
# server answers both, and tests start two to have two origins.

DEMO_CLIENT_ID = "m2m.dpop"
DEMO_CLIENT_SECRET = "demo-secret"  # a demo credential, printed by the demo itself
DEMO_SCOPE = "api"


class DemoServer:
    """A local authorization server + DPoP-protected API on 127.0.0.1.

    ``require_nonce`` makes both the token endpoint (400 use_dpop_nonce) and the API (401
    use_dpop_nonce) demand server nonces. ``authority`` is another DemoServer whose tokens this
    one's API accepts (default: its own). Clients authenticate with their secret (``clients``:
    client_secret_post or client_secret_basic). A subclass may override ``answer`` (every
    request), ``authenticate`` (client authentication) or ``issue_token``: the tests script
    misbehaving servers, https and client assertions that way."""

    token_lifetime = 3600  # seconds an access token lives

    def __init__(
        self,
        *,
        require_nonce: bool = False,
        port: int = 0,
        authority: DemoServer | None = None,
    ) -> None:
        import http.server

        self.require_nonce = require_nonce
        self.authority = authority or self
        self.signing_key = generate_key()
        self.nonces = NonceIssuer(os.urandom(32))
        self.replay = ReplayCache()
        # client_id -> secret, for client_secret_post and client_secret_basic
        self.clients = {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET}
        # seconds this server's clock is ahead when it checks proofs (tests also send it in Date)
        self.clock_skew = 0.0
        self.api_calls = 0
        # (ThreadingHTTPServer's handler threads are daemons already: daemon_threads = True)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _demo_handler(self))
        self._httpd = httpd
        self.base_url = "http://127.0.0.1:%d" % httpd.server_address[1]
        self.issuer = self.base_url
        self.token_endpoint = self.base_url + "/connect/token"
        self.api_url = self.base_url + "/api/dpop/test"
        # shutdown() waits for the next poll, 0.5 s by default: paid by every demo run and every
        # test starting a server
        threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="dpop-demo",
            daemon=True,
        ).start()

    def metadata(self) -> Dict[str, Any]:  # RFC 8414 §2
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "grant_types_supported": ["client_credentials"],
            "dpop_signing_alg_values_supported": ["ES256"],
            # client_secret_post and client_secret_basic (a JSON array): the demo checks no
            # assertions (authenticate)
            "token_endpoint_auth_methods_supported": _AUTH_METHODS[:2],
        }

    def issue_token(self, client_id: str, scope: str, jkt: str) -> Dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "client_id": client_id,
            "sub": client_id,
            "scope": scope,
            "iat": now,
            "cnf": {"jkt": jkt},
            "exp": now + self.token_lifetime,
            "jti": b64url_encode(os.urandom(12)),
        }
        return {
            "access_token": jws_sign(
                self.signing_key, claims, {"typ": "at+jwt", "kid": self.signing_key.thumbprint()}
            ),
            "token_type": "DPoP",
            "expires_in": self.token_lifetime,
            "scope": scope,
        }

    def authenticate(self, form: Dict[str, str], client_id: str, secret: str | None) -> bool:
        """Whether a token request's client authentication (client_secret_post or
        client_secret_basic: ``secret``; tests that need assertions override this) is good."""
        expected = self.clients.get(client_id)
        return (
            expected is not None
            and secret is not None
            and hmac.compare_digest(expected.encode(), secret.encode())
        )

    def answer(self, handler: Any) -> None:
        """Answers one request (tests override it to script misbehaving servers)."""
        path = handler.path.split("?")[0]
        if path in (
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ):
            handler.reply(200, self.metadata())
        elif path == "/connect/token" and handler.command == "POST":
            _demo_token(handler)
        elif path.startswith("/api/"):
            _demo_api(handler)
        else:
            handler.reply(404, {"error": "not_found"})

    def nonce_headers(self) -> Dict[str, str]:
        """A new DPoP-Nonce header for a response, when this server requires nonces."""
        return {"DPoP-Nonce": self.nonces.issue()} if self.require_nonce else {}

    def check_token(self, token: str) -> Dict[str, Any]:
        """Claims of a valid, unexpired access token from ``authority``."""
        _, payload = jws_verify(token, self.authority.signing_key)
        claims = _json_object(payload, "access token")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            raise DPoPError("bad_signature", "access token expired")
        return claims

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _demo_handler(owner: DemoServer) -> Any:
    """The request handler class of one DemoServer (built on demand: http.server loads lazily);
    its handlers read the server as self.demo."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "dpop-demo/" + __version__
        wbufsize = -1  # one write per response: no Nagle/delayed-ACK stalls
        disable_nagle_algorithm = True
        demo = owner

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def reply(
            self, status: int, payload: Any, headers: Mapping[str, str] | None = None
        ) -> None:
            data = payload if isinstance(payload, bytes) else _json_compact(payload)
            self.send_response(status)
            for name, value in {
                "Content-Length": str(len(data)),
                "Cache-Control": "no-store",
                "Content-Type": "application/json",  # a default: the caller's replaces it
                **(headers or {}),
            }.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def dispatch(self) -> None:
            # the body is read first, however the request is then answered: a keep-alive
            # connection stays in step (a body sent chunked is read by a subclass's answer that
            # wants it, which sets body)
            length = self.headers.get("Content-Length") or "0"
            size = int(length) if re.fullmatch(r"[0-9]{1,10}", length) else 0
            self.body = self.rfile.read(min(size, 1 << 16))
            self.demo.answer(self)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = dispatch

    return Handler


def _demo_token(handler: Any) -> None:
    """The demo token endpoint: client_credentials with a client secret (demo.authenticate: a
    subclass may take assertions too), and a proof."""
    import urllib.parse

    demo = handler.demo
    form = dict(urllib.parse.parse_qsl(handler.body.decode("ascii", "replace")))
    # "" is no client of this server's
    client_id = form.get("client_id", "")
    secret = form.get("client_secret")
    basic = handler.headers.get("Authorization", "")
    if basic[:6].lower() == "basic ":
        try:
            pair = base64.b64decode(basic[6:]).decode("utf-8")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            pair = ":"
        client_id, _, secret = (urllib.parse.unquote_plus(part) for part in pair.partition(":"))
    if not demo.authenticate(form, client_id, secret):
        handler.reply(401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Basic realm="demo"'})
        return
    if form.get("grant_type") != "client_credentials":
        handler.reply(400, {"error": "unsupported_grant_type"})
        return
    proof = _demo_proof(handler, demo.token_endpoint)
    if proof is not None:
        token = demo.issue_token(client_id, form.get("scope", DEMO_SCOPE), proof.jkt)
        handler.reply(200, token, demo.nonce_headers())


def _demo_proof(handler: Any, url: str, **more: Any) -> VerifiedProof | None:
    """The request's proof, checked for ``url``; or None once its refusal is sent: the token
    endpoint's 400 with a JSON error, or the API's 401 with a DPoP challenge (the API passes
    ``more``: its access token and jkt), with a new nonce when the server requires them."""
    demo = handler.demo
    try:
        return verify_proof(
            handler.headers.get_all("DPoP"),  # None when there is none: verify_proof takes it
            method=handler.command,
            url=url,
            nonce=demo.nonces.check if demo.require_nonce else None,
            now=time.time() + demo.clock_skew,
            replay=demo.replay,
            **more,
        )
    except DPoPError as exc:
        why = exc.message
        if exc.code == "proof_nonce":
            why = "%s server requires nonce in DPoP proof" % (
                "Resource" if more else "Authorization"
            )
        body = {"error": exc.oauth_error}
        headers = demo.nonce_headers()
        if more:  # the API: 401, saying why in its DPoP challenge
            headers = challenge_headers(error=exc.oauth_error, error_description=why) | headers
        else:  # the token endpoint: 400, saying why in its JSON body
            body["error_description"] = why
        handler.reply(401 if more else 400, body, headers)
        return None


def _demo_api(handler: Any) -> None:
    """The demo API: a DPoP-bound token from the authority, and a proof; answers with the token's
    claims."""
    demo = handler.demo
    scheme, _, token = handler.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "dpop" or not token:
        handler.reply(401, {"error": "invalid_request"}, challenge_headers())
        return
    try:
        claims = demo.check_token(token.strip())
    except DPoPError:
        handler.reply(
            401,
            {"error": "invalid_token"},
            challenge_headers(
                error="invalid_token", error_description="token is invalid or expired"
            ),
        )
        return
    jkt = str(claims.get("cnf", {}).get("jkt"))
    url = demo.base_url + handler.path
    if _demo_proof(handler, url, access_token=token.strip(), jkt=jkt) is None:
        return
    demo.api_calls += 1
    listing = [
        {"type": name, "value": value if isinstance(value, str) else _json_compact(value).decode()}
        for name, value in claims.items()
    ]
    handler.reply(200, listing, demo.nonce_headers())


# =============================================================================
# 21. Command line
# =============================================================================
#
# Every option is declared once, in its command's table (_Opt): flags, DPOP_*
# twin, kind and help. The kind names its checker, _check_<kind>, and a value
# from argv and one from the environment go through the same checker before
# any key is read, any warning printed or any connection made. A bad value is
# one line, "dpop: usage: <option or variable>: <what is wrong>", exit 2. A
# new option inherits all of this by naming a kind; the test suite walks
# every option of every command with bad values of its kind.
#
# Decisions: abbreviated options are refused (a later option could change
# what a script's abbreviation means); an empty DPOP_* variable is unset;
# boolean variables take 1/0, true/false, yes/no, on/off; an option on the
# command line beats its variable; input files must be readable and a
# --cacert must load, output folders must exist, or it is a usage error.
# What a file holds is checked when it is read: a bad key is bad_key (1).
#
# Every command has one skeleton: main takes the command off argv (_command),
# _parse checks its options, and the command's function gets their values.

if TYPE_CHECKING:
    _Args = Dict[str, Any]  # a command's checked option values, by dest (see _parse)

_EXIT_STATUS: Sequence[Tuple[int, str]] = (
    (0, "success (for a request: HTTP 2xx or 3xx)"),
    (1, "a DPoP, OAuth, key or file error, internal_error, or a check inspect failed"),
    (2, "usage: a bad option, argument or DPOP_* variable, or an input file that cannot be read"),
    (3, "network, proxy, timeout or TLS failure (network, proxy, timeout, tls, bad_response)"),
    (4, "the API answered HTTP 4xx"),
    (5, "the API answered HTTP 5xx"),
)
# RFC 9110 §9 and more
_METHODS = frozenset("GET HEAD POST PUT PATCH DELETE OPTIONS TRACE CONNECT QUERY".split())
_EXIT_BY_CODE = dict.fromkeys("network timeout tls bad_response proxy".split(), 3)
_EXIT_BY_CODE["usage"] = 2
# C0 and C1 controls but tab and newline, and lone surrogates (argv and the environment carry
# non-UTF-8 bytes that way)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_SECONDS = 86400.0
# _printable(text): text with C0/C1 controls (terminal escapes) replaced by '?' (a binding of the
# regex's sub)
_printable = functools.partial(_CONTROLS.sub, "?")


# the metavar an option of these kinds shows in --help unless it names its own; with neither,
# argparse shows the option's name in capitals (--scope SCOPE)
_METAVARS = dict.fromkeys("infile file outfile newfile cafile cache".split(), "FILE")
_METAVARS.update(seconds="SECONDS", url="URL", proxy="URL", data="DATA", method="METHOD")


class _Opt:
    """One option (or positional argument) of a command: its attributes are set once, here (no
    __slots__: mypy --strict already refuses a misspelt one)."""

    def __init__(
        self,
        flags: str,
        kind: str,
        help: str,
        *,
        twin: bool = True,
        metavar: _Text = None,
        choices: Sequence[str] = (),
    ) -> None:
        self.flags = flags.split()  # "-o --output", or "URL" for a positional
        self.kind = kind
        # its checker, _check_<kind>: a kind without one is a KeyError as the tables are built
        self.check: Callable[[str], Any] = globals()["_check_" + kind]
        self.help = help
        self.metavar = metavar or _METAVARS.get(kind)  # given, or the kind's own
        self.repeat = kind in ("header", "param")  # -H and --param: one item each, repeatable
        self.choices = choices
        # "[METHOD]": an optional positional
        self.dest = self.flags[-1].lstrip("-").strip("[]").lower().replace("-", "_")
        self.positional = not self.flags[0].startswith("-")
        # the DPOP_<DEST> variable; None for no twin (positionals, twin=False: --json, --serve)
        self.env = "DPOP_" + self.dest.upper() if twin and not self.positional else None


def _check_text(value: str) -> str:
    """One line of text; what is wrong is said without the value, which may be a secret (the kind
    "secret" is this check by another name, for --client-secret and --proxy)."""
    if not value:
        raise ValueError("is empty")
    if _CONTROLS.search(value) or "\n" in value or "\t" in value:
        raise ValueError("holds control characters or bytes that are not UTF-8")
    if len(value) > 8192:
        raise ValueError("is longer than 8192 characters")
    return value


def _check_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("is not a number of seconds") from None
    if not 0.001 <= number <= _MAX_SECONDS:  # NaN fails this too
        raise ValueError("must be from 0.001 to %d seconds" % _MAX_SECONDS)
    return number


def _check_count(value: str, high: int = 100) -> int:
    """A whole number from 0 to ``high``: 100 for --retry, 65535 for a port (_check_port)."""
    if not re.fullmatch(r"[0-9]{1,5}", value) or int(value) > high:
        raise ValueError("must be a whole number from 0 to %d" % high)
    return int(value)


_check_port = functools.partial(_check_count, high=65535)


def _check_flag(value: str) -> bool:
    word = value.strip().lower()
    if word in "1 true yes on".split():
        return True
    if word in "0 false no off".split():
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


def _check_url(value: str) -> str:
    _Target(_check_text(value))  # bad_url, insecure_url
    return value


def _check_infile(value: str) -> str:
    if _check_text(value) != "-" and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        why = "not a file" if os.path.exists(value) else "no such file"
        raise ValueError(
            "cannot read %s (%s)" % (value, "no permission" if os.path.isfile(value) else why)
        )
    return value


def _check_file(value: str) -> str:
    """An input file that is never stdin: --cert, --cert-key, and --cacert (_check_cafile)."""
    if _check_infile(value) == "-":
        raise ValueError("takes a file, not stdin (-)")
    return value


def _check_cafile(value: str) -> str:
    import ssl

    try:
        ssl.create_default_context(cafile=_check_file(value))
    except OSError:  # ssl.SSLError too
        raise ValueError("%s is not a PEM bundle of CA certificates" % value) from None
    return value


def _check_outfile(value: str) -> str:
    if _check_text(value) == "-":
        return value  # stdout, as in curl
    if os.path.isdir(value) or not os.path.isdir(os.path.dirname(os.path.abspath(value))):
        raise ValueError("cannot write %s (a folder, or in a folder that does not exist)" % value)
    return value


def _check_newfile(value: str) -> str:
    if os.path.lexists(_check_outfile(value)) or value == "-":
        raise ValueError("%s exists (keygen never overwrites a file)" % value)
    return value


def _check_cache(value: str) -> str | None:
    """--token-cache [FILE]: "" (no FILE) or a flag word on means the default file, off means
    none."""
    try:  # no FILE, or a flag word
        return "" if _check_flag(value.strip() or "1") else None
    except ValueError:  # a FILE
        pass
    if os.path.isdir(_check_text(value)):  # its folder is made (0700) when missing
        raise ValueError("%s is a folder" % value)
    return value


def _check_header(value: str) -> Tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep:
        raise ValueError("takes 'Name: value'")
    header = (name.strip(), rest.strip())
    Client._user_headers([header])  # bad_argument: the library's own rule (an empty name too)
    return header


def _check_param(value: str) -> Tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name:
        raise ValueError("takes NAME=VALUE")
    if name in _RESERVED_TOKEN_PARAMS:
        raise ValueError("may not set %s (the client sets it)" % name)
    return name, rest


def _check_data(value: str) -> str:
    if value.startswith("@"):
        _check_infile(value[1:])
    return value  # anything else is the body; an empty -d is an empty body, as in curl


def _check_method(value: str) -> str:
    if not _TCHAR.fullmatch(value):
        raise ValueError("is not an HTTP method (a token such as GET)")
    return value


def _check_proxy(value: str) -> str:
    if value:
        _Proxy(_check_secret(value))  # never echoed: it may hold a password
    return value


_check_secret = _check_text


_WRITE_OUT = re.compile(r"%\{([a-z_]+)\}|%%|\\[nrt\\]")
_WRITE_OUT_NAMES = (
    "http_code response_code time_total url_effective num_redirects size_download"
    " content_type method"
).split()


def _check_writeout(value: str) -> str:
    unknown = set(re.findall(r"%\{([^}]*)\}", value)).difference(_WRITE_OUT_NAMES)
    if unknown or _CONTROLS.search(value):
        raise ValueError("knows %s" % ", ".join("%%{%s}" % name for name in _WRITE_OUT_NAMES))
    return value


def _write_out(fmt: str, values: Mapping[str, str]) -> None:
    """-w: curl's %{variables} and \\n \\r \\t \\\\ escapes, on stdout."""
    import sys

    escapes = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\", "%%": "%"}
    text = _WRITE_OUT.sub(
        lambda m: _printable(values[m.group(1)]) if m.group(1) else escapes[m.group(0)], fmt
    )
    # the server's values cleaned, the escapes kept
    sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    sys.stdout.flush()


# "choice": then one of opt.choices
_check_choice = _check_text


def _check_noproxy(value: str) -> str:
    if value:  # "" is allowed: no host bypasses the proxy
        _check_text(value)
    return value


def _env_items(kind: str, value: str) -> List[str]:
    """The items of a repeatable option's variable: -H lines, --param k=v&k2=v2."""
    import urllib.parse

    if kind == "param":
        try:
            pairs = urllib.parse.parse_qsl(value, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError("takes NAME=VALUE&NAME2=VALUE2") from None
        return ["%s=%s" % pair for pair in pairs]
    return [line for line in value.splitlines() if line.strip()]


def _checked(opt: _Opt, raw: str | List[str], where: str) -> Any:
    try:
        if opt.repeat and isinstance(raw, str):  # a variable: its items
            raw = _env_items(opt.kind, raw)
        if isinstance(raw, list):
            return [opt.check(item) for item in raw]
        value = opt.check(raw)
        if opt.choices and value not in opt.choices:
            raise ValueError("must be one of %s" % ", ".join(opt.choices))
        return value
    except (ValueError, DPoPError) as exc:
        why = exc.message if isinstance(exc, DPoPError) else str(exc)
        raise DPoPError("usage", "%s: %s" % (where, why)) from None


def _usage_message(message: str) -> str:
    """argparse's message, without echoing option values (one may be a secret)."""
    if message.startswith("unrecognized arguments: "):
        first = message.split(" ")[2].split("=")[0]
        if first.startswith("-"):
            return "unknown option %s" % first
        return "unexpected argument (more words than METHOD and URL)"  # never echoed: a secret?
    # a flag given a value: "argument -i: ignored explicit argument 'x'"
    if "explicit argument" in message:
        return message.split(":")[0] + ": takes no value"
    if message.startswith("argument --json"):  # today's --json takes the body, as curl's does
        return (
            message + " (--json DATA sends DATA as JSON, like curl 7.82+; -d DATA --json is gone)"
        )
    return message


def _parse(command: str, argv: List[str]) -> _Args:
    """The checked values of ``command``'s options (argv, else DPOP_*); "_argv": the option names
    given in argv."""
    import argparse
    import sys

    _, description, example, table = _COMMANDS[command]
    prog = "dpop" if command == "request" else "dpop " + command

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # argparse's own complaints, in our one-line form
            raise DPoPError("usage", "%s (see %s --help)" % (_usage_message(message), prog))

        def _print_message(self, message: str, file: Any = None) -> None:  # argparse drops OSError
            (file or sys.stderr).write(message)  # (writing "" is harmless)

    parser = Parser(
        prog=prog,
        description=description,
        epilog="%s\nexit status:\n%s\n"
        % (example, "\n".join("  %d  %s" % row for row in _EXIT_STATUS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for opt in table:
        text = opt.help
        if opt.choices:
            text += ": " + ", ".join(opt.choices)
        if opt.env:
            text += " [%s]" % opt.env
        # a positional is named by its dest; an option's dest is argparse's own from its long flag
        # (the last one), which is opt.dest
        names = [opt.dest] if opt.positional else opt.flags
        if opt.positional:  # "[METHOD]": optional (argparse brackets its metavar itself)
            how: Dict[str, Any] = {"nargs": "?" if "[" in opt.flags[0] else None}
        elif opt.kind == "flag":
            how = {"action": "store_const", "const": "1"}
        elif opt.kind == "cache":  # its FILE is optional
            how = {"nargs": "?", "const": ""}
        else:
            how = {"action": "append" if opt.repeat else "store"}
        parser.add_argument(*names, metavar=opt.metavar, help=text, **how)
    if command == "request":
        parser.add_argument("--version", action="version", version="dpop.py " + __version__)
    # --token-cache [FILE]: a URL or a method after it is never its FILE (argv is main's own copy,
    # changed in place)
    for i in range(len(argv) - 1):
        if argv[i] == "--token-cache" and ("://" in argv[i + 1] or argv[i + 1].upper() in _METHODS):
            argv[i] = "--token-cache="
    # options after positionals too, as in curl
    namespace = vars(parser.parse_intermixed_args(argv))
    values: _Args = {"_argv": {name for name, value in namespace.items() if value is not None}}
    for opt in table:
        raw, where = namespace[opt.dest], opt.flags[-1]
        if raw is None and opt.env and os.environ.get(opt.env):
            raw, where = os.environ[opt.env], opt.env
        values[opt.dest] = None if raw is None else _checked(opt, raw, where)
    return values


_MAX_INPUT = 64 << 20  # -d @FILE and -d @-


def _read_input(path: str, what: str, limit: int) -> bytes:
    """A file's (or stdin's) bytes; more than ``limit`` is a usage error, never a silent cut."""
    import sys

    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise DPoPError("io_error", "cannot read %s %s: %s" % (what, path, exc.strerror)) from None
    if len(data) > limit:
        raise DPoPError("usage", "%s %s is larger than %d bytes" % (what, path, limit))
    return data


def _cli_key(path: str | None) -> ECKey:
    if not path:
        raise DPoPError("usage", "--key FILE (or DPOP_KEY) is required")
    return load_key(_read_input(path, "key file", _MAX_KEY_INPUT))


class _LogSinks(list["Any"]):  # quoted: typing is imported for type checkers only
    """The session log's sinks for -v and --session-log: the terminal, the file, or both (a list of
    them that writes to each). The terminal needs no _printable here: _SessionLog._write already
    escapes every control character but tab and newline (_LOG_ESCAPES holds all of _CONTROLS)."""

    def write(self, text: str) -> None:
        for sink in self:
            sink.write(text)

    def flush(self) -> None:
        for sink in self:
            sink.flush()


_CLIENT_OPTIONS = (  # the request and token commands'
    _Opt("--key", "infile", "private key: PEM, DER or JWK file; - for stdin"),
    _Opt("--token-endpoint", "url", "where to get tokens"),
    _Opt(
        "--issuer",
        "url",
        "the authorization server: its metadata (RFC 8414) names the token"
        " endpoint, and the API's metadata (RFC 9728) must name it",
    ),
    _Opt("--client-id", "text", "the OAuth client_id", metavar="ID"),
    _Opt("--client-secret-file", "infile", "read the client secret from FILE"),
    _Opt(
        "--client-secret",
        "secret",
        "visible to other users in argv: prefer the variable",
        metavar="VALUE",
    ),
    _Opt("--scope", "text", "the scope to ask for"),
    _Opt(
        "--auth-method",
        "choice",
        "client authentication (default post)",
        choices=("post", "basic", *_AUTH_METHODS),
    ),
    _Opt(
        "--assertion-key",
        "infile",
        "private_key_jwt: the client's key (PEM, DER or JWK)",
    ),
    _Opt(
        "--assertion-kid",
        "text",
        "kid for the assertion header (default: the JWK's kid)",
        metavar="KID",
    ),
    _Opt(
        "--assertion-alg",
        "choice",
        "the assertion's alg",
        choices=sum(_ASSERTION_ALGS.values(), ()),
    ),
    _Opt(
        "--assertion-audience",
        "text",
        "the assertion's aud (default: the token endpoint)",
        metavar="AUD",
    ),
    _Opt(
        "--param",
        "param",
        "extra token request field (repeatable; variable: k=v&k2=v2)",
        metavar="K=V",
    ),
    _Opt("-v --verbose", "flag", "trace every exchange to stderr (secrets masked)"),
    _Opt(
        "--session-log",
        "outfile",
        "append every exchange to FILE (secrets masked; mode 0600)",
    ),
    _Opt("--timeout", "seconds", "per socket operation (default 30)"),
    _Opt("--max-time", "seconds", "the whole operation, token included (POSIX)"),
    _Opt(
        "--connect-timeout",
        "seconds",
        "each connection's set-up, TLS too (default: --timeout)",
    ),
    _Opt(
        "--retry", "count", "retries after 429/503 or a failed connection (default 2)", metavar="N"
    ),
    _Opt(
        "--retry-max-time",
        "seconds",
        "stop retrying after this many seconds (default 60)",
    ),
    _Opt(
        "--token-cache",
        "cache",
        "keep the token for later runs (default ~/.cache/dpop/tokens.json)",
    ),
    _Opt("--cacert", "cafile", "trust these CA certificates (PEM)"),
    _Opt(
        "-E --cert",
        "file",
        "TLS client certificate (PEM, with its key unless --cert-key)",
    ),
    _Opt("--cert-key", "file", "the client certificate's private key (PEM)"),
    _Opt(
        "-x --proxy",
        "proxy",
        'http://[user:password@]host[:port]; "" for none (default: *_PROXY)',
    ),
    _Opt(
        "--noproxy",
        "noproxy",
        "hosts, domains or CIDR blocks to reach directly (replaces NO_PROXY)",
        metavar="LIST",
    ),
)
_REQUEST_OPTIONS = (
    _Opt("[METHOD]", "method", "HTTP method (or -X; default GET, or POST with a body)"),
    _Opt("URL", "url", "the API URL (https, or http to a loopback host)"),
    _Opt("-X --request", "method", "HTTP method, as in curl"),
    *_CLIENT_OPTIONS,
    _Opt(
        "-H --header",
        "header",
        "request header (repeatable; variable: one per line)",
        metavar="'N: V'",
    ),
    _Opt(
        "-d --data",
        "data",
        "request body; @FILE reads a file, @- stdin (CR and LF dropped)",
    ),
    _Opt("--data-binary", "data", "request body; @FILE and @- byte for byte"),
    _Opt(
        "--json",
        "data",
        "JSON body (as --data-binary) with JSON Content-Type and Accept",
        twin=False,
    ),
    _Opt("-i --include", "flag", "print the status line and headers"),
    _Opt("-I --head", "flag", "HEAD request; print the status line and headers"),
    _Opt("-f --fail", "flag", "no body on stdout for HTTP 4xx/5xx (the exit status says which)"),
    _Opt("-s --silent", "flag", "print no error or warning (exit status only)"),
    _Opt("-S --show-error", "flag", "with -s: print errors all the same"),
    _Opt(
        "-w --write-out",
        "writeout",
        "after the transfer print FMT: %%{http_code}, %%{time_total}...",
        metavar="FMT",
    ),
    _Opt("-o --output", "outfile", "write the body to FILE"),
    _Opt("-L --location", "flag", "follow redirects (credentials stay with the first origin)"),
)

_REQUEST_DESCRIPTION = """\
Call an API protected by OAuth 2.0 DPoP (RFC 9449) with the client_credentials
grant. The first request fetches an access token (a POST to the token endpoint
with a DPoP proof); the API request then carries Authorization: DPoP <token>
and a fresh DPoP proof bound to that token.
"""

_REQUEST_EXAMPLE = """\
example: DPOP_CLIENT_SECRET=demo-secret python dpop.py --key k.pem \\
    --token-endpoint https://demo.example/connect/token --client-id m2m.dpop \\
    --scope api https://demo.example/api/dpop/test

  POST /connect/token   DPoP: <proof htm=POST htu=token endpoint>
    client_secret=demo-secret&client_id=m2m.dpop&scope=api&grant_type=client_credentials
  GET /api/dpop/test    Authorization: DPoP <token>   DPoP: <proof htm=GET htu=api url ath=...>

other commands (each has --help): %s

The client secret comes from DPOP_CLIENT_SECRET or --client-secret-file
(--client-secret works but is visible to other users in the process list).
Options have a DPOP_* variable (shown in brackets in each command's --help);
an empty variable counts as unset, and flags take 1/0, true/false, yes/no or
on/off.
"""


def _client_settings(args: _Args, say: Callable[[str], None]) -> Dict[str, Any]:
    """Client()'s keyword arguments from the options (but the key and the session log), with the
    client authentication options checked together. An option not given is left out: Client's
    defaults are the options' defaults. Issuer and token endpoint are never both given
    (_check_together)."""
    renamed = {
        "noproxy": "no_proxy",
        "param": "token_params",
        "cacert": "cafile",
        "retry": "max_retries",
        "location": "follow_redirects",  # request only
    }
    # the options Client() takes under their own names (auth_method's "post" and "basic" too:
    # Client knows the aliases)
    same = (
        "token_endpoint issuer client_id client_secret auth_method scope proxy timeout"
        " connect_timeout retry_max_time assertion_kid assertion_alg assertion_audience"
    ).split()
    settings = {
        renamed.get(name, name): args[name]
        for name in same + list(renamed)
        if args.get(name) is not None
    }
    path = args["client_secret_file"]
    if path:  # it replaces --client-secret
        secret = (
            _read_input(path, "client secret file", 64 << 10)
            .decode("utf-8", "replace")
            .strip("\r\n")
        )
        if not secret:
            raise DPoPError("usage", "--client-secret-file %s is empty" % path)
        settings["client_secret"] = secret
    method = args["auth_method"] or "post"
    auth_method = _AUTH_ALIASES.get(method, method)
    if auth_method.startswith("client_secret") and "client_secret" not in settings:
        raise DPoPError(
            "usage",
            "a client secret is required: set DPOP_CLIENT_SECRET or use --client-secret-file",
        )
    if (auth_method == "private_key_jwt") != bool(args["assertion_key"]):
        raise DPoPError(
            "usage",
            "--assertion-key FILE (or DPOP_ASSERTION_KEY) goes with --auth-method private_key_jwt",
        )
    alg = args["assertion_alg"]
    if alg and alg not in _ASSERTION_ALGS.get(auth_method, ()):
        raise DPoPError(
            "usage", "--assertion-alg %s does not go with --auth-method %s" % (alg, method)
        )
    if args["assertion_key"]:  # private_key_jwt's (checked above)
        settings["assertion_key"] = _read_input(
            args["assertion_key"], "assertion key file", _MAX_KEY_INPUT
        )
    if args["cert_key"] and not args["cert"]:
        raise DPoPError("usage", "--cert-key FILE goes with --cert FILE")
    if args["cert"]:  # a key of None: the key is in the certificate file, as for a lone file
        settings["client_cert"] = (args["cert"], args["cert_key"])
    if args["token_cache"] is not None:
        settings["token_cache"] = FileTokenCache(args["token_cache"] or None, warn=say)
    return settings


def _cli_run(args: _Args, scrub: _Scrubber, act: Callable[[Client], int]) -> int:
    """Build the Client from the options, run ``act`` (within --max-time), and close it and the
    session log, always."""
    import signal
    import sys

    def say(text: str) -> None:
        if not args.get("silent"):
            print("dpop: warning: " + _printable(text), file=sys.stderr)

    key = _cli_key(args["key"])  # first: a missing key is reported before any secret is read
    settings = _client_settings(args, say)
    if "client_secret" in args["_argv"]:  # every value is checked: now the warnings
        say(
            "--client-secret is visible to other users in the process list;"
            " use DPOP_CLIENT_SECRET or a file"
        )
    if "proxy" in args["_argv"] and args["proxy"] and _Proxy(args["proxy"]).secrets:
        say(
            "--proxy holds a password visible to other users in the process list;"
            " use HTTPS_PROXY or DPOP_PROXY"
        )
    # The secret is masked in errors by the Client's own scrubber (it adds client_secret), which is
    # chained to ``scrub`` as soon as there is a Client: only then can server text reach an error.
    log_file = _open_private(args["session_log"]) if args["session_log"] else None
    terminal = sys.stderr if args["verbose"] else None
    sinks = _LogSinks(sink for sink in (terminal, log_file) if sink is not None)
    if sinks:
        settings["session_log"] = sinks

    def out_of_time(*_: Any) -> None:
        raise _OutOfTime()

    # POSIX; elsewhere --timeout only
    timed = args["max_time"] and hasattr(signal, "setitimer")
    if timed:  # signals go to the main thread; a caller's own timer is never replaced
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0]
        ):
            raise DPoPError(
                "usage", "--max-time needs the main thread, with no other timer running"
            )
        previous = signal.signal(signal.SIGALRM, out_of_time)
        signal.setitimer(signal.ITIMER_REAL, args["max_time"])
    try:
        with Client(key, **settings) as client:
            scrub.others.append(client._scrub)  # the tokens it gets are masked in our errors too
            return act(client)
    except _OutOfTime:
        raise DPoPError(
            "timeout", "the operation took longer than --max-time %g s" % args["max_time"]
        ) from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        if log_file is not None:
            try:
                log_file.close()
            except OSError:  # already reported by the write that failed
                pass


class _OutOfTime(BaseException):
    """--max-time ran out: a BaseException, so that no retry or error handler takes it."""


def _cli_request(args: _Args, scrub: _Scrubber) -> int:
    _check_together(args)
    body: bytes | None = None
    for flag in "data data_binary json".split():
        data = args[flag]
        if data is None:
            continue
        if body is not None:
            raise DPoPError(
                "usage",
                "give one body: -d, --data-binary or --json (--json DATA replaces -d DATA --json)",
            )
        if data[:1] != "@":  # as curl: the argument's own bytes, even when they are not UTF-8
            body = data.encode("utf-8", "surrogateescape")
        else:  # -d @FILE drops CR and LF, as curl's does; the others keep every byte
            dropped = b"\r\n" if flag == "data" else b""
            # (_MAX_INPUT read at each call: tests lower it)
            body = _read_input(data[1:], "data file", _MAX_INPUT).translate(None, dropped)
    if os.environ.get("DPOP_JSON"):
        raise DPoPError(
            "usage", "DPOP_JSON is gone: --json DATA now takes the body, as curl 7.82+ does"
        )
    if args["method"] and args["request"]:
        raise DPoPError("usage", "give the method once: -X METHOD URL, or METHOD URL")
    default = "GET" if body is None else "POST"  # as curl: HEAD with -I, POST with a body, else GET
    if args["head"]:
        default = "HEAD"
    method = args["request"] or args["method"] or default
    headers = args["header"] or []  # a list of its own (_checked made it)
    if args["json"] is not None:  # Headers: the names the user gave, matched case-insensitively
        headers += [
            (n, "application/json") for n in ("Content-Type", "Accept") if n not in Headers(headers)
        ]
    started = time.monotonic()

    def send(client: Client) -> int:
        with client.request(
            method, args["url"], headers=headers, data=body, stream=True
        ) as response:
            response.body, size = _cli_output(response, args)
        if args["write_out"]:
            code = "%03d" % response.status
            _write_out(
                args["write_out"],
                {
                    "http_code": code,
                    "response_code": code,
                    "time_total": "%.6f" % (time.monotonic() - started),
                    "url_effective": response.url,
                    "num_redirects": str(response.redirects),
                    "size_download": str(size),
                    "method": method,
                    "content_type": response.headers.get("Content-Type") or "",
                },
            )
        if response.status >= 400:  # the URL without its query, and the server's reason
            where = _Target(response.url)
            # ": error: description", either part left out when the server gave none
            why = "".join(": " + part for part in _oauth_error(response, scrub) if part)
            raise DPoPError(
                "http_status",
                "%d %s from %s%s%s"
                % (response.status, response.reason, where.origin, where.path, why),
                status=response.status,
            )
        return 0

    try:
        return _cli_run(args, scrub, send)
    except DPoPError as exc:
        if args["silent"] and not args["show_error"]:  # curl's -s: the exit status says it all
            return _exit_status(exc)
        raise


def _cli_token(args: _Args, scrub: _Scrubber) -> int:
    _check_together(args)

    def show(client: Client) -> int:
        token = client._current_token()
        answer: Dict[str, Any] = {"access_token": token.value, "token_type": "DPoP"}
        if token.refresh_at is not None:  # the seconds left, as expires_in counts them
            margin = min(client._refresh_margin, (token.lifetime or 0) / 2)
            answer["expires_in"] = max(0, int(token.refresh_at - time.time() + margin))
        print(token.value if args["raw"] else json.dumps(answer, indent=2))
        return 0

    return _cli_run(args, scrub, show)


def _check_together(args: _Args) -> None:
    """What the request options must be together (each alone was checked by _parse)."""
    # (a missing --key is _cli_key's to report, before _cli_run reads any secret)
    if not args["client_id"]:
        raise DPoPError("usage", "--client-id ID (or DPOP_CLIENT_ID) is required")
    # a request may give neither: the API's metadata names them (RFC 9728); a token has no API
    given = [name for name in ("token_endpoint", "issuer") if args[name]]
    if len(given) > 1 or (not given and "url" not in args):
        raise DPoPError(
            "usage",
            "give one of --token-endpoint and --issuer (or DPOP_TOKEN_ENDPOINT / DPOP_ISSUER)"
            + ("" if given else ", or a URL to discover them from"),
        )
    # (--cert, --cert-key and --cacert are never "-": _check_file refuses it)
    names = "--key --client-secret-file --assertion-key --cert --cert-key --cacert".split()
    inputs = {flag: args[flag[2:].replace("-", "_")] for flag in names}
    for flag, name in (("-d", "data"), ("--data-binary", "data_binary"), ("--json", "json")):
        data = args.get(name) or ""
        inputs[flag] = data[1:] if data.startswith("@") else None
    readers = [flag for flag, path in inputs.items() if path == "-"]
    if len(readers) > 1:
        raise DPoPError("usage", "only one of %s can read stdin (-)" % " and ".join(readers))
    # Every file the run reads or keeps is safe from the files it writes: each writer is checked
    # against every other file named here, the other writer too.
    if args["token_cache"] is not None:
        inputs["--token-cache"] = args["token_cache"] or FileTokenCache().path
    output = args.get("output")  # request only; "-" is stdout (a --session-log of "-" is a file)
    inputs["--output"] = None if output == "-" else output
    inputs["--session-log"] = args["session_log"]
    for writer in ("--output", "--session-log"):
        out = inputs[writer]
        for flag, path in inputs.items():
            if out and path and path != "-" and flag != writer and _same_file(out, path):
                raise DPoPError("usage", "%s %s would overwrite the %s file" % (writer, out, flag))
    if args["scope"] and "scope" in dict(args["param"] or ()):
        raise DPoPError("usage", "give the scope once: --scope, or --param scope=...")


def _same_file(one: str, other: str) -> bool:
    """Whether two paths name one file: the same path once links are resolved, or the same existing
    file."""
    return os.path.realpath(one) == os.path.realpath(other) or (
        os.path.exists(one) and os.path.exists(other) and os.path.samefile(one, other)
    )


def _cli_output(response: Response, args: _Args) -> Tuple[bytes, int]:
    """-i's (or -I's) head on stdout, then the body, chunk by chunk, to -o FILE or stdout (with -f,
    not for an error status); returns the body's first chunk for an error status (for its OAuth
    error) and the body's size."""
    import sys

    first, size, output = b"", 0, args["output"]
    failed = response.status >= 400
    keep = not (args["fail"] and failed)  # -f drops an error's body

    def chunks() -> Iterator[bytes]:
        nonlocal first, size
        for chunk in response.iter_bytes():
            size += len(chunk)
            if failed and not first:
                first = chunk[:65536]
            if keep:
                yield chunk

    out = sys.stdout.buffer
    if args["include"] or args["head"]:
        head = ["%s %d %s" % (response.version, response.status, response.reason)]
        head += ["%s: %s" % item for item in response.headers.items()]
        out.write(("\r\n".join(map(_printable, head)) + "\r\n\r\n").encode("latin-1", "replace"))
    if output and output != "-" and keep:
        out.flush()
        try:
            _write_whole(output, chunks())
        except OSError as exc:
            raise DPoPError("io_error", "cannot write %s: %s" % (output, exc.strerror)) from None
        return first, size
    # stdout; or, with -f and an error status, nothing at all: the body is read for its OAuth
    # error, and -o FILE is never opened
    last = b"\n"
    for chunk in chunks():
        out.write(chunk)
        last = chunk[-1:]
    if last != b"\n" and failed and sys.stdout.isatty():
        out.write(b"\n")  # the error that follows on the terminal starts its own line
    out.flush()
    return first, size


def _write_whole(path: str, chunks: Iterator[bytes]) -> None:
    """-o FILE: the body goes to a new file beside FILE, which replaces FILE only once the body
    arrived whole, so a transfer that fails loses nothing. The new file gets FILE's permission
    bits (never set-id bits) and group, or 0666 less the umask. FILE is written in place, as curl
    does, when it is not a regular file (/dev/null, /dev/stdout on a pipe, a FIFO), when its owner
    or hard links could not be kept, or when its folder is not writable. A symbolic link is
    followed. A run killed (SIGKILL) while writing leaves FILE.<random>.part beside FILE."""
    import stat

    try:
        info: os.stat_result | None = os.stat(path)  # follows links, /proc's fd links too
    except FileNotFoundError:
        info = None
    target = os.path.realpath(path)
    uid = getattr(os, "geteuid", lambda: 0)()
    in_place = info is not None and (
        not stat.S_ISREG(info.st_mode)
        or info.st_nlink > 1
        # not root (nor Windows, where uid is 0): FILE's owner and group must be ours to keep
        or (uid != 0 and (info.st_uid != uid or info.st_gid not in (os.getegid(), *os.getgroups())))
    )
    if in_place or not os.access(os.path.dirname(target), os.W_OK):
        with open(path, "wb") as sink:
            sink.writelines(chunks)
        return
    mode = 0o666 if info is None else info.st_mode & 0o777  # no set-id or sticky bits
    partial = "%s.%s.part" % (target, os.urandom(4).hex())
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as sink:
            if info is not None:
                os.fchmod(fd, mode)  # as FILE had them, whatever the umask
                if os.fstat(fd).st_gid != info.st_gid:
                    os.fchown(fd, -1, info.st_gid)  # a group of ours (or we are root)
            sink.writelines(chunks)
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise


def _cli_keygen(args: _Args, scrub: _Scrubber) -> int:
    import sys

    output = args["output"]
    key = generate_key()
    pem = key.to_pem()
    if output:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise DPoPError("io_error", "cannot create %s: %s" % (output, exc.strerror)) from None
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        print("dpop: wrote %s (jkt %s)" % (output, key.thumbprint()), file=sys.stderr)
    else:
        sys.stdout.write(pem)
    return 0


def _cli_jwk(args: _Args, scrub: _Scrubber) -> int:
    key = _cli_key(args["key"])
    print(json.dumps({"jwk": key.public_jwk(), "jkt": key.thumbprint()}, indent=2))
    return 0


def _read_token(path: str | None, scrub: _Scrubber) -> str | None:
    """The access token in the file ``path`` (None for no path), masked in errors from now on."""
    if not path:
        return None
    raw = _read_input(path, "access token file", 64 << 10)
    token = raw.decode("ascii", "replace").strip()
    scrub.add(token)
    return token


def _cli_proof(args: _Args, scrub: _Scrubber) -> int:
    key = _cli_key(args["key"])
    token = _read_token(args["access_token_file"], scrub)
    print(make_proof(key, args["method"], args["url"], access_token=token, nonce=args["nonce"]))
    return 0


def _cli_demo(args: _Args, scrub: _Scrubber) -> int:
    import sys

    key = _cli_key(args["key"]) if args["key"] else generate_key()  # (--serve uses none)
    err = sys.stderr
    # Two servers: the authorization server and the API are two origins with their own nonces, as in
    # a real deployment.
    nonces = bool(args["require_nonce"])
    with (
        DemoServer(require_nonce=nonces, port=args["port"] or 0) as auth,
        DemoServer(require_nonce=nonces, authority=auth) as api,
    ):
        # Client()'s keywords for these servers: for the demo's own client, or announced by --serve
        found: Dict[str, Any] = {
            "token_endpoint": auth.token_endpoint,
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "scope": DEMO_SCOPE,
        }
        if args["serve"]:
            found["api"] = api.api_url
            err.write(
                "dpop demo: serving on loopback until Ctrl-C; try:\n"
                "  DPOP_CLIENT_SECRET=%(client_secret)s python dpop.py --key KEY.pem"
                " --token-endpoint %(token_endpoint)s --client-id %(client_id)s --scope %(scope)s"
                " GET %(api)s\n" % found
            )  # out at once, no flush: Python 3.9+ never block-buffers stderr, even into a pipe
            print(json.dumps(found), flush=True)  # and one JSON line on stdout (bench/ reads it)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        jkt = key.thumbprint()
        err.write(
            "dpop demo: authorization server %s and API %s on loopback%s\n"
            % (auth.base_url, api.base_url, ", both requiring nonces" if nonces else "")
        )
        err.write("dpop demo: key jkt %s; session log follows, secrets shown as ****\n\n" % jkt)
        with Client(key, session_log=err, **found) as client:
            first, second = client.get(api.api_url), client.get(api.api_url)
        err.write(
            "\ndpop demo: %d API calls (%d, %d) with %d token request(s);"
            " the token is bound to jkt %s\n"
            % (api.api_calls, first.status, second.status, client.token_requests, jkt)
        )
        print(json.dumps(second.json(), indent=2))
        return 0 if first.status == second.status == 200 else 1


# RFC 6979 §A.2.5 (P-256, SHA-256, message "sample") and RFC 9449 §4.1's proof:
# known answers for `python dpop.py selftest`.
_KAT_D = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
_KAT_SAMPLE_RS = (
    "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
)
_KAT_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TV"
    "CIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8"
    "lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)


def self_test() -> List[str]:
    """Run the known-answer tests; return the names of the failures (none: [])."""
    failures = []
    if _key_from_parts(_KAT_D).sign(b"sample", hedge=False).hex().upper() != _KAT_SAMPLE_RS:
        failures.append("RFC 6979 A.2.5 signature")
    try:
        proof = verify_proof(
            _KAT_PROOF, method="POST", url="https://server.example.com/token", now=1562262616
        )
        if proof.jkt != "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I":
            failures.append("RFC 9449 thumbprint")
    except DPoPError:
        failures.append("RFC 9449 section 4.1 proof")
    ath = access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")  # RFC 9449 §7.1
    if ath != "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo":
        failures.append("RFC 9449 ath")
    fresh = generate_key()
    signature = fresh.sign(b"round trip")
    if not fresh.verify(b"round trip", signature) or fresh.verify(b"round trip!", signature):
        failures.append("sign/verify round trip")
    if load_key(fresh.to_pem()) != fresh or load_key(fresh.private_jwk()) != fresh:
        failures.append("PEM/JWK round trip")
    return failures


def _cli_selftest(args: _Args, scrub: _Scrubber) -> int:
    failures = self_test()
    print(
        "dpop selftest: "
        + ("FAILED: " + ", ".join(failures) if failures else "ok (RFC 6979, RFC 9449, round trip)")
    )
    return 1 if failures else 0


def _cli_jwks(source: str) -> Any:
    """The JWK Set in a file, or at an https URL (a GET with no credentials and no proof)."""
    if not re.match(r"(?i)https?://", source):
        return _json_object(_read_input(source, "JWKS file", _MAX_TOKEN_BODY), "JWKS")
    # a Client for its connection rules alone (TLS, proxies from the environment, timeouts, size,
    # no redirects): no token is fetched, so its key and client id are stand-ins
    with Client(generate_key(), client_id="dpop-inspect", auth_method="none") as client:
        answer = client._get(source)
    if answer.status != 200:
        raise DPoPError("http_status", "JWKS %s answered %d" % (source, answer.status))
    return _json_object(answer.body, "JWKS")


def _cli_inspect(args: _Args, scrub: _Scrubber) -> int:
    # the argument (one line), else standard input (a whole response, and no token in argv)
    thing = args["thing"] or _read_input("-", "input", _MAX_TOKEN_BODY).decode("utf-8", "replace")
    thing = thing.strip()
    token = _read_token(args["access_token_file"], scrub)
    jkt = args["jkt"] or (_cli_key(args["key"]).thumbprint() if args["key"] else None)
    now = time.time()
    # a JWS is a DPoP proof when its header has a jwk, or a typ that says dpop (dpop+jwt,
    # application/dpop+jwt); one that does not split (a segment that is not base64url, a header
    # that is not JSON) is judged as a proof too: its checks say what is wrong
    try:
        header = _jws_split(thing, _MAX_JWS)[0]
    except DPoPError:
        header = {"jwk": None}
    if not _JWS_SHAPE.fullmatch(thing):
        report = _inspect_response(thing, now)
    elif "jwk" in header or "dpop" in str(header.get("typ")).lower():
        report = _inspect_proof(
            thing,
            now,
            method=args["method"],
            url=args["url"],
            access_token=token,
            jkt=jkt,
            nonce=args["nonce"],
        )
    else:
        scrub.add(thing)  # an access token: in no error
        jwks = _cli_jwks(args["jwks"]) if args["jwks"] else None
        report = _inspect_token(thing, now, jkt, jwks, args["show_token"])
    # checks: [code, passed (true, false, or null: not checked), reason], in the order run
    failed = any(passed is False for _, passed, _ in report["checks"])
    if args["json"]:
        print(json.dumps(dict(report, passed=not failed), indent=2))
    else:
        checks = report.pop("checks")
        for name, value in report.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            print(_printable("%-17s %s" % (name, shown)))
        for code, passed, reason in checks:
            mark = {True: "pass", False: "FAIL", None: "  - "}[passed]
            print(_printable("  %s  %s  %s" % (mark, code, reason)).rstrip())
    return int(failed)


_SUBCOMMANDS = "demo keygen jwk proof token inspect selftest"
_KEY_OPTION = _Opt("--key", "infile", "PEM, DER or JWK file; - for stdin")
# what a proof is made for (dpop proof) or checked against (dpop inspect) besides the request
_PROOF_CONTEXT = (
    _KEY_OPTION,
    _Opt("--access-token-file", "infile", "the access token in FILE, for ath"),
    _Opt("--nonce", "nonce", "a DPoP-Nonce the server sent"),
)

# name: (function, description, example, options)
_COMMANDS: Dict[str, Tuple[Callable[[_Args, _Scrubber], int], str, str, Sequence[_Opt]]] = {
    "request": (
        _cli_request,
        _REQUEST_DESCRIPTION,
        _REQUEST_EXAMPLE % _SUBCOMMANDS,
        _REQUEST_OPTIONS,
    ),
    "keygen": (
        _cli_keygen,
        "Make a new P-256 key and print it (or write it) as PKCS#8 PEM.",
        "example: python dpop.py keygen -o client.pem   (mode 0600; never overwrites)",
        (
            _Opt(
                "-o --output",
                "newfile",
                "write the key here (mode 0600; never overwrites)",
                twin=False,
            ),
        ),
    ),
    "jwk": (
        _cli_jwk,
        "Print a key's public JWK and its RFC 7638 thumbprint (jkt) as JSON.",
        "example: python dpop.py jwk --key client.pem",
        (_KEY_OPTION,),
    ),
    "proof": (
        _cli_proof,
        "Print one DPoP proof for METHOD URL, e.g. to use with curl.",
        'example: curl -H "DPoP: $(python dpop.py proof --key k.pem GET https://api.example/x)"'
        " ...",
        (
            _Opt("METHOD", "method", "HTTP method, e.g. GET"),
            _Opt("URL", "url", "the request URL (htu)"),
            *_PROOF_CONTEXT,
        ),
    ),
    "demo": (
        _cli_demo,
        "Run the whole flow against a local authorization server and API, printing the session"
        " log.",
        "example: python dpop.py demo --require-nonce    (or --serve to keep the servers up)",
        (
            _Opt("--require-nonce", "flag", "servers demand DPoP nonces"),
            _Opt("--serve", "flag", "only run the servers, until Ctrl-C", twin=False),
            _Opt(
                "--port",
                "port",
                "the authorization server's port (default: any free one)",
            ),
            _Opt("--key", "infile", "use this key instead of a new one"),
        ),
    ),
    "token": (
        _cli_token,
        "Fetch a DPoP-bound access token; print the token response as JSON"
        " (expires_in: the seconds left).",
        "example: TOKEN=$(python dpop.py token --raw --key k.pem --token-endpoint URL"
        " --client-id ID)",
        (*_CLIENT_OPTIONS, _Opt("--raw", "flag", "print only the access token")),
    ),
    "inspect": (
        _cli_inspect,
        "Explain a DPoP proof, a JWT access token, a WWW-Authenticate value or an HTTP response"
        " (THING, or standard input), with every check passed or failed.",
        "example: python dpop.py inspect --method GET --url https://api.example/x < proof.txt"
        "   (exit status 1 when a check fails)",
        (
            _Opt("[THING]", "text", "what to explain (default: standard input)", metavar="THING"),
            _Opt("--method", "method", "the request's method, to check htm"),
            _Opt("--url", "url", "the request's URL, to check htu"),
            *_PROOF_CONTEXT,
            _Opt("--jkt", "text", "the key thumbprint expected (else --key's)"),
            _Opt("--jwks", "text", "check a token's signature with this JWK Set FILE or URL"),
            _Opt("--json", "flag", "print the report as JSON", twin=False),
            _Opt("--show-token", "flag", "print an access token, not its hash", twin=False),
        ),
    ),
    "selftest": (
        _cli_selftest,
        "Run the known-answer tests.",
        "example: python dpop.py selftest",
        (),
    ),
}


def _command(args: List[str]) -> str:
    """The command ``args`` start with (taken off them); "request" when they start with a method,
    URL or option. ``help [COMMAND]`` becomes that command's --help; a word that is none of these is
    a usage error naming it."""
    import difflib

    word = args[0] if args else ""
    names = _SUBCOMMANDS.split()
    # "help COMMAND" is "COMMAND --help"; "help" alone, or before no command, "--help"
    if word == "help":
        args[:] = [topic for topic in args[1:2] if topic in names] + ["--help"]
        word = args[0]
    if word in names:
        del args[0]
        return word
    if re.fullmatch(r"[a-z][a-z0-9-]*", word) and word.upper() not in _METHODS:
        names.append("help")
        close = difflib.get_close_matches(word, names, n=1)
        hint = " (did you mean %s?)" % close[0] if close else ""
        raise DPoPError(
            "usage",
            "unknown command '%s'%s; commands: %s; a request is: dpop [METHOD] URL"
            % (word, hint, ", ".join(names)),
        )
    return "request"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (see ``python dpop.py --help``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    scrub = _Scrubber()
    try:
        try:
            command = _command(args)  # taken off args, which are then its options and arguments
            status = _COMMANDS[command][0](_parse(command, args), scrub)
        except SystemExit as exc:  # argparse: --help, --version
            status = exc.code if isinstance(exc.code, int) else 2
        sys.stdout.flush()  # a full disk is reported here, not at exit
        return status
    except KeyboardInterrupt:
        return 130
    except DPoPError as exc:
        error = exc
    except OSError as exc:  # writing stdout: a full disk, a closed pipe
        error = DPoPError("io_error", "cannot write the output: %s" % (exc.strerror or exc))
        sys.stdout = open(os.devnull, "w")  # the broken stream must not be flushed again at exit
    except Exception as exc:  # a safety net for bugs, not a substitute for checking input
        if os.environ.get("DPOP_DEBUG") == "1":
            raise
        error = DPoPError(
            "internal_error",
            "%s: %s (DPOP_DEBUG=1 shows the traceback)" % (type(exc).__name__, exc),
        )
    try:
        sys.stderr.write("dpop: %s\n" % _printable(scrub(str(error))))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return _exit_status(error)


def _exit_status(error: DPoPError) -> int:
    if error.code == "http_status" and error.status is not None:
        return 5 if error.status >= 500 else 4
    return _EXIT_BY_CODE.get(error.code, 1)


if __name__ == "__main__":
    import sys

    sys.exit(main())
