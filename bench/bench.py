#!/usr/bin/env python3
"""Benchmarks: dpop.py against python-ecdsa, cryptography and requests-oauth2client.

    python3 bench/bench.py            # first run creates bench/.venv with bench/requirements.txt
    python3 bench/bench.py --quick    # fewer rounds (a smoke test, not for quoting)

Every comparison times both sides in this one process and run, interleaved
round by round, and reports medians and the ratio ours / theirs. Targets are
the ones the issues set; the script prints whether each was met and exits 0
either way (measurements, not tests).
"""

import argparse
import base64
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv"


def ensure_venv():
    """Re-run this script inside bench/.venv (created on first use)."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print("bench: creating %s (one time)" % VENV, file=sys.stderr)
        venv.create(VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
            check=True,
        )
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


ensure_venv()
sys.path.insert(0, str(REPO))

import ecdsa  # noqa: E402
import requests  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
from requests_oauth2client import DPoPKey, OAuth2Client, OAuth2ClientCredentialsAuth  # noqa: E402

import dpop  # noqa: E402

ROWS = []


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compare(name, ours, theirs, rounds, inner, target=None, unit="us"):
    """Median per-call time of each callable over interleaved rounds."""
    samples = {"ours": [], "theirs": []}
    gc.collect()
    gc.disable()  # as timeit does: collections land on whichever side happens to allocate
    try:
        _rounds(samples, ours, theirs, rounds, inner)
    finally:
        gc.enable()
    a, b = statistics.median(samples["ours"]), statistics.median(samples["theirs"])
    ROWS.append((name, a, b, target, unit))
    return a, b


def _rounds(samples, ours, theirs, rounds, inner):
    for _ in range(rounds):
        for label, fn in (("ours", ours), ("theirs", theirs)):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[label].append((time.perf_counter() - start) / inner)


def report(title, competitor):
    print("\n### %s\n" % title)
    print("| measurement | dpop.py | %s | ratio (ours/theirs) | target | met |" % competitor)
    print("|---|---:|---:|---:|---:|:-:|")
    for name, a, b, target, unit in ROWS:
        scale = 1e6 if unit == "us" else (1e3 if unit == "ms" else 1)
        ratio = a / b
        if unit == "req/s":
            cells = "%.0f req/s | %.0f req/s" % (a, b)
            met = "" if target is None else ("yes" if ratio >= target else "NO")
            goal = "" if target is None else ">= %.2fx" % target
        else:
            cells = "%.1f %s | %.1f %s" % (a * scale, unit, b * scale, unit)
            met = "" if target is None else ("yes" if ratio <= target else "NO")
            goal = "" if target is None else "<= %.2fx" % target
        print("| %s | %s | %.3fx | %s | %s |" % (name, cells, ratio, goal, met))
    ROWS.clear()


# ---------------------------------------------------------------------------


def warm_tables(key):
    """Sign until the table for G is whole: a long-running process's state."""
    while dpop._G_TABLE.current is None:
        key.sign(b"warm")


def bench_es256(rounds, inner):
    message = b"x" * 200
    ours = dpop.generate_key()
    warm_tables(ours)
    sk = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    vk = sk.get_verifying_key()
    our_sig = ours.sign(message)
    their_sig = sk.sign_deterministic(message, hashfunc=hashlib.sha256)
    crypto_key = ec.generate_private_key(ec.SECP256R1())
    crypto_sig = crypto_key.sign(message, ec.ECDSA(hashes.SHA256()))
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": ours.public_jwk()}
    claims = {"jti": "a" * 22, "htm": "GET", "htu": "https://api.example/r", "iat": 1700000000}

    def jws_with(sign):
        signing_input = (
            b64u(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64u(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + b64u(sign(signing_input.encode()))

    def ecdsa_sign(data):
        return sk.sign_deterministic(data, hashfunc=hashlib.sha256)

    def crypto_sign(data):
        r, s = decode_dss_signature(crypto_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    # Each signature is over a different message, as real proofs are (jti and
    # iat change), so neither side reuses one nonce's work from call to call.
    messages = [os.urandom(200) for _ in range(997)]
    ours_next = iter(messages * 10000).__next__
    theirs_next = iter(messages * 10000).__next__
    compare(
        "sign (RFC 6979 hedged vs sign_deterministic), a new message each time",
        lambda: ours.sign(ours_next()),
        lambda: ecdsa_sign(theirs_next()),
        rounds,
        inner,
        0.28,
    )
    compare(
        "verify",
        lambda: ours.verify(message, our_sig),
        lambda: vk.verify(their_sig, message, hashfunc=hashlib.sha256),
        rounds,
        max(1, inner // 4),
        0.60,
    )
    # verify_proof with many clients, and first sight, is timed in bench_clients (--only clients)
    compare(
        "keygen (d and d*G)",
        dpop.generate_key,
        lambda: ecdsa.SigningKey.generate(curve=ecdsa.NIST256p),
        rounds,
        inner,
    )
    compare(
        "full JWS (DPoP-sized header and claims)",
        lambda: dpop.jws_sign(ours, claims, header),
        lambda: jws_with(ecdsa_sign),
        rounds,
        inner,
    )
    report("ES256 core against python-ecdsa %s (pure Python)" % ecdsa.__version__, "python-ecdsa")

    compare("sign", lambda: ours.sign(message), lambda: crypto_sign(message), rounds, inner)
    compare(
        "verify",
        lambda: ours.verify(message, our_sig),
        lambda: crypto_key.public_key().verify(crypto_sig, message, ec.ECDSA(hashes.SHA256())),
        rounds,
        inner,
    )
    compare(
        "keygen", dpop.generate_key, lambda: ec.generate_private_key(ec.SECP256R1()), rounds, inner
    )
    compare(
        "full JWS",
        lambda: dpop.jws_sign(ours, claims, header),
        lambda: jws_with(crypto_sign),
        rounds,
        inner,
    )
    report("ES256 core against cryptography (OpenSSL), for scale", "cryptography")


def bench_fresh_process(rounds):
    """A new interpreter that imports the library and makes one signature."""
    import compileall

    compileall.compile_file(str(REPO / "dpop.py"), quiet=1)  # as pip install would
    key_pem = dpop.generate_key().to_pem()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["BENCH_KEY"] = key_pem
    ours = (
        "import sys; sys.path.insert(0, %r); import os, dpop; dpop.load_key(os.environ['BENCH_KEY']).sign(b'x')"
        % str(REPO)
    )
    theirs = "import os, hashlib, ecdsa; ecdsa.SigningKey.from_pem(os.environ['BENCH_KEY']).sign_deterministic(b'x', hashfunc=hashlib.sha256)"

    def run(code):
        return lambda: subprocess.run([sys.executable, "-c", code], env=env, check=True)

    compare(
        "fresh process: import, load PEM key, first signature",
        run(ours),
        run(theirs),
        rounds,
        1,
        1.0,
        unit="ms",
    )
    report("Start-up (tables built lazily)", "python-ecdsa")


def bench_proofs(rounds, inner):
    ours = dpop.generate_key()
    warm_tables(ours)
    theirs = DPoPKey.generate(alg="ES256")
    url = "https://api.example.com/resource/42"
    token = "eyJhbGciOiJFUzI1NiJ9." + "a" * 300 + ".sig"

    def roc_proof():
        ath = b64u(hashlib.sha256(token.encode()).digest())
        return str(theirs.proof(htm="GET", htu=url, ath=ath))

    compare(
        "make_proof (with ath)",
        lambda: dpop.make_proof(ours, "GET", url, access_token=token),
        roc_proof,
        rounds,
        inner,
        0.80,
    )
    report(
        "DPoP proofs against requests-oauth2client %s (jwskate + OpenSSL)"
        % _version("requests_oauth2client"),
        "requests-oauth2client",
    )

    proof = dpop.make_proof(ours, "GET", url, access_token=token)
    now = time.time()
    jkt = ours.thumbprint()
    dpop.verify_proof(proof, method="GET", url=url, access_token=token, jkt=jkt, now=now)
    sk = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    vk = sk.get_verifying_key()
    data = proof.rsplit(".", 1)[0].encode()
    sig = sk.sign_deterministic(data, hashfunc=hashlib.sha256)
    compare(
        "verify_proof, repeated key (all RFC 9449 checks) vs bare ECDSA verify",
        lambda: dpop.verify_proof(
            proof, method="GET", url=url, access_token=token, jkt=jkt, now=now
        ),
        lambda: vk.verify(sig, data, hashfunc=hashlib.sha256),
        rounds,
        max(1, inner // 4),
        0.25,
    )
    report("Proof verification against python-ecdsa", "python-ecdsa")


def _version(module):
    from importlib.metadata import version

    return version(module.replace("_", "-"))


def start_demo(env):
    """`dpop.py demo --serve` in another process, and the JSON line it prints when ready."""
    server = subprocess.Popen(
        [sys.executable, str(REPO / "dpop.py"), "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return server, json.loads(server.stdout.readline())


def bench_client(rounds, requests_per_round):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    server, info = start_demo(env)
    try:
        env.update(
            {
                "DPOP_CLIENT_ID": info["client_id"],
                "DPOP_CLIENT_SECRET": info["client_secret"],
                "DPOP_SCOPE": info["scope"],
            }
        )
        key_path = HERE / ".venv" / "bench-key.pem"
        key_path.write_text(dpop.generate_key().to_pem())
        ours_cmd = [
            sys.executable,
            str(REPO / "dpop.py"),
            "--key",
            str(key_path),
            "--token-endpoint",
            info["token_endpoint"],
            "GET",
            info["api"],
        ]
        theirs_cmd = [sys.executable, str(HERE / "roc_job.py"), info["token_endpoint"], info["api"]]

        def run(cmd, cwd=None):
            return lambda: subprocess.run(
                cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=cwd
            )

        compare(
            "CLI job: start, token, one GET (wall time)",
            run(ours_cmd),
            run(theirs_cmd),
            rounds,
            1,
            0.5,
            unit="ms",
        )
        report(
            "Command line against a requests-oauth2client script (local demo servers in another process)",
            "requests-oauth2client",
        )
        import compileall

        compileall.compile_file(str(REPO / "dpop.py"), quiet=1)  # as pip install would
        as_module = [sys.executable, "-m", "dpop", *ours_cmd[2:]]
        bare = run([sys.executable, "-c", "pass"])
        compare(
            "one-shot GET: python -m dpop (cached bytecode)",
            run(as_module, REPO),
            bare,
            rounds,
            1,
            3.5,
            "ms",
        )
        compare(
            "one-shot GET: python dpop.py (compiled every run)",
            run(ours_cmd),
            bare,
            rounds,
            1,
            3.5,
            "ms",
        )
        compare(
            "import http.client alone",
            run([sys.executable, "-c", "import http.client"]),
            bare,
            rounds,
            1,
            None,
            "ms",
        )
        report(
            "One-shot CLI processes against the bare interpreter (token and one GET)",
            "python -c pass",
        )

        ours_client = dpop.Client(
            dpop.generate_key(),
            token_endpoint=info["token_endpoint"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            scope=info["scope"],
        )
        roc = OAuth2Client(
            token_endpoint=info["token_endpoint"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            dpop_bound_access_tokens=True,
            testing=True,
        )
        session = requests.Session()
        session.auth = OAuth2ClientCredentialsAuth(roc, scope=info["scope"], dpop=True)
        ours_session = requests.Session()  # our auth on the same library as theirs (issue 10)
        ours_session.auth = ours_client.requests_auth()
        warm_tables(dpop.generate_key())
        for _ in range(8):  # token fetched, connections open
            assert ours_client.get(info["api"]).status == 200
            assert session.get(info["api"]).ok
            assert ours_session.get(info["api"]).ok

        def throughput(name, ours, theirs):
            rates = {"ours": [], "theirs": []}
            for _ in range(rounds):
                for label, call in (("ours", ours), ("theirs", theirs)):
                    start = time.perf_counter()
                    for _ in range(requests_per_round):
                        call()
                    rates[label].append(requests_per_round / (time.perf_counter() - start))
            ROWS.append(
                (
                    name,
                    statistics.median(rates["ours"]),
                    statistics.median(rates["theirs"]),
                    1.0,
                    "req/s",
                )
            )

        theirs = lambda: session.get(info["api"])  # noqa: E731
        throughput(
            "sustained GETs, cached token, keep-alive", lambda: ours_client.get(info["api"]), theirs
        )
        throughput(
            "the same through requests.Session, auth=client.requests_auth()",
            lambda: ours_session.get(info["api"]),
            theirs,
        )
        report(
            "Client throughput against requests-oauth2client's requests.Session",
            "requests-oauth2client",
        )
        ours_client.close()
        session.close()
        ours_session.close()
    finally:
        server.terminate()
        server.wait()


def accept_assertions(server, client_id, public_key):
    """Make a DemoServer (which accepts client secrets only) accept ``client_id``'s ES256
    private_key_jwt assertions (RFC 7523 §3), checked as test_dpop.py's _check_assertion checks
    them: the signature with the registered key, iss = sub = client_id, aud the token endpoint
    or issuer, exp within 5 minutes, and each jti once."""
    seen = dpop.ReplayCache()

    def check(form, claimed_id, secret):  # DemoServer.authenticate's place, on this server
        try:
            _, payload = dpop.jws_verify(form.get("client_assertion", ""), public_key)
            claims = json.loads(payload)
        except (dpop.DPoPError, ValueError):
            return False
        now = time.time()
        exp = claims.get("exp")
        jti = claims.get("jti")
        return (
            claimed_id == client_id
            and claims.get("iss") == claims.get("sub") == client_id
            and claims.get("aud")
            in (server.token_endpoint, server.issuer, [server.token_endpoint], [server.issuer])
            and isinstance(exp, int)
            and now < exp <= now + 300
            and isinstance(jti, str)
            and seen.add(client_id + " " + jti, 600)
        )

    server.authenticate = check


def bench_rsa(rounds, inner):
    import rsa as python_rsa
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric import rsa as crypto_rsa
    from requests_oauth2client import PrivateKeyJwt

    crypto_key = crypto_rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = crypto_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ours = dpop.load_rsa_key(pem)
    theirs = python_rsa.PrivateKey.load_pkcs1(pem)
    message = b"x" * 200
    messages = [os.urandom(200) for _ in range(997)]
    ours_next, theirs_next = iter(messages * 10000).__next__, iter(messages * 10000).__next__
    compare(
        "RS256 sign, 2048-bit (CRT, blinded)",
        lambda: ours.sign(ours_next(), "RS256"),
        lambda: python_rsa.sign(theirs_next(), theirs, "SHA-256"),
        rounds,
        max(1, inner // 5),
        1.0,
    )
    our_sig, their_sig = ours.sign(message, "RS256"), python_rsa.sign(message, theirs, "SHA-256")
    public = python_rsa.PublicKey(theirs.n, theirs.e)
    compare(
        "RS256 verify, 2048-bit",
        lambda: ours.verify(message, our_sig, "RS256"),
        lambda: python_rsa.verify(message, their_sig, public),
        rounds,
        inner,
    )
    report("RSA against python-rsa %s (pure Python)" % python_rsa.__version__, "python-rsa")

    compare(
        "RS256 sign, 2048-bit",
        lambda: ours.sign(message, "RS256"),
        lambda: crypto_key.sign(message, padding.PKCS1v15(), hashes.SHA256()),
        rounds,
        max(1, inner // 5),
    )
    compare(
        "RS256 verify, 2048-bit",
        lambda: ours.verify(message, our_sig, "RS256"),
        lambda: crypto_key.public_key().verify(
            our_sig, message, padding.PKCS1v15(), hashes.SHA256()
        ),
        rounds,
        inner,
    )
    report("RSA against cryptography (OpenSSL), for scale", "cryptography")

    # One full token request with private_key_jwt (a P-256 assertion key) and a
    # DPoP proof, against the demo server in this process: the server's work
    # is the same for both sides.
    assertion_key = dpop.generate_key()
    with dpop.DemoServer() as server:
        accept_assertions(server, "svc", assertion_key.public_key())
        client = dpop.Client(
            dpop.generate_key(),
            token_endpoint=server.token_endpoint,
            client_id="svc",
            auth_method="private_key_jwt",
            assertion_key=assertion_key,
            assertion_kid="k1",
            scope="api",
        )
        roc = OAuth2Client(
            token_endpoint=server.token_endpoint,
            auth=PrivateKeyJwt("svc", dict(assertion_key.private_jwk(), kid="k1"), alg="ES256"),
            dpop_bound_access_tokens=True,
            testing=True,
        )
        dpop_key = DPoPKey.generate(alg="ES256")
        assert (
            client._fetch_token().value
            and roc.client_credentials(scope="api", dpop_key=dpop_key).access_token
        )
        compare(
            "token request: private_key_jwt assertion + DPoP proof + POST",
            client._fetch_token,
            lambda: roc.client_credentials(scope="api", dpop_key=dpop_key),
            rounds,
            max(1, inner // 5),
            unit="ms",
        )
        client.close()
    report(
        "private_key_jwt token requests against requests-oauth2client's PrivateKeyJwt",
        "requests-oauth2client",
    )


def bench_token_cache(rounds):
    """CLI runs with a warm --token-cache against cold ones, and against curl with a pre-made proof."""
    import shutil
    import tempfile

    curl = shutil.which("curl")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DPOP_"))}
    server, info = start_demo(env)
    try:
        env["DPOP_CLIENT_SECRET"] = info["client_secret"]
        with tempfile.TemporaryDirectory() as tmp:
            key = dpop.generate_key()
            key_path, token_path, cache = (
                Path(tmp) / "k.pem",
                Path(tmp) / "token",
                Path(tmp) / "tokens.json",
            )
            key_path.write_text(key.to_pem())
            flow = [
                sys.executable,
                str(REPO / "dpop.py"),
                "--key",
                str(key_path),
                "--token-endpoint",
                info["token_endpoint"],
            ]
            flow += ["--client-id", info["client_id"], "--scope", info["scope"]]
            cached = flow + ["--token-cache=%s" % cache, "GET", info["api"]]
            cold = flow + ["GET", info["api"]]
            with dpop.Client(key, token_endpoint=info["token_endpoint"], client_id=info["client_id"],
                             client_secret=info["client_secret"], scope=info["scope"]) as client:  # fmt: skip
                token = client.access_token()
            token_path.write_text(token)
            proof_cmd = [sys.executable, str(REPO / "dpop.py"), "proof", "--key", str(key_path)]
            proof_cmd += ["--access-token-file", str(token_path), "GET", info["api"]]

            def run(cmd):
                return lambda: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)

            def curl_pair():
                proof = subprocess.run(
                    proof_cmd, env=env, check=True, capture_output=True, text=True
                ).stdout.strip()
                headers = ["-H", "Authorization: DPoP " + token, "-H", "DPoP: " + proof]
                subprocess.run([curl, "-sf", "-o", "/dev/null", *headers, info["api"]], check=True)

            run(cached)()  # warm the cache
            compare(
                "CLI run, warm --token-cache (no token request)",
                run(cached),
                run(cold),
                rounds,
                1,
                unit="ms",
            )
            report(
                "A CLI run with a warm token cache against one without", "dpop.py without a cache"
            )
            if curl is not None:
                compare(
                    "CLI run, warm --token-cache", run(cached), curl_pair, rounds, 1, 1.5, unit="ms"
                )
                report(
                    "A cached CLI run against `dpop.py proof` + curl (two processes)",
                    "proof + curl",
                )
    finally:
        server.terminate()
        server.wait()


# One fresh process: import, key, N proofs with ath; prints [seconds, slowest call, peak RSS in MB].
# Timed from before the import (interpreter start-up is the same for both sides and left out).
N_PROOFS = r"""
import sys, time
t0 = time.perf_counter()
which, n, repo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import base64, hashlib, json
url, token = "https://api.example.com/resource/42", "eyJhbGciOiJFUzI1NiJ9." + "a" * 300 + ".sig"
if which == "dpop":
    sys.path.insert(0, repo)
    import dpop
    key = dpop.generate_key()
    def one():
        return dpop.make_proof(key, "GET", url, access_token=token)
else:
    from requests_oauth2client import DPoPKey
    key = DPoPKey.generate(alg="ES256")
    def one():
        ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        return str(key.proof(htm="GET", htu=url, ath=ath))
slowest, clock = 0.0, time.perf_counter
for _ in range(n):
    start = clock()
    one()
    slowest = max(slowest, clock() - start)
total = clock() - t0
peak = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps([total, slowest, peak[0] / 1024 if peak else 0.0]))
"""


def bench_scale(rounds, counts, baseline):
    """N proofs in a fresh process, dpop.py (and an older dpop.py) against requests-oauth2client."""
    import compileall
    import tempfile

    sides = [("dpop", str(REPO))]
    folder = tempfile.mkdtemp(prefix="dpop-baseline-")
    if baseline:
        old = subprocess.run(
            ["git", "show", baseline + ":dpop.py"], cwd=REPO, capture_output=True, check=True
        )
        Path(folder, "dpop.py").write_bytes(old.stdout)
        sides.append(("dpop", folder))
    for _, path in sides:
        compileall.compile_file(str(Path(path, "dpop.py")), quiet=1)  # as pip install would
    sides.append(("peer", ""))

    def run(which, n, path):
        out = subprocess.run(
            [sys.executable, "-c", N_PROOFS, which, str(n), path], capture_output=True, check=True
        )
        return json.loads(out.stdout)

    print(
        "\n### Cost of N proofs in a fresh process (import, key, N x make_proof with ath; medians of %d)\n"
        % rounds
    )
    names = (
        ["dpop.py"] + (["dpop.py %s" % baseline] if baseline else []) + ["requests-oauth2client"]
    )
    head = " | ".join("%s s | slowest call | peak RSS" % name for name in names)
    print("| N | %s | ratio | target |" % head)
    print("|---:|%s---:|---|" % ("---:|---:|---:|" * len(names)))
    for n in counts:
        samples = [[] for _ in sides]
        for _ in range(rounds):
            for i, (which, path) in enumerate(sides):
                samples[i].append(run(which, n, path))
        cells, medians = [], []
        for got in samples:
            total, slowest, peak = (statistics.median(values) for values in zip(*got))
            medians.append(total)
            cells.append("%.3f | %.1f ms | %.1f MB" % (total, slowest * 1e3, peak))
        ratio = medians[0] / medians[-1]
        print(
            "| %d | %s | %.2fx | <= 0.70x, slowest <= 50 ms, peak <= 30 MB |"
            % (n, " | ".join(cells), ratio)
        )


def _module_at(revision):
    """dpop.py as of a git revision, imported under another name beside this one."""
    import importlib.util
    import tempfile

    old = subprocess.run(
        ["git", "show", revision + ":dpop.py"], cwd=REPO, capture_output=True, check=True
    )
    path = Path(
        tempfile.mkdtemp(prefix="dpop-baseline-"), "dpop_%s.py" % revision.replace("/", "_")
    )
    path.write_bytes(old.stdout)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_replay(rounds, baseline, capacity=100_000):
    """ReplayCache.add at capacity (issue 22 #7): this dpop.py against the one at ``baseline``, in this process."""
    old = _module_at(baseline or "HEAD")

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    def steady(module):
        """At capacity, each call a millisecond later: one entry expires, one comes."""
        clock = Clock()
        cache = module.ReplayCache(capacity, clock=clock)
        for i in range(capacity):
            clock.now = i / 1000
            cache.add("k%d" % i, 100)
        state = {"i": capacity}

        def one():
            state["i"] += 1
            clock.now = state["i"] / 1000
            cache.add("k%d" % state["i"], 100)

        return one

    def flooded(module):
        """Full of unexpired entries: every call is refused (replay_cache_full), the flood's case."""
        clock = Clock()
        cache = module.ReplayCache(capacity, clock=clock)
        for i in range(capacity):
            cache.add("k%d" % i, 60)
        state = {"i": capacity}

        def one():
            state["i"] += 1
            try:
                cache.add("k%d" % state["i"], 60)
            except module.DPoPError:
                pass

        return one

    inner = 20
    compare("add() at capacity, one expiring per call", steady(dpop), steady(old), rounds, inner)
    compare(
        "add() when full of unexpired entries (refused)", flooded(dpop), flooded(old), rounds, inner
    )
    report("Replay cache at capacity (%d entries)" % capacity, "dpop.py %s" % (baseline or "HEAD"))


def bench_clients(rounds, counts):
    """verify_proof with C clients calling in turn, against python-ecdsa's from_string + verify."""
    url = "https://api.example/things"
    print(
        "\n### verify_proof by number of clients calling in turn (medians of %d rounds)\n" % rounds
    )
    print("| clients | dpop.py verify_proof | python-ecdsa from_string + verify | ratio | target |")
    print("|---:|---:|---:|---:|---|")
    keys = [dpop.generate_key() for _ in range(max(counts))]
    proofs = [dpop.make_proof(key, "GET", url) for key in keys]
    peers = []
    for key, proof in zip(keys, proofs):
        data, _, sig = proof.rpartition(".")
        raw = base64.urlsafe_b64decode(sig + "==")
        jwk = key.public_jwk()
        xy = base64.urlsafe_b64decode(jwk["x"] + "=") + base64.urlsafe_b64decode(jwk["y"] + "=")
        peers.append((xy, raw, data.encode()))
    for count in counts:
        dpop._KEY_TABLES.__init__()  # each row starts as a new server would
        calls = min(3000, max(600, 2 * count))
        # steady state: clients that keep calling in turn, each past the verified proof that earns
        # a table (while tables are free); past _KEY_LIMIT clients none does, so no warm-up is needed
        warm = dpop._KEY_TABLE_AFTER * count if count <= dpop._KEY_LIMIT else 0
        ours = iter(proofs[:count] * ((warm + calls) // count + 2)).__next__
        theirs = iter(peers[:count] * (calls // count + 2)).__next__
        for _ in range(warm):
            dpop.verify_proof(ours(), method="GET", url=url, max_age=10**9)

        def verify_next(ours=ours):
            dpop.verify_proof(ours(), method="GET", url=url, max_age=10**9)

        def peer_next(theirs=theirs):
            xy, raw, data = theirs()
            vk = ecdsa.VerifyingKey.from_string(xy, curve=ecdsa.NIST256p)
            vk.verify(raw, data, hashfunc=hashlib.sha256, sigdecode=ecdsa.util.sigdecode_string)

        a, b = compare("%d" % count, verify_next, peer_next, rounds, max(1, calls // rounds))
        ROWS.clear()
        print("| %d | %.0f us | %.0f us | %.2fx | <= 0.60x |" % (count, a * 1e6, b * 1e6, a / b))
    # a key seen for the first time by every proof: nothing cached can help
    dpop._KEY_TABLES.__init__()
    fresh, fresh_peer = iter(proofs).__next__, iter(peers).__next__

    def verify_fresh():
        dpop.verify_proof(fresh(), method="GET", url=url, max_age=10**9)

    def peer_fresh():
        xy, raw, data = fresh_peer()
        vk = ecdsa.VerifyingKey.from_string(xy, curve=ecdsa.NIST256p)
        vk.verify(raw, data, hashfunc=hashlib.sha256, sigdecode=ecdsa.util.sigdecode_string)

    a, b = compare("new", verify_fresh, peer_fresh, rounds, max(1, min(600, len(proofs) // rounds)))
    ROWS.clear()
    print("| every key new | %.0f us | %.0f us | %.2fx | <= 0.60x |" % (a * 1e6, b * 1e6, a / b))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        choices=[
            "es256",
            "startup",
            "proofs",
            "client",
            "rsa",
            "cache",
            "scale",
            "clients",
            "replay",
        ],
        action="append",
        help="run only these sections",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="scale, replay: also time dpop.py as of this git revision"
    )
    args = parser.parse_args()
    rounds, inner = (5, 20) if args.quick else (21, 50)
    only = set(
        args.only
        or ["es256", "startup", "proofs", "client", "rsa", "cache", "scale", "clients", "replay"]
    )
    print(
        "## dpop.py %s benchmarks (CPython %s on %s, %d rounds)"
        % (dpop.__version__, sys.version.split()[0], os.uname().machine, rounds)
    )
    if "es256" in only:
        bench_es256(rounds, inner)
    if "startup" in only:
        bench_fresh_process(rounds)
    if "proofs" in only:
        bench_proofs(rounds, inner)
    if "client" in only:
        bench_client(max(5, rounds // 2), 50 if args.quick else 200)
    if "rsa" in only:
        bench_rsa(rounds, inner)
    if "cache" in only:
        bench_token_cache(max(5, rounds // 2))
    if "scale" in only:
        counts = (1, 100, 1000) if args.quick else (1, 100, 1000, 5000, 20000)
        bench_scale(1 if args.quick else 5, counts, args.baseline)
    if "replay" in only:
        bench_replay(5 if args.quick else 11, args.baseline)
    if "clients" in only:
        bench_clients(
            3 if args.quick else 5, (1, 8, 100) if args.quick else (1, 8, 100, 300, 1000, 10000)
        )


if __name__ == "__main__":
    main()
