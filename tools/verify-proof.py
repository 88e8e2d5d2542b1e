#!/usr/bin/env python3
"""Verify a postvault archive inclusion proof with standard tools only.

Usage: verify-proof.py PROOF.json [--key TRUSTED_PUBLIC.pem]

Checks, independently of postvault (see docs/archive-proofs.md):
  1. the entry line is canonical and its SHA-256 is entry_hash;
  2. leaf_index equals the entry's seq and lies inside tree_size;
  3. the Merkle path (RFC 9162 section 2.1.3.2) leads from the entry to the
     root named in the checkpoint, whose size is tree_size (and whose head is
     the entry when it is the last one);
  4. the checkpoint's Ed25519 signature verifies, with the openssl CLI, under
     the trusted key (--key) or, without --key, under the key in the proof,
     whose id must then be compared by hand with the archive's published key;
  5. message.sha256, when present, equals the entry's content field.

Exit status 0 and "proof OK: ..." on success; 1 and the reason otherwise.
Python 3 standard library plus the `openssl` command (OpenSSL >= 3.0).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

HEX64 = re.compile(r"[0-9a-f]{64}")
DECIMAL_UNSIGNED = re.compile(r"0|[1-9][0-9]*")
DECIMAL_SIGNED = re.compile(r"0|-?[1-9][0-9]*")
KEY_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
CHECKPOINT = re.compile(
    r"postvault-checkpoint v1\n"
    r"size (0|[1-9][0-9]*)\n"
    r"root ([0-9a-f]{64})\n"
    r"head ([0-9a-f]{64})\n"
    r"time (0|-?[1-9][0-9]*)\n"
    r"key ([0-9A-Za-z._-]{1,64})\n")


class ProofError(Exception):
    pass


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(entry_hash):
    return sha256(b"\x00" + entry_hash)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def escape_field(value):
    """The entry line's escaping of one text field (bytes)."""
    if value == b"":
        return "-"
    if value == b"-":
        return "%2D"
    out = []
    for byte in value:
        if byte <= 0x20 or byte == 0x25 or byte >= 0x7F:
            out.append("%%%02X" % byte)
        else:
            out.append(chr(byte))
    return "".join(out)


def unescape_field(token):
    if token == "-":
        return b""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            digits = token[i + 1:i + 3]
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise ProofError("entry line: bad %%-escape in field %r" % token)
            out.append(int(digits, 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return bytes(out)


def parse_entry(line):
    """Returns (seq, fields dict); refuses a line that is not canonical."""
    if not line.isascii():
        raise ProofError("entry line has non-ASCII characters")
    tokens = line.split(" ")
    if len(tokens) != 9 or tokens[0] != "pv1":
        raise ProofError("entry line does not have the form 'pv1 <seq> <time> <type> <subject> "
                         "<actor> <content> <record> <prev>'")
    if not DECIMAL_UNSIGNED.fullmatch(tokens[1]) or not DECIMAL_SIGNED.fullmatch(tokens[2]):
        raise ProofError("entry line: seq or time is not a canonical decimal number")
    if not HEX64.fullmatch(tokens[8]):
        raise ProofError("entry line: prev is not 64 lower-case hex characters")
    names = ["type", "subject", "actor", "content", "record"]
    fields = {}
    for name, token in zip(names, tokens[3:8]):
        value = unescape_field(token)
        if escape_field(value) != token:
            raise ProofError("entry line: field %s (%r) is not canonically escaped" % (name, token))
        fields[name] = value
    fields["time"] = int(tokens[2])
    fields["prev"] = tokens[8]
    return int(tokens[1]), fields


def root_from_path(entry_hash, index, tree_size, path):
    """RFC 9162 section 2.1.3.2; returns the computed root or None."""
    if index >= tree_size:
        return None
    fn, sn = index, tree_size - 1
    r = leaf_hash(entry_hash)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def pem_der(pem):
    """DER bytes of the single PUBLIC KEY block of a PEM text."""
    match = re.fullmatch(r"\s*-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=\n]+)-----END PUBLIC KEY-----\s*", pem)
    if not match:
        raise ProofError("public key is not a PEM 'PUBLIC KEY' block")
    try:
        return base64.b64decode(match.group(1).replace("\n", ""), validate=True)
    except binascii.Error:
        raise ProofError("public key PEM has bad base64")


def key_id(pem):
    return hashlib.sha256(pem_der(pem)).hexdigest()[:16]


def openssl_verify(public_pem, message, signature):
    with tempfile.TemporaryDirectory(prefix="pv-proof-") as directory:
        paths = {}
        for name, data in (("pub.pem", public_pem.encode()), ("checkpoint.txt", message), ("sig.bin", signature)):
            paths[name] = os.path.join(directory, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        try:
            result = subprocess.run(
                ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["pub.pem"], "-rawin",
                 "-in", paths["checkpoint.txt"], "-sigfile", paths["sig.bin"]],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise ProofError("the openssl command is not installed")
        return result.returncode == 0


def require(proof, name, kind):
    value = proof.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProofError("proof field %r is missing or not a %s" % (name, kind.__name__))
    return value


def verify(proof, trusted_pem):
    if not isinstance(proof, dict):
        raise ProofError("proof is not a JSON object")
    if proof.get("version") != 1 or isinstance(proof.get("version"), bool):
        raise ProofError("proof version is not 1")

    line = require(proof, "entry", str)
    seq, fields = parse_entry(line)
    entry_hash = sha256(line.encode("ascii"))
    if require(proof, "entry_hash", str) != entry_hash.hex():
        raise ProofError("entry_hash is not the SHA-256 of the entry line (%s)" % entry_hash.hex())

    index = require(proof, "leaf_index", int)
    tree_size = require(proof, "tree_size", int)
    if index != seq:
        raise ProofError("leaf_index %d differs from the entry's seq %d" % (index, seq))
    if not 0 <= index < tree_size:
        raise ProofError("leaf_index %d is outside the tree of size %d" % (index, tree_size))

    path_hex = require(proof, "path", list)
    if len(path_hex) > 64:
        raise ProofError("path is longer than any tree allows")
    path = []
    for i, element in enumerate(path_hex):
        if not isinstance(element, str) or not HEX64.fullmatch(element):
            raise ProofError("path element %d is not 64 lower-case hex characters" % i)
        path.append(bytes.fromhex(element))

    checkpoint = require(proof, "checkpoint", dict)
    text = require(checkpoint, "text", str)
    match = CHECKPOINT.fullmatch(text)
    if not match:
        raise ProofError("checkpoint text is not in the postvault-checkpoint v1 form")
    cp_size, cp_root, cp_head, cp_time, cp_key = (int(match.group(1)), match.group(2), match.group(3),
                                                  int(match.group(4)), match.group(5))
    try:
        signature = base64.b64decode(require(checkpoint, "signature_base64", str), validate=True)
    except binascii.Error:
        raise ProofError("checkpoint signature_base64 is not base64")
    if require(checkpoint, "key_id", str) != cp_key:
        raise ProofError("checkpoint key_id differs from the key in its text %s" % cp_key)
    if cp_size != tree_size:
        raise ProofError("tree_size %d differs from the checkpoint's size %d" % (tree_size, cp_size))

    root = root_from_path(entry_hash, index, tree_size, path)
    if root is None or root.hex() != cp_root:
        raise ProofError("the path from entry %d does not lead to the checkpoint root %s" % (index, cp_root))
    if index + 1 == tree_size and cp_head != entry_hash.hex():
        raise ProofError("the entry is the last of the tree but the checkpoint head is %s" % cp_head)

    embedded_pem = require(proof, "public_key_pem", str)
    embedded_id = key_id(embedded_pem)
    public_pem = embedded_pem
    if trusted_pem is not None:
        trusted_id = key_id(trusted_pem)
        if trusted_id != embedded_id:
            raise ProofError("the proof carries key %s but the trusted key is %s" % (embedded_id, trusted_id))
        public_pem = trusted_pem
    if embedded_id != cp_key:
        raise ProofError("checkpoint names key %s but the public key is %s" % (cp_key, embedded_id))
    if len(signature) != 64 or not openssl_verify(public_pem, text.encode("ascii"), signature):
        raise ProofError("checkpoint signature does not verify with key %s" % cp_key)

    message = proof.get("message")
    if message is not None:
        if not isinstance(message, dict):
            raise ProofError("message is not an object")
        if "sha256" in message and message["sha256"] != fields["content"].decode("latin-1"):
            raise ProofError("message.sha256 differs from the entry's content hash %s"
                             % fields["content"].decode("latin-1"))

    when = (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
            + datetime.timedelta(microseconds=cp_time))
    return "proof OK: entry %d is in the tree of size %d signed at %s by key %s" % (
        index, tree_size, when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), cp_key)


def main():
    parser = argparse.ArgumentParser(description="Verify a postvault archive inclusion proof.")
    parser.add_argument("proof", help="proof JSON file written by `postvault archive prove`")
    parser.add_argument("--key", help="the archive's public key (PEM) obtained independently of the proof")
    args = parser.parse_args()
    try:
        with open(args.proof, "rb") as f:
            proof = json.loads(f.read().decode("utf-8"))
        trusted_pem = None
        if args.key:
            with open(args.key, "r", encoding="ascii") as f:
                trusted_pem = f.read()
        print(verify(proof, trusted_pem))
        if trusted_pem is None:
            print("note: checked against the key inside the proof; compare its id with the archive's "
                  "published key id, or pass --key", file=sys.stderr)
        return 0
    except ProofError as error:
        print("proof FAILED: %s" % error, file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print("proof FAILED: cannot read the proof: %s" % error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
