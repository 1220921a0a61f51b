"""Tests for dpop.py: published vectors first, then properties, then the HTTP parts.

Run with ``python -m pytest`` (see README). Wycheproof files are read in place
from ../shared/vectors/wycheproof (or $DPOP_WYCHEPROOF_DIR); those tests skip
when the folder is absent.
"""

import base64
import copy
import hashlib
import json
import os
import pickle
import re
import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dpop
from dpop import DPoPError

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
KEYS = VECTORS / "keys"
WYCHEPROOF = Path(os.environ.get("DPOP_WYCHEPROOF_DIR", HERE.parent / "shared" / "vectors" / "wycheproof"))

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


def load_vector(name):
    return json.loads((VECTORS / name).read_text())


def wycheproof(name):
    path = WYCHEPROOF / name
    if not path.is_file():
        pytest.skip("Wycheproof vectors not found at %s" % WYCHEPROOF)
    return json.loads(path.read_text())


def raises_code(code):
    """Context manager: a DPoPError with exactly this code."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(DPoPError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert self.info.value.code == code, "expected %s, got %s" % (code, self.info.value)
            return handled

    return _Check()


# ---------------------------------------------------------------------------
# A slow affine reference, kept here only, as a differential oracle.
# ---------------------------------------------------------------------------

P, N, B = dpop.p, dpop.n, dpop.b
G = (dpop.Gx, dpop.Gy)


def ref_add(P1, P2):
    if P1 is None:
        return P2
    if P2 is None:
        return P1
    (x1, y1), (x2, y2) = P1, P2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if P1 == P2:
        lam = (3 * x1 * x1 - 3) * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def ref_mul(k, point):
    result = None
    addend = point
    while k:
        if k & 1:
            result = ref_add(result, addend)
        addend = ref_add(addend, addend)
        k >>= 1
    return result


def affine(jacobian):
    return dpop._to_affine_vartime(jacobian)


EDGE_SCALARS = [1, 2, 3, N - 1, N - 2, N - 3, (N - 1) // 2, (N + 1) // 2] + [2**i for i in range(0, 256, 17)] + [2**255, 2**256 - 2**224]


# ===========================================================================
# Curve parameters and arithmetic
# ===========================================================================


def test_curve_parameters():
    assert dpop._on_curve(*G)
    assert ref_mul(N, G) is None
    assert P == 2**256 - 2**224 + 2**192 + 2**96 - 1


@pytest.mark.parametrize("k", [k % N for k in EDGE_SCALARS if k % N])
def test_base_multiplication_matches_reference_on_edge_scalars(k):
    expected = ref_mul(k, G)
    for width in (4, 12):
        table = dpop._g_tables.get(width) or dpop._build_table(*G, width)
        dpop._g_tables[width] = table
        assert affine(dpop._mul_fixed(k, table)) == expected
        assert affine(dpop._walk_vartime(dpop._INFINITY, k, table)) == expected


def test_base_multiplication_of_zero_is_infinity():
    table = dpop._g_tables.get(4) or dpop._build_table(*G, 4)
    assert dpop._mul_fixed(0, table)[2] == 0


@settings(max_examples=60)
@given(st.integers(min_value=1, max_value=N - 1))
def test_base_multiplication_matches_reference(k):
    expected = ref_mul(k, G)
    assert affine(dpop._mul_base(k)) == expected


@settings(max_examples=40)
@given(st.integers(min_value=0, max_value=N - 1), st.integers(min_value=0, max_value=N - 1), st.integers(min_value=1, max_value=N - 1))
def test_mul_add_matches_reference(u1, u2, q):
    Q = ref_mul(q, G)
    expected = ref_add(ref_mul(u1, G), ref_mul(u2, Q))
    assert affine(dpop._mul_add_vartime(u1, u2, *Q)) == expected
    qtable = dpop._build_table(*Q, 5)
    assert affine(dpop._mul_add_vartime(u1, u2, *Q, qtable)) == expected


@pytest.mark.parametrize("case", ["P+P", "P-P", "u1G=u2Q", "u1G=-u2Q"])
def test_mul_add_exceptional_cases(case):
    q = 0x1234567
    Q = ref_mul(q, G)
    u2 = 5
    if case == "P+P":
        u1, u2, Q = 7, 7, G
    elif case == "P-P":
        u1, u2, Q = 7, N - 7, G
    elif case == "u1G=u2Q":
        u1 = u2 * q % N
    else:
        u1 = (-u2 * q) % N
    expected = ref_add(ref_mul(u1, G), ref_mul(u2, Q))
    assert affine(dpop._mul_add_vartime(u1, u2, *Q)) == expected
    assert affine(dpop._mul_add_vartime(u1, u2, *Q, dpop._build_table(*Q, 4))) == expected


@pytest.mark.parametrize("width", [4, 5, 6, 12])
def test_fixed_window_cannot_hit_exceptional_cases(width):
    """The bound _mul_fixed's docstring relies on, checked for each width used."""
    _, offset, rows = dpop._build_table(*G, width) if width < 8 else dpop._g_tables.setdefault(12, dpop._build_table(*G, 12))
    m = len(rows)
    half = 1 << (width - 1)
    assert width * m >= 257
    # k + OFFSET fits in m windows for every k < n
    assert (N - 1 + offset) >> (width * m) == 0
    for i in range(m):
        s_max = half * ((1 << (width * i)) - 1) // ((1 << width) - 1)
        assert s_max < 1 << (width * i)
        if i < m - 1:
            assert s_max + half * (1 << (width * i)) < N
    # Last row: digits that occur for k in [1, n), and s = T mod n impossible.
    shift = width * (m - 1)
    lo = ((1 + offset) >> shift) - half
    hi = ((N - 1 + offset) >> shift) - half
    s_max = half * ((1 << shift) - 1) // ((1 << width) - 1)
    for d in range(lo, hi + 1):
        if d == 0:
            continue
        T = d << shift
        for j in (-1, 1):
            # s = T - j*n and s + T = k: the one way to double in the last row
            k = 2 * T - j * N
            reachable = 1 <= k < N and abs(k - T) <= s_max and ((k + offset) >> shift) - half == d
            assert not reachable, (width, d, j)


def test_batch_affine_matches_single():
    points = [dpop._double(*G, 1), dpop._add_mixed_vartime((G[0], G[1], 1), *ref_mul(3, G))]
    assert dpop._batch_to_affine_vartime(points) == [affine(pt) for pt in points]


def test_inverse_blinded():
    for value in (1, 2, P - 1, 0xDEADBEEF):
        for blind in (1, 12345, P - 1):
            assert dpop._inverse_blinded(value, P, blind) * value % P == 1


def test_wnaf_reconstructs():
    for k in EDGE_SCALARS:
        digits = dpop._wnaf(k, 5)
        assert sum(d << i for i, d in enumerate(digits)) == k
        assert all(d == 0 or (d % 2 == 1 and -16 < d < 16) for d in digits)


def test_tables_are_not_built_at_import():
    import subprocess
    import sys

    code = "import dpop; assert dpop._g_tables == {} and dpop._g_uses == 0; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ===========================================================================
# ECDSA: published vectors
# ===========================================================================


def test_rfc6979_a25_vectors():
    v = load_vector("rfc6979_p256_sha256.json")
    d = int(v["x"], 16)
    key = dpop._key_from_parts(d, None)
    assert key.public_point == (int(v["Ux"], 16), int(v["Uy"], 16))
    for sig in v["signatures"]:
        msg = sig["message"].encode()
        digest = hashlib.sha256(msg).digest()
        k = next(dpop._rfc6979_nonces(d, digest, b""))
        assert k == int(sig["k"], 16)
        expected = bytes.fromhex(sig["r"] + sig["s"])
        assert key.sign(msg, hedge=False) == expected
        assert key.sign(msg, hedge=False) == expected  # deterministic
        assert key.verify(msg, expected)
        # hedged signatures differ, and still verify
        hedged = key.sign(msg)
        assert hedged != expected and key.verify(msg, hedged)


def test_rfc7515_a3_example_verifies():
    v = load_vector("rfc7515_a3_es256.json")
    public = {k: v["jwk"][k] for k in ("kty", "crv", "x", "y")}
    header, payload = dpop.jws_verify(v["jws"], public)
    assert header == {"alg": "ES256"}
    assert payload.decode() == v["payload"]
    # the private key of A.3.1 matches its public point
    key = dpop.load_key(v["jwk"])
    assert key.public_jwk() == public
    dpop.jws_verify(v["jws"], key)


def test_rfc7638_thumbprint():
    v = load_vector("rfc7638_thumbprint.json")
    assert dpop.jwk_thumbprint(v["jwk"]) == v["thumbprint"]
    assert base64.urlsafe_b64decode(v["thumbprint"] + "=") == bytes(v["sha256_octets"])


def test_rfc9449_example_proofs_verify_with_embedded_jwk():
    v = load_vector("rfc9449_examples.json")
    assert dpop.jwk_thumbprint(v["jwk"]) == v["jkt"]
    assert dpop.load_key(v["jwk"]).thumbprint() == v["jkt"]
    for proof in v["proofs"]:
        header_b64 = proof["proof"].split(".")[0]
        header = json.loads(dpop.b64url_decode(header_b64))
        assert header["jwk"] == v["jwk"]
        header, payload = dpop.jws_verify(proof["proof"], header["jwk"])
        claims = json.loads(payload)
        assert (claims["htm"], claims["htu"], claims["iat"], claims["jti"]) == (proof["htm"], proof["htu"], proof["iat"], proof["jti"])


# ===========================================================================
# ECDSA: Wycheproof
# ===========================================================================


def test_wycheproof_ecdsa_p256_p1363():
    data = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json")
    checked = 0
    wrong = []
    for group in data["testGroups"]:
        assert group["sha"] == "SHA-256"
        key = dpop.load_key(group["publicKeyPem"])
        for test in group["tests"]:
            ok = key.verify(bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]))
            if ok != (test["result"] == "valid"):
                wrong.append((test["tcId"], test["comment"], test["result"]))
            checked += 1
    assert not wrong
    assert checked == data["numberOfTests"] == 262


def test_wycheproof_ecdsa_key_forms_agree():
    data = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json")
    for group in data["testGroups"]:
        pk = group["publicKey"]
        expected = (int(pk["wx"], 16), int(pk["wy"], 16))
        from_pem = dpop.load_key(group["publicKeyPem"])
        from_der = dpop.load_key(bytes.fromhex(group["publicKeyDer"]))
        assert from_pem.public_point == from_der.public_point == expected
        assert not from_pem.has_private
        if "publicKeyJwk" in group:
            jwk = {k: v for k, v in group["publicKeyJwk"].items() if k != "kid"}
            assert dpop.load_key(jwk) == from_pem
            assert dpop.jwk_thumbprint(group["publicKeyJwk"]) == from_pem.thumbprint()
        assert dpop.load_key(bytes.fromhex(pk["uncompressed"]).hex() and _spki(pk["uncompressed"])) == from_der


def _spki(uncompressed_hex):
    """Rebuild SPKI DER from the raw point, independently of dpop's encoder."""
    prefix = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
    return prefix + bytes.fromhex(uncompressed_hex)


def test_wycheproof_jws_es256_groups():
    data = wycheproof("json_web_signature_test.json")
    judged = 0
    for group in data["testGroups"]:
        public = group.get("public")
        if not public or public.get("kty") != "EC" or public.get("crv") != "P-256":
            continue
        for test in group["tests"]:
            try:
                dpop.jws_verify(test["jws"], public)
                accepted = True
            except DPoPError:
                accepted = False
            assert accepted == (test["result"] == "valid"), (test["tcId"], test["comment"])
            judged += 1
    assert judged == 15 + 1 + 1 + 24


def test_wycheproof_jws_non_es256_groups_are_all_refused():
    data = wycheproof("json_web_signature_test.json")
    for group in data["testGroups"]:
        public = group.get("public") or group.get("private")
        if public and public.get("kty") == "EC" and public.get("crv") == "P-256":
            continue
        for test in group["tests"]:
            jws = test.get("jws")
            if not isinstance(jws, str) or jws.count(".") != 2:
                continue
            with pytest.raises(DPoPError):
                dpop.jws_verify(jws, dpop.generate_key())


def test_wycheproof_jwk_ec_cases():
    data = wycheproof("json_web_key_test.json")
    seen = 0
    for group in data["testGroups"]:
        keys = (group.get("public") or {}).get("keys", [])
        if len(keys) != 1 or keys[0].get("x") is None:
            continue
        for test in group["tests"]:
            try:
                dpop.jws_verify(test["jws"], keys[0])
                accepted = True
            except DPoPError:
                accepted = False
            assert accepted == (test["result"] == "valid"), (test["tcId"], group["comment"])
            seen += 1
    assert seen >= 5


# ===========================================================================
# ECDSA: properties
# ===========================================================================

SIGN_KEY = dpop.generate_key()


@settings(max_examples=40)
@given(st.binary(max_size=300))
def test_sign_verify_round_trip(message):
    signature = SIGN_KEY.sign(message)
    assert len(signature) == 64
    assert SIGN_KEY.verify(message, signature)
    assert SIGN_KEY.public_key().verify(message, signature)


@settings(max_examples=40)
@given(st.binary(min_size=1, max_size=100), st.data())
def test_any_bit_flip_fails(message, data):
    signature = SIGN_KEY.sign(message)
    which = data.draw(st.sampled_from(["message", "signature"]))
    target = bytearray(message if which == "message" else signature)
    bit = data.draw(st.integers(min_value=0, max_value=len(target) * 8 - 1))
    target[bit // 8] ^= 1 << (bit % 8)
    if which == "message":
        assert not SIGN_KEY.verify(bytes(target), signature)
    else:
        assert not SIGN_KEY.verify(message, bytes(target))


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_verify_never_raises_on_attacker_bytes(signature):
    assert SIGN_KEY.verify(b"msg", signature) in (True, False)


def test_high_s_is_accepted():
    message = b"malleable"
    signature = SIGN_KEY.sign(message)
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    flipped = r + (N - s).to_bytes(32, "big")
    assert SIGN_KEY.verify(message, flipped)


def test_signature_range_checks():
    message = b"x"
    good = SIGN_KEY.sign(message)
    r = good[:32]
    for bad_s in (0, N, N + 1, 2**256 - 1):
        assert not SIGN_KEY.verify(message, r + bad_s.to_bytes(32, "big"))
    assert not SIGN_KEY.verify(message, good + b"\x00")
    assert not SIGN_KEY.verify(message, good[:63])


def test_sign_needs_private_key():
    with raises_code("no_private_key"):
        SIGN_KEY.public_key().sign(b"x")
    with raises_code("no_private_key"):
        SIGN_KEY.public_key().private_jwk()
    with raises_code("no_private_key"):
        SIGN_KEY.public_key().to_pem()


def test_matches_cryptography_when_installed():
    crypto = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    ours = dpop.generate_key()
    theirs = serialization.load_pem_private_key(ours.to_pem().encode(), password=None)
    assert theirs.private_numbers().private_value == int.from_bytes(dpop.b64url_decode(ours.private_jwk()["d"]), "big")
    sig = ours.sign(b"interop")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    theirs.public_key().verify(encode_dss_signature(r, s), b"interop", crypto.ECDSA(hashes.SHA256()))
    der_sig = theirs.sign(b"back", crypto.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der_sig)
    assert ours.verify(b"back", r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    pem = theirs.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert dpop.load_key(pem) == ours.public_key()


# ===========================================================================
# base64url
# ===========================================================================


@given(st.binary(max_size=200))
def test_b64url_round_trip(data):
    text = dpop.b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert dpop.b64url_decode(text) == data


@pytest.mark.parametrize("text", ["QQ==", "QQ=", "Q Q", "Q*Q", "Q+Q", "Q/Q", "QR", "QUJ", "QUK", "Q", "QUJDR", "QQ\n", "\nQQ", "QUJD\n", "é", "QQ\x00"])
def test_b64url_rejects_non_canonical(text):
    with raises_code("bad_base64url"):
        dpop.b64url_decode(text)


@given(st.binary(min_size=1, max_size=60), st.data())
def test_b64url_rejects_every_non_canonical_form(data, draw):
    text = dpop.b64url_encode(data)
    form = draw.draw(st.sampled_from(["pad", "space", "std", "bits", "trunc"]))
    if form == "pad":
        bad = text + "=" * (-len(text) % 4 or 4)
    elif form == "space":
        pos = draw.draw(st.integers(min_value=0, max_value=len(text)))
        bad = text[:pos] + draw.draw(st.sampled_from([" ", "\n", "\t", "\r"])) + text[pos:]
    elif form == "std":
        bad = base64.b64encode(data).decode().rstrip("=")
        assume("+" in bad or "/" in bad)
    elif form == "bits":
        assume(len(text) % 4 != 0)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(text[-1])
        unused = {2: 0b1111, 3: 0b11}[len(text) % 4]
        tweak = draw.draw(st.integers(min_value=1, max_value=unused))
        bad = text[:-1] + alphabet[last ^ tweak]
    else:
        assume(len(text) % 4 in (0, 2))
        bad = text + "A" if len(text) % 4 == 0 else text[:-1]
        assume(len(bad) % 4 == 1)
    with raises_code("bad_base64url"):
        dpop.b64url_decode(bad)


@given(st.text(max_size=40))
def test_b64url_decode_raises_only_dpoperror(text):
    try:
        dpop.b64url_decode(text)
    except DPoPError as exc:
        assert exc.code == "bad_base64url"


def test_b64url_type_errors():
    with pytest.raises(TypeError):
        dpop.b64url_encode("text")
    with pytest.raises(TypeError):
        dpop.b64url_decode(b"QQ")


# ===========================================================================
# Keys: files, JWK, refusals
# ===========================================================================

KEY_JWK = json.loads((KEYS / "key.jwk.json").read_text())


@pytest.mark.parametrize(
    "name",
    ["sec1.pem", "sec1_with_params.pem", "sec1.der", "pkcs8.pem", "pkcs8.der", "sec1_no_public.pem"],
)
def test_private_key_files_load_to_the_same_key(name):
    key = dpop.load_key_file(KEYS / name)
    assert key.has_private
    assert key == dpop.load_key(KEY_JWK)
    assert key.private_jwk() == KEY_JWK
    assert key == dpop.load_key((KEYS / name).read_bytes())


@pytest.mark.parametrize("name", ["spki.pem", "spki.der", "spki_compressed.pem"])
def test_public_key_files(name):
    key = dpop.load_key_file(KEYS / name)
    assert not key.has_private
    assert key == dpop.load_key(KEY_JWK).public_key()
    assert key.public_jwk() == {k: KEY_JWK[k] for k in ("kty", "crv", "x", "y")}


@pytest.mark.parametrize(
    "name, code",
    [
        ("pkcs8_encrypted.pem", "encrypted_key"),
        ("sec1_encrypted.pem", "encrypted_key"),
        ("p384.pem", "unsupported_curve"),
        ("secp256k1.pem", "unsupported_curve"),
        ("rsa.pem", "unsupported_key"),
        ("ed25519.pem", "unsupported_key"),
        ("explicit_params.pem", "unsupported_curve"),
    ],
)
def test_refused_key_files(name, code):
    with raises_code(code):
        dpop.load_key_file(KEYS / name)


def test_key_round_trips():
    key = dpop.generate_key()
    assert dpop.load_key(key.to_pem()) == key
    assert dpop.load_key(key.to_pem(private=False)) == key.public_key()
    assert dpop.load_key(key.private_jwk()) == key
    assert dpop.load_key(json.dumps(key.private_jwk())) == key
    assert dpop.load_key(json.dumps(key.public_jwk()).encode()) == key.public_key()
    assert set(key.public_jwk()) == {"kty", "crv", "x", "y"}
    assert key != key.public_key()
    assert hash(key) == hash(key.public_key())


def test_repr_and_pickle_never_show_private_material():
    key = dpop.load_key(KEY_JWK)
    text = repr(key) + str(key)
    assert KEY_JWK["d"] not in text
    assert str(int.from_bytes(dpop.b64url_decode(KEY_JWK["d"]), "big")) not in text
    assert format(int.from_bytes(dpop.b64url_decode(KEY_JWK["d"]), "big"), "x") not in text.lower()
    assert "private" in text and key.thumbprint() in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)
    with pytest.raises(AttributeError):
        key._d = 1
    with pytest.raises(TypeError):
        dpop.ECKey()


def test_sec1_public_key_must_match_private():
    other = dpop.generate_key()
    der = (KEYS / "sec1.der").read_bytes()
    good_point = b"\x04" + dpop.b64url_decode(KEY_JWK["x"]) + dpop.b64url_decode(KEY_JWK["y"])
    assert good_point in der
    x, y = other.public_point
    bad = der.replace(good_point, b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big"))
    with raises_code("bad_key"):
        dpop.load_key(bad)
    jwk = dict(KEY_JWK, x=other.public_jwk()["x"], y=other.public_jwk()["y"])
    with raises_code("bad_key"):
        dpop.load_key(jwk)


def test_der_strictness():
    der = (KEYS / "spki.der").read_bytes()
    with raises_code("bad_key"):
        dpop.load_key(der + b"\x00")  # trailing byte
    with raises_code("bad_key"):
        dpop.load_key(der[:-1])  # truncated
    # long-form length for a short value
    long_form = b"\x30\x81" + der[1:2] + der[2:]
    with raises_code("bad_key"):
        dpop.load_key(long_form)
    # wrong OID
    with raises_code("unsupported_key"):
        dpop.load_key(der.replace(bytes.fromhex("2a8648ce3d0201"), bytes.fromhex("2a8648ce3d0202")))
    # point off the curve
    off = bytearray(der)
    off[-1] ^= 1
    with raises_code("bad_key"):
        dpop.load_key(bytes(off))


def test_private_scalar_range():
    for d in (0, N, 2**256 - 1):
        jwk = dict(KEY_JWK, d=dpop.b64url_encode(d.to_bytes(32, "big")))
        with raises_code("bad_key"):
            dpop.load_key(jwk)


@pytest.mark.parametrize(
    "change, code",
    [
        ({"kty": "RSA"}, "unsupported_key"),
        ({"kty": "oct"}, "unsupported_key"),
        ({"crv": "P-384"}, "unsupported_curve"),
        ({"crv": "secp256k1"}, "unsupported_curve"),
        ({"x": None}, "bad_key"),
        ({"x": 5}, "bad_key"),
        ({"x": "AAAA"}, "bad_key"),
        ({"y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0="}, "bad_key"),
        ({"use": "enc"}, "unsupported_key"),
        ({"key_ops": ["encrypt"]}, "unsupported_key"),
        ({"key_ops": "sign"}, "bad_key"),
        ({"alg": "ES384"}, "unsupported_key"),
        ({"kty": None}, "bad_key"),
    ],
)
def test_jwk_refusals(change, code):
    jwk = {k: KEY_JWK[k] for k in ("kty", "crv", "x", "y")}
    for name, value in change.items():
        if value is None:
            jwk.pop(name)
        else:
            jwk[name] = value
    with raises_code(code):
        dpop.load_key(jwk)


def test_jwk_coordinates_must_be_32_bytes():
    # A coordinate with its leading zero dropped is refused, not re-padded.
    key = dpop.load_key(KEY_JWK)
    short = dict(key.public_jwk(), x=dpop.b64url_encode(dpop.b64url_decode(KEY_JWK["x"])[1:]))
    with raises_code("bad_key"):
        dpop.load_key(short)
    with raises_code("bad_key"):
        dpop.jwk_thumbprint(short)


def test_jwk_thumbprint_members_and_types():
    base = {k: KEY_JWK[k] for k in ("kty", "crv", "x", "y")}
    extra = dict(base, kid="k1", alg="ES256", use="sig", d=KEY_JWK["d"])
    assert dpop.jwk_thumbprint(extra) == dpop.jwk_thumbprint(base)
    okp = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    # RFC 8037 Appendix A.3
    assert dpop.jwk_thumbprint(okp) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    with raises_code("unsupported_key"):
        dpop.jwk_thumbprint({"kty": "oct", "k": "AAAA"})
    with raises_code("bad_key"):
        dpop.jwk_thumbprint({"kty": "RSA", "n": "AQAB"})
    with raises_code("bad_key"):
        dpop.jwk_thumbprint({"crv": "P-256"})
    with pytest.raises(TypeError):
        dpop.jwk_thumbprint("{}")


def test_load_key_type_errors_and_garbage():
    with pytest.raises(TypeError):
        dpop.load_key(42)
    with pytest.raises(TypeError):
        dpop.load_key(None)
    for junk in ["", "hello", "{", "[1]", "-----BEGIN PUBLIC KEY-----\n@@@\n-----END PUBLIC KEY-----\n", b"\xff\xfe", b"\x30\x00", "x" * 70000]:
        with pytest.raises(DPoPError):
            dpop.load_key(junk)
    with raises_code("bad_key"):
        dpop.load_key_file(KEYS / "does-not-exist.pem")


def test_pem_with_two_keys_is_refused():
    two = (KEYS / "sec1.pem").read_text() + (KEYS / "pkcs8.pem").read_text()
    with raises_code("bad_key"):
        dpop.load_key(two)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), st.builds(lambda b: b"\x30" + b, st.binary(max_size=200))))
def test_load_key_raises_only_dpoperror(data):
    try:
        dpop.load_key(data)
    except DPoPError:
        pass


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=200))
def test_load_key_on_mutated_der_raises_only_dpoperror(noise):
    der = bytearray((KEYS / "pkcs8.der").read_bytes())
    for i, byte in enumerate(noise[:8]):
        der[(byte * 7 + i) % len(der)] ^= noise[-1 - i % len(noise)] | 1
    try:
        dpop.load_key(bytes(der))
    except DPoPError:
        pass


@settings(max_examples=100)
@given(st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "d", "use", "key_ops", "alg"]), st.one_of(st.text(max_size=50), st.integers(), st.none(), st.lists(st.text(max_size=5)))))
def test_load_jwk_raises_only_dpoperror(jwk):
    try:
        dpop.load_key(jwk)
    except DPoPError:
        pass


# ===========================================================================
# JWS
# ===========================================================================


def test_jws_round_trip():
    key = dpop.generate_key()
    token = dpop.jws_sign(key, {"hello": "world"}, {"typ": "test", "kid": "k"})
    header, payload = dpop.jws_verify(token, key.public_key())
    assert header == {"typ": "test", "kid": "k", "alg": "ES256"}
    assert json.loads(payload) == {"hello": "world"}
    raw = dpop.jws_sign(key, b"\x00\x01")
    assert dpop.jws_verify(raw, key.public_jwk())[1] == b"\x00\x01"
    with raises_code("bad_signature"):
        dpop.jws_verify(token, dpop.generate_key())


def _forge(header, payload=b"{}", signature=b"\x00" * 64):
    return ".".join(dpop.b64url_encode(part) for part in (header, payload, signature))


@pytest.mark.parametrize(
    "token, code",
    [
        (_forge(b'{"alg":"none"}', signature=b""), "unsupported_alg"),
        (_forge(b'{"alg":"ES256"}', signature=b""), "bad_signature"),
        (_forge(b'{"alg":"none"}', signature=b"x"), "unsupported_alg"),
        (_forge(b'{"alg":"HS256"}'), "unsupported_alg"),
        (_forge(b'{"alg":"RS256"}'), "unsupported_alg"),
        (_forge(b'{"alg":"ES384"}'), "unsupported_alg"),
        (_forge(b'{"alg":"es256"}'), "unsupported_alg"),
        (_forge(b'{"typ":"x"}'), "unsupported_alg"),
        (_forge(b'{"alg":"ES256","crit":["b64"],"b64":false}'), "bad_jws"),
        (_forge(b'{"alg":"ES256","alg":"none"}'), "bad_jws"),
        (_forge(b"[1,2]"), "bad_jws"),
        (_forge(b"not json"), "bad_jws"),
        (_forge(b'\xff{"alg":"ES256"}'), "bad_jws"),
        (_forge(b'{"alg":"ES256"}'), "bad_signature"),
        (_forge(b'{"alg":"ES256"}', signature=b"\x01" * 63), "bad_signature"),
        ("a.b", "bad_jws"),
        ("a.b.c.d", "bad_jws"),
        ("", "bad_jws"),
        ("..", "bad_jws"),
        ("e30=.e30.AAAA", "bad_jws"),
        ("eyJhbGciOiJFUzI1NiJ9.e30.AAA*", "bad_jws"),
        ("eyJhbGciOiJFUzI1NiJ9.e30.AAAA" + "A" * 70000, "bad_jws"),
    ],
)
def test_jws_verify_refusals(token, code):
    with raises_code(code):
        dpop.jws_verify(token, SIGN_KEY)


def test_jws_sign_refuses_other_algs_and_types():
    with raises_code("unsupported_alg"):
        dpop.jws_sign(SIGN_KEY, {}, {"alg": "HS256"})
    with pytest.raises(TypeError):
        dpop.jws_sign("key", {})
    with pytest.raises(TypeError):
        dpop.jws_sign(SIGN_KEY, "payload")
    with pytest.raises(TypeError):
        dpop.jws_verify(b"a.b.c", SIGN_KEY)
    with pytest.raises(TypeError):
        dpop.jws_verify("a.b.c", "key")


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=200), st.builds(lambda parts: ".".join(parts), st.lists(st.text(alphabet="ABCDEFabcdef0123456789-_=.", max_size=40), max_size=4))))
def test_jws_verify_raises_only_dpoperror(token):
    with pytest.raises(DPoPError):
        dpop.jws_verify(token, SIGN_KEY)


@settings(max_examples=100)
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_jws_verify_random_segments(header, payload):
    with pytest.raises(DPoPError):
        dpop.jws_verify(_forge(header, payload), SIGN_KEY)


# ===========================================================================
# Errors
# ===========================================================================


def test_every_raised_code_is_in_the_table():
    source = (HERE / "dpop.py").read_text()
    raised = set(re.findall(r'DPoPError\(\s*"([a-z0-9_]+)"', source))
    assert raised and raised <= set(dpop.ERROR_CODES), raised - set(dpop.ERROR_CODES)
    # and every code in the table is used somewhere after the table
    after_table = source.split("class DPoPError", 1)[1]
    literals = set(re.findall(r'"([a-z0-9_]+)"', after_table))
    assert set(dpop.ERROR_CODES) <= literals, set(dpop.ERROR_CODES) - literals


def test_error_shape():
    exc = DPoPError("bad_key", "something")
    assert exc.code == "bad_key" and str(exc) == "bad_key: something"
    assert pickle.loads(pickle.dumps(exc)).code == "bad_key"
    with pytest.raises(RuntimeError):
        DPoPError("no_such_code", "x")


def test_public_api():
    for name in dpop.__all__:
        assert hasattr(dpop, name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", dpop.__version__)


# ===========================================================================
# DPoP proofs: RFC 9449 examples
# ===========================================================================

RFC9449 = load_vector("rfc9449_examples.json")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_rfc9449_example_proofs_pass_verify_proof(index):
    example = RFC9449["proofs"][index]
    extra = {}
    if "access_token" in example:
        extra = {"access_token": example["access_token"], "jkt": RFC9449["jkt"]}
    result = dpop.verify_proof(example["proof"], method=example["htm"], url=example["htu"], now=example["iat"], **extra)
    assert result.jkt == RFC9449["jkt"]
    assert result.claims["jti"] == example["jti"]
    assert result.header["typ"] == "dpop+jwt"
    # and one second too late for a 60 s window, it is refused
    with raises_code("proof_iat"):
        dpop.verify_proof(example["proof"], method=example["htm"], url=example["htu"], now=example["iat"] + 61, **extra)


def test_rfc9449_ath_example():
    example = RFC9449["proofs"][2]
    assert dpop.access_token_hash(example["access_token"]) == example["ath"] == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_rfc9449_nonce_examples_are_valid_nonces():
    for value in RFC9449["nonces"].values():
        assert dpop.challenge_headers(error="use_dpop_nonce", nonce=value)["DPoP-Nonce"] == value


# ===========================================================================
# canonical_htu
# ===========================================================================


@pytest.mark.parametrize(
    "url, htu",
    [
        ("HTTPS://Example.COM:443/a/b?x=1#f", "https://example.com/a/b"),
        ("http://h:80", "http://h/"),
        ("http://h", "http://h/"),
        ("https://[::1]:8443/p", "https://[::1]:8443/p"),
        ("https://[2001:DB8::1]/", "https://[2001:db8::1]/"),
        ("https://[::1]:443/p", "https://[::1]/p"),
        ("http://h:443/", "http://h:443/"),
        ("https://h:80/", "https://h:80/"),
        ("https://h:/x", "https://h/x"),
        ("https://h:08443/x", "https://h:8443/x"),
        ("https://h/a%2Fb/%7euser/%40/..%2F", "https://h/a%2Fb/%7euser/%40/..%2F"),
        ("https://h/Case/Path", "https://h/Case/Path"),
        ("https://h/a/../b/./c", "https://h/a/../b/./c"),
        ("https://h?q", "https://h/"),
        ("https://h#frag", "https://h/"),
        ("https://h/p;param", "https://h/p;param"),
        ("https://127.0.0.1:8080/token", "https://127.0.0.1:8080/token"),
    ],
)
def test_canonical_htu(url, htu):
    assert dpop.canonical_htu(url) == htu


@pytest.mark.parametrize(
    "url",
    ["/relative", "example.com/x", "ftp://h/x", "https://", "https:///x", "https://user:pw@h/", "https://h:0/", "https://h:65536/", "https://h:x/",
     "https://h/a b", "https://h/\u00e9", "https://exa mple.com/", "https://[::1/", "https://[::1]x/", "mailto:a@b", "", "https://h\n/"],
)
def test_canonical_htu_refuses(url):
    with raises_code("bad_url"):
        dpop.canonical_htu(url)


def test_canonical_htu_type_error():
    with pytest.raises(TypeError):
        dpop.canonical_htu(b"https://h/")


# ===========================================================================
# make_proof
# ===========================================================================

PROOF_KEY = dpop.generate_key()
NOW = 1_700_000_000


def decode_proof(proof):
    h64, p64, _ = proof.split(".")
    return json.loads(dpop.b64url_decode(h64)), json.loads(dpop.b64url_decode(p64))


def test_make_proof_contents():
    proof = dpop.make_proof(PROOF_KEY, "post", "HTTPS://AS.example:443/token?x#y", now=NOW + 0.9, jti="abc")
    header, claims = decode_proof(proof)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": PROOF_KEY.public_jwk()}
    assert claims == {"jti": "abc", "htm": "POST", "htu": "https://as.example/token", "iat": NOW}
    with_token = dpop.make_proof(PROOF_KEY, "GET", "https://rs.example/r", access_token="tok.en", nonce="n-1", now=NOW, claims={"ext": 1})
    _, claims = decode_proof(with_token)
    assert claims["ath"] == dpop.access_token_hash("tok.en")
    assert claims["nonce"] == "n-1" and claims["ext"] == 1
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce", "ext"}
    assert len(dpop.b64url_decode(claims["jti"])) >= 12  # >= 96 bits


def test_make_proof_never_copies_private_jwk_members():
    key = dpop.load_key(dict(KEY_JWK, kid="k", use="sig"))
    header, _ = decode_proof(dpop.make_proof(key, "GET", "https://h/"))
    assert header["jwk"] == key.public_jwk()
    assert "d" not in header["jwk"] and "kid" not in header["jwk"]


def test_make_proof_uses_the_clock():
    import time

    before = int(time.time())
    _, claims = decode_proof(dpop.make_proof(PROOF_KEY, "GET", "https://h/"))
    assert before <= claims["iat"] <= int(time.time())


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"method": "GE T"}, "bad_argument"),
        ({"method": ""}, "bad_argument"),
        ({"url": "ftp://h/"}, "bad_url"),
        ({"access_token": "a b"}, "bad_access_token"),
        ({"access_token": "tok=en"}, "bad_access_token"),
        ({"nonce": 'has"quote'}, "bad_argument"),
        ({"nonce": "has space"}, "bad_argument"),
        ({"nonce": ""}, "bad_argument"),
        ({"jti": ""}, "bad_argument"),
        ({"claims": {"htm": "GET"}}, "bad_argument"),
    ],
)
def test_make_proof_refusals(kwargs, code):
    args = {"method": "GET", "url": "https://h/"}
    args.update(kwargs)
    with raises_code(code):
        dpop.make_proof(PROOF_KEY, args.pop("method"), args.pop("url"), **args)


def test_make_proof_type_errors():
    for bad in [
        lambda: dpop.make_proof("key", "GET", "https://h/"),
        lambda: dpop.make_proof(PROOF_KEY, b"GET", "https://h/"),
        lambda: dpop.make_proof(PROOF_KEY, "GET", "https://h/", now="1"),
        lambda: dpop.make_proof(PROOF_KEY, "GET", "https://h/", now=True),
        lambda: dpop.make_proof(PROOF_KEY, "GET", "https://h/", jti=1),
        lambda: dpop.make_proof(PROOF_KEY, "GET", "https://h/", nonce=1),
        lambda: dpop.make_proof(PROOF_KEY, "GET", "https://h/", claims=[1]),
        lambda: dpop.access_token_hash(b"x"),
    ]:
        with pytest.raises(TypeError):
            bad()
    with raises_code("no_private_key"):
        dpop.make_proof(PROOF_KEY.public_key(), "GET", "https://h/")


def test_100000_proofs_have_distinct_jti():
    seen = set()
    for _ in range(100_000):
        proof = dpop.make_proof(PROOF_KEY, "GET", "https://h/", now=NOW)
        seen.add(json.loads(dpop.b64url_decode(proof.split(".")[1]))["jti"])
    assert len(seen) == 100_000


METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
URLS = st.builds(
    lambda scheme, host, port, path: "%s://%s%s/%s" % (scheme, host, port, path),
    st.sampled_from(["http", "https"]),
    st.sampled_from(["a.example", "b.example", "127.0.0.1", "[::1]"]),
    st.sampled_from(["", ":8080", ":9443"]),
    st.text(alphabet="abcXYZ09-._~%/", max_size=12),
)


@settings(max_examples=60)
@given(METHODS, URLS, METHODS, URLS)
def test_proofs_verify_for_their_request_only(method, url, other_method, other_url):
    proof = dpop.make_proof(PROOF_KEY, method, url, now=NOW)
    assert dpop.verify_proof(proof, method=method, url=url, now=NOW).jkt == PROOF_KEY.thumbprint()
    if other_method != method:
        with raises_code("proof_htm"):
            dpop.verify_proof(proof, method=other_method, url=url, now=NOW)
    if dpop.canonical_htu(other_url) != dpop.canonical_htu(url):
        with raises_code("proof_htu"):
            dpop.verify_proof(proof, method=method, url=other_url, now=NOW)


# ===========================================================================
# verify_proof: one negative test per RFC 9449 §4.3 check
# ===========================================================================

URL = "https://rs.example/api/things"
TOKEN = "at-0123456789.abc~_+/="


def forge_proof(key=PROOF_KEY, header=None, claims=None, drop=(), drop_header=(), raw_header=None, signature=None):
    """A proof with chosen header/claims, signed with ES256 by ``key`` unless told otherwise."""
    h = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()}
    h.update(header or {})
    for name in drop_header:
        h.pop(name, None)
    c = {"jti": secrets.token_urlsafe(12), "htm": "GET", "htu": URL, "iat": NOW, "ath": dpop.access_token_hash(TOKEN)}
    c.update(claims or {})
    for name in drop:
        c.pop(name, None)
    h64 = raw_header or dpop.b64url_encode(json.dumps(h).encode())
    p64 = dpop.b64url_encode(json.dumps(c).encode())
    sig = signature if signature is not None else key.sign((h64 + "." + p64).encode())
    return h64 + "." + p64 + "." + dpop.b64url_encode(sig)


def check(proof, **overrides):
    args = dict(method="GET", url=URL, access_token=TOKEN, jkt=PROOF_KEY.thumbprint(), now=NOW)
    args.update(overrides)
    return dpop.verify_proof(proof, **args)


def test_forged_baseline_passes():
    assert check(forge_proof()).claims["htm"] == "GET"


def _tamper(proof, part, index=-3):
    pieces = proof.split(".")
    raw = bytearray(dpop.b64url_decode(pieces[part]))
    raw[index] ^= 0x01
    pieces[part] = dpop.b64url_encode(bytes(raw))
    return ".".join(pieces)


NEGATIVE_CASES = {
    "no proof": (lambda: None, {}, "proof_missing"),
    "empty list": (lambda: [], {}, "proof_missing"),
    "two proofs": (lambda: [forge_proof(), forge_proof()], {}, "proof_multiple"),
    "two joined by comma": (lambda: forge_proof() + ", " + forge_proof(), {}, "proof_multiple"),
    "oversized": (lambda: forge_proof(claims={"pad": "x" * 9000}), {}, "proof_too_large"),
    "not a JWT": (lambda: "abc", {}, "proof_malformed"),
    "four segments": (lambda: forge_proof() + ".x", {}, "proof_malformed"),
    "bad base64 payload": (lambda: forge_proof().replace(".", ".*", 1), {}, "proof_malformed"),
    "payload not JSON": (lambda: (lambda p: p[0] + "." + dpop.b64url_encode(b"nope") + "." + p[2])(forge_proof().split(".")), {}, "proof_malformed"),
    "crit": (lambda: forge_proof(header={"crit": ["exp"]}), {}, "proof_malformed"),
    "typ jwt": (lambda: forge_proof(header={"typ": "JWT"}), {}, "proof_typ"),
    "typ missing": (lambda: forge_proof(drop_header=["typ"]), {}, "proof_typ"),
    "alg none": (lambda: forge_proof(header={"alg": "none"}, signature=b""), {}, "proof_alg"),
    "alg HS256": (lambda: forge_proof(header={"alg": "HS256"}), {}, "proof_alg"),
    "alg RS256": (lambda: forge_proof(header={"alg": "RS256"}), {}, "proof_alg"),
    "alg not allowed by caller": (lambda: forge_proof(), {"algorithms": ("PS256",)}, "proof_alg"),
    "jwk missing": (lambda: forge_proof(drop_header=["jwk"]), {}, "proof_jwk"),
    "jwk private d": (lambda: forge_proof(header={"jwk": PROOF_KEY.private_jwk()}), {}, "proof_jwk"),
    "jwk wrong curve": (lambda: forge_proof(header={"jwk": dict(PROOF_KEY.public_jwk(), crv="P-384")}), {}, "proof_jwk"),
    "jwk off curve": (lambda: forge_proof(header={"jwk": dict(PROOF_KEY.public_jwk(), y=PROOF_KEY.public_jwk()["x"])}), {}, "proof_jwk"),
    "jwk short coordinate": (lambda: forge_proof(header={"jwk": dict(PROOF_KEY.public_jwk(), x="AAAA")}), {}, "proof_jwk"),
    "jwk RSA": (lambda: forge_proof(header={"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}), {}, "proof_jwk"),
    "jwk of another key": (lambda: forge_proof(header={"jwk": dpop.generate_key().public_jwk()}), {}, "proof_signature"),
    "tampered header": (lambda: _tamper(forge_proof(header={"kid": "abcdef"}), 0), {}, "proof_signature"),
    "tampered payload": (lambda: _tamper(forge_proof(claims={"ext": "abcdef"}), 1), {}, "proof_signature"),
    "tampered signature": (lambda: _tamper(forge_proof(), 2), {}, "proof_signature"),
    "DER signature": (lambda: forge_proof(signature=b"\x30\x44" + b"\x01" * 68), {}, "proof_signature"),
    "missing jti": (lambda: forge_proof(drop=["jti"]), {}, "proof_claims"),
    "missing htm": (lambda: forge_proof(drop=["htm"]), {}, "proof_claims"),
    "missing htu": (lambda: forge_proof(drop=["htu"]), {}, "proof_claims"),
    "missing iat": (lambda: forge_proof(drop=["iat"]), {}, "proof_claims"),
    "iat as string": (lambda: forge_proof(claims={"iat": str(NOW)}), {}, "proof_claims"),
    "iat as bool": (lambda: forge_proof(claims={"iat": True}), {}, "proof_claims"),
    "jti as number": (lambda: forge_proof(claims={"jti": 5}), {}, "proof_claims"),
    "htu as list": (lambda: forge_proof(claims={"htu": [URL]}), {}, "proof_claims"),
    "nonce as number": (lambda: forge_proof(claims={"nonce": 5}), {}, "proof_claims"),
    "wrong method": (lambda: forge_proof(claims={"htm": "POST"}), {}, "proof_htm"),
    "lower-case method": (lambda: forge_proof(claims={"htm": "get"}), {}, "proof_htm"),
    "wrong scheme": (lambda: forge_proof(claims={"htu": URL.replace("https", "http")}), {}, "proof_htu"),
    "wrong host": (lambda: forge_proof(claims={"htu": URL.replace("rs.example", "rs2.example")}), {}, "proof_htu"),
    "wrong port": (lambda: forge_proof(claims={"htu": URL.replace("rs.example", "rs.example:8443")}), {}, "proof_htu"),
    "wrong path": (lambda: forge_proof(claims={"htu": URL + "/x"}), {}, "proof_htu"),
    "path case": (lambda: forge_proof(claims={"htu": URL.upper().replace("HTTPS://RS.EXAMPLE", "https://rs.example")}), {}, "proof_htu"),
    "htu not a URL": (lambda: forge_proof(claims={"htu": "rs.example/api"}), {}, "proof_htu"),
    "nonce missing": (lambda: forge_proof(), {"nonce": "n-1"}, "proof_nonce"),
    "nonce wrong": (lambda: forge_proof(claims={"nonce": "n-0"}), {"nonce": "n-1"}, "proof_nonce"),
    "nonce refused by checker": (lambda: forge_proof(claims={"nonce": "n-0"}), {"nonce": lambda n: False}, "proof_nonce"),
    "iat too old": (lambda: forge_proof(claims={"iat": NOW - 61}), {}, "proof_iat"),
    "iat too far ahead": (lambda: forge_proof(claims={"iat": NOW + 6}), {}, "proof_iat"),
    "ath missing": (lambda: forge_proof(drop=["ath"]), {}, "proof_ath"),
    "ath wrong": (lambda: forge_proof(claims={"ath": dpop.access_token_hash("other")}), {}, "proof_ath"),
    "key not bound to token": (lambda: forge_proof(), {"jkt": dpop.generate_key().thumbprint()}, "proof_binding"),
    "key not the expected one": (lambda: forge_proof(), {"access_token": None, "jkt": "x" * 43}, "proof_binding"),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE_CASES))
def test_verify_proof_negative(name):
    make, overrides, code = NEGATIVE_CASES[name]
    with raises_code(code) as info:
        check(make(), **overrides)
    assert info.value.oauth_error == ("use_dpop_nonce" if code == "proof_nonce" else "invalid_dpop_proof")


def test_verify_proof_negative_case_count():
    assert len(NEGATIVE_CASES) >= 20


def test_verify_proof_accepts_window_edges_and_nonce_forms():
    check(forge_proof(claims={"iat": NOW - 60}))
    check(forge_proof(claims={"iat": NOW + 5}))
    check(forge_proof(claims={"iat": NOW + 0.5}))
    check(forge_proof(claims={"nonce": "n-1"}), nonce="n-1")
    check(forge_proof(claims={"nonce": "n-1"}), nonce=lambda n: n == "n-1")
    check(forge_proof(header={"typ": "application/dpop+jwt"}))
    check([forge_proof()])
    # token-endpoint style: no access token, no ath needed
    dpop.verify_proof(forge_proof(drop=["ath"]), method="GET", url=URL, now=NOW)


def test_replayed_jti_is_refused():
    cache = dpop.ReplayCache()
    proof = forge_proof()
    check(proof, replay=cache)
    with raises_code("proof_replay"):
        check(proof, replay=cache)
    # the same jti under another key or URL is a different slot
    other = forge_proof(key=dpop.generate_key(), claims={"jti": decode_proof(proof)[1]["jti"]})
    dpop.verify_proof(other, method="GET", url=URL, now=NOW, replay=cache)


def test_failed_checks_do_not_consume_the_jti():
    cache = dpop.ReplayCache()
    proof = forge_proof()
    with raises_code("proof_htm"):
        check(proof, method="POST", replay=cache)
    check(proof, replay=cache)


def test_verify_proof_misuse():
    with pytest.raises(TypeError):
        dpop.verify_proof(forge_proof(), method="GET", url=URL, access_token=TOKEN, now=NOW)
    with pytest.raises(ValueError):
        check(forge_proof(), algorithms=("ES256", "none"))
    with pytest.raises(ValueError):
        check(forge_proof(), algorithms=("HS256",))
    with pytest.raises(TypeError):
        check(forge_proof(), method=b"GET")
    with pytest.raises(TypeError):
        check([1])


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: dpop.b64url_encode(b) + "." + dpop.b64url_encode(b[::-1]) + ".AAAA")))
def test_verify_proof_raises_only_dpoperror(text):
    with pytest.raises(DPoPError):
        check(text)


# ===========================================================================
# Replay cache, nonces, challenges, per-key tables
# ===========================================================================


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_replay_cache_expiry_and_bound():
    clock = FakeClock()
    cache = dpop.ReplayCache(3, clock=clock)
    assert cache.add("a", 10) and not cache.add("a", 10)
    assert cache.add("b", 10) and cache.add("c", 20)
    with raises_code("replay_cache_full"):
        cache.add("d", 10)
    assert not cache.add("a", 10)  # still remembered when full
    clock.now += 11
    assert cache.add("d", 10)  # a and b expired and were dropped
    assert cache.add("a", 10)
    assert len(cache) == 3
    with pytest.raises(TypeError):
        dpop.ReplayCache(0)


def test_replay_cache_is_thread_safe():
    import threading

    cache = dpop.ReplayCache()
    results = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        for i in range(200):
            results.append((i, cache.add("key-%d" % i, 60)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, ok in results if ok]
    assert sorted(winners) == list(range(200))


def test_nonce_issuer():
    issuer = dpop.NonceIssuer(b"k" * 32, step=60)
    nonce = issuer.issue(now=6000)
    assert issuer.issue(now=6059) == nonce
    assert issuer.check(nonce, now=6000) and issuer.check(nonce, now=6119)
    assert not issuer.check(nonce, now=6120)
    assert not issuer.check(nonce, now=5999)
    assert not dpop.NonceIssuer(b"j" * 32).check(nonce, now=6000)
    assert not issuer.check("x" + nonce[1:], now=6000)
    assert not issuer.check(5, now=6000)
    assert not issuer.check("\u00e9", now=6000)
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", nonce)
    assert "k" * 32 not in repr(issuer)
    # with verify_proof
    proof = forge_proof(claims={"nonce": issuer.issue(now=NOW)})
    check(proof, nonce=lambda n: issuer.check(n, now=NOW))
    with pytest.raises(ValueError):
        dpop.NonceIssuer(b"short")
    with pytest.raises(TypeError):
        dpop.NonceIssuer("a string secret of enough length")
    with pytest.raises(TypeError):
        dpop.NonceIssuer(b"k" * 32, step=0)


def test_challenge_headers():
    headers = dpop.challenge_headers(error="use_dpop_nonce", error_description='needs "nonce"', nonce="eyJ7S_zG.eyJH0-Z.HX4w-7v")
    assert headers == {
        "WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="needs \\"nonce\\"", algs="ES256"',
        "DPoP-Nonce": "eyJ7S_zG.eyJH0-Z.HX4w-7v",
    }
    assert dpop.challenge_headers() == {"WWW-Authenticate": 'DPoP algs="ES256"'}
    assert dpop.challenge_headers(algs=("ES256", "PS256"))["WWW-Authenticate"] == 'DPoP algs="ES256 PS256"'


def test_key_tables_are_cached_and_bounded(monkeypatch):
    monkeypatch.setattr(dpop, "_KEY_TABLE_SLOTS", 2)
    monkeypatch.setattr(dpop, "_key_tables", {})
    keys = [dpop.generate_key() for _ in range(3)]
    for key in keys:
        for _ in range(3):
            proof = dpop.make_proof(key, "GET", URL, now=NOW)
            dpop.verify_proof(proof, method="GET", url=URL, now=NOW)
    built = [point for point, table in dpop._key_tables.items() if table is not None]
    assert built == [keys[1].public_point, keys[2].public_point]
    assert len(dpop._key_tables) <= 4 * 2


# ===========================================================================
# Interop with independent implementations (Node.js: npm dpop, jose)
# ===========================================================================

import shutil
import subprocess
import sys
import time

INTEROP = HERE / "interop"


@pytest.fixture(scope="session")
def node():
    """The node binary, with interop/node_modules installed from the lockfile."""
    exe = shutil.which("node")
    npm = shutil.which("npm")
    if exe is None or npm is None:
        pytest.skip("Node.js/npm not found: interop tests need node >= 20 (they run in CI)")
    if not (INTEROP / "node_modules" / ".package-lock.json").is_file():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail("npm ci in interop/ failed:\n" + done.stdout + done.stderr)
    return exe


def node_run(node, *args, stdin=None):
    done = subprocess.run([node, str(INTEROP / "proofs.mjs"), *args], input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_npm_dpop_proofs_pass_verify_proof(node):
    url = "https://rs.example:8443/api/x"
    spec = {"count": 20, "htm": "POST", "htu": url, "accessToken": TOKEN, "nonce": "srv-nonce-1"}
    made = node_run(node, "make", json.dumps(spec))[0]
    cache = dpop.ReplayCache()
    now = time.time()
    for proof in made["proofs"]:
        result = dpop.verify_proof(proof, method="POST", url=url, access_token=TOKEN, jkt=made["jkt"], nonce="srv-nonce-1", now=now, replay=cache)
        assert result.jkt == made["jkt"]
        with raises_code("proof_replay"):
            dpop.verify_proof(proof, method="POST", url=url, access_token=TOKEN, jkt=made["jkt"], nonce="srv-nonce-1", now=now, replay=cache)
    payload = dpop.b64url_decode(made["proofs"][0].split(".")[1])
    inside_jti = payload.index(b'"jti":"') + 8 - len(payload)
    for part, index in ((1, inside_jti), (2, -3), (2, 5)):
        with raises_code("proof_signature"):
            dpop.verify_proof(_tamper(made["proofs"][0], part, index), method="POST", url=url, access_token=TOKEN, jkt=made["jkt"], nonce="srv-nonce-1", now=now)
    with raises_code("proof_ath"):
        dpop.verify_proof(made["proofs"][0], method="POST", url=url, access_token="other-token", jkt=made["jkt"], now=now)
    with raises_code("proof_htu"):
        dpop.verify_proof(made["proofs"][0], method="POST", url=url + "/y", access_token=TOKEN, jkt=made["jkt"], now=now)


def test_make_proof_passes_jose_verification(node):
    key = dpop.generate_key()
    url = "https://rs.example/api/x"
    lines = []
    for i in range(20):
        proof = dpop.make_proof(key, "GET", url, access_token=TOKEN, nonce="n-%d" % i)
        lines.append({"jwt": proof, "htm": "GET", "htu": url, "ath": dpop.access_token_hash(TOKEN), "nonce": "n-%d" % i, "jkt": key.thumbprint()})
    good = lines[0]["jwt"]
    lines.append(dict(lines[0], jwt=_tamper(good, 2)))
    lines.append(dict(lines[0], jwt=_tamper(good, 1)))
    lines.append(dict(lines[0], jkt=dpop.generate_key().thumbprint()))
    results = node_run(node, "verify", stdin="\n".join(json.dumps(line) for line in lines))
    assert [r["ok"] for r in results] == [True] * 20 + [False] * 3
    assert all(r["jkt"] == key.thumbprint() for r in results[:20])
