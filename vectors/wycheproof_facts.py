"""Derive the facts-only copy of the Wycheproof vectors in vectors/wycheproof/.

Reads the upstream files (C2SP/wycheproof testvectors_v1/, as kept in ../shared/vectors/wycheproof) and writes
each one with the same JSON structure and member names, minus the prose: the file's "header" and "notes" and
every test's "comment". Ids, keys, inputs, expected results and flag names stay. The Apache-2.0 LICENSE is
copied verbatim. Every member is checked against a list of known names, so a newer upstream with new members
stops here instead of carrying prose through unseen.

    python3 vectors/wycheproof_facts.py [SRC_DIR]           write the copy, then verify it
    python3 vectors/wycheproof_facts.py --check [SRC_DIR]   regenerate in memory, compare with the files on disk

Exit status: 0 ok, 1 mismatch, 2 bad source or usage. Standard library only; Python >= 3.9.
"""

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "wycheproof"
DEFAULT_SRC = HERE.parent.parent / "shared" / "vectors" / "wycheproof"

# file name -> number of tests (as in ../shared/vectors/README.md, commit dac1dd4729fd)
FILES = {
    "ecdsa_secp256r1_sha256_p1363_test.json": 262,
    "json_web_signature_test.json": 401,
    "json_web_key_test.json": 26,
    "rsa_signature_2048_sha256_test.json": 259,
    "rsa_signature_3072_sha256_test.json": 259,
    "rsa_pss_2048_sha256_mgf1_32_test.json": 108,
    "rsa_pss_3072_sha256_mgf1_32_test.json": 108,
}

TOP_KEEP = {"algorithm", "schema", "numberOfTests", "generatorVersion", "testGroups"}
TOP_DROP = {"header", "notes"}
GROUP_KEEP = {
    "type", "source", "comment", "tests",
    "publicKey", "publicKeyAsn", "publicKeyDer", "publicKeyJwk", "publicKeyPem", "keyJwk", "private", "public",
    "keySize", "sha", "mgf", "mgfSha", "sLen",
}  # fmt: skip
TEST_KEEP = {"tcId", "msg", "sig", "jws", "result", "flags"}
TEST_DROP = {"comment"}
# Group "comment" in the JWS/JWK files is a short label ("es256", "jws_keyset"), the only name a group has.
LABEL = re.compile(r"[A-Za-z0-9_]{1,40}")
PROSE_NAMES = {"comment", "description", "header", "notes", "note"}


class FactsError(Exception):
    pass


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    obj: Dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise FactsError("duplicate member %r" % key)
        obj[key] = value
    return obj


def _load(path: Path) -> Dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(data, dict):
        raise FactsError("%s: not a JSON object" % path.name)
    return data


def _check_names(where: str, obj: Dict[str, Any], keep: set, drop: set) -> None:
    unknown = sorted(set(obj) - keep - drop)
    if unknown:
        raise FactsError(
            "%s: unknown member(s) %s: decide whether they are facts or prose" % (where, unknown)
        )


def _no_prose_inside(where: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PROSE_NAMES:
                raise FactsError("%s: nested %r member" % (where, key))
            _no_prose_inside(where, item)
    elif isinstance(value, list):
        for item in value:
            _no_prose_inside(where, item)


def facts(name: str, upstream: Dict[str, Any]) -> Dict[str, Any]:
    """The upstream object minus its prose, members in upstream order."""
    _check_names(name, upstream, TOP_KEEP, TOP_DROP)
    out: Dict[str, Any] = {}
    for key, value in upstream.items():
        if key in TOP_DROP:
            continue
        if key != "testGroups":
            out[key] = value
            continue
        groups = []
        for i, group in enumerate(value):
            where = "%s group %d" % (name, i)
            _check_names(where, group, GROUP_KEEP, set())
            label = group.get("comment")
            if label is not None and not (isinstance(label, str) and LABEL.fullmatch(label)):
                raise FactsError("%s: group comment %r is not a short label" % (where, label))
            new_group: Dict[str, Any] = {}
            for gkey, gvalue in group.items():
                if gkey == "tests":
                    tests = []
                    for test in gvalue:
                        _check_names(
                            "%s test %r" % (where, test.get("tcId")), test, TEST_KEEP, TEST_DROP
                        )
                        tests.append({k: v for k, v in test.items() if k not in TEST_DROP})
                    new_group[gkey] = tests
                else:
                    new_group[gkey] = gvalue
            groups.append(new_group)
        out[key] = groups
    _no_prose_inside(name, {k: v for k, v in out.items() if k != "testGroups"})
    for group in out["testGroups"]:
        _no_prose_inside(name, {k: v for k, v in group.items() if k != "comment"})
    return out


def encode(obj: Dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=False) + "\n").encode(
        "utf-8"
    )


def count_tests(obj: Dict[str, Any]) -> int:
    return sum(len(group["tests"]) for group in obj["testGroups"])


def _sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def run(src: Path, check_only: bool) -> int:
    if not src.is_dir():
        print("source folder not found: %s" % src, file=sys.stderr)
        return 2
    problems = []
    rows = []
    if not check_only:
        OUT_DIR.mkdir(exist_ok=True)
    for name, expected in FILES.items():
        raw = (src / name).read_bytes()
        upstream = _load(src / name)
        copy = encode(facts(name, upstream))
        target = OUT_DIR / name
        if not check_only:
            target.write_bytes(copy)
        on_disk = target.read_bytes() if target.is_file() else b""
        if on_disk != copy:
            problems.append("%s: copy on disk differs from the one derived from %s" % (name, src))
            continue
        written = json.loads(on_disk)
        counts = {
            count_tests(upstream),
            count_tests(written),
            upstream["numberOfTests"],
            written["numberOfTests"],
        }
        if counts != {expected}:
            problems.append("%s: test counts %s, expected %d" % (name, sorted(counts), expected))
        rows.append((name, expected, _sha16(raw), _sha16(on_disk)))
    licence = (src / "LICENSE").read_bytes()
    if not check_only:
        (OUT_DIR / "LICENSE").write_bytes(licence)
    if not (OUT_DIR / "LICENSE").is_file() or (OUT_DIR / "LICENSE").read_bytes() != licence:
        problems.append("LICENSE: not a verbatim copy of %s" % (src / "LICENSE"))
    print("| file | tests | sha256 upstream | sha256 copy |")
    print("|---|---|---|---|")
    for name, tests, up_hash, copy_hash in rows:
        print("| %s | %d | %s… | %s… |" % (name, tests, up_hash, copy_hash))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(
        "%s: %d files %s"
        % (OUT_DIR, len(rows), "match upstream" if check_only else "written and verified")
    )
    return 0


def main(argv: List[str]) -> int:
    check_only = "--check" in argv
    rest = [arg for arg in argv if arg != "--check"]
    if len(rest) > 1 or any(arg.startswith("-") for arg in rest):
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(rest[0]) if rest else DEFAULT_SRC
    try:
        return run(src, check_only)
    except (OSError, ValueError, KeyError, TypeError, FactsError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
