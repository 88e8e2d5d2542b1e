"""The archive in escrow mode through the real binary, checked with the standard tools.

An escrow key pair is made with the real gpg CLI; the gateway gets only the public key.
- Without the secret key nothing reads content back (`archive get` says so; `archive verify`
  checks what it can and says what it could not); with --escrow-key the exact bytes return.
- A stored blob read with RocksDB's `ldb`, decrypted with `gpg --decrypt` and decompressed with
  `zstd -d` is the original message: the archive is readable without postvault.
- The relay path in escrow mode, and `archive get --escrow-key` through the running server.
"""

import json
import re
import shutil
import smtplib
import subprocess
import unittest

from harness import wait_until
from test_archive import ArchiveTestCase, make_message, sha256, summary_counts

GPG = shutil.which("gpg") or "/usr/bin/gpg"
GPGCONF = shutil.which("gpgconf") or "/usr/bin/gpgconf"
ZSTD = shutil.which("zstd") or "/usr/bin/zstd"


class EscrowTestCase(ArchiveTestCase):
    def setUp(self):
        super().setUp()
        self.gnupg = self.tmp / "gnupg"  # short: gpg-agent's socket path must fit in sun_path
        self.gnupg.mkdir(mode=0o700)
        self.cleanups.append(lambda: subprocess.run([GPGCONF, "--homedir", str(self.gnupg), "--kill", "all"],
                                                    capture_output=True, timeout=30))
        fingerprint = self.make_escrow_key()
        self.pv = self.start_postvault(start=False, delivery=self.delivery(),
                                       extra='[archive]\nmode = "escrow"\nescrow_keys = ["escrow.asc"]\n')
        self.public_key = self.pv.directory / "escrow.asc"
        self.public_key.write_bytes(self.gpg("--armor", "--export", fingerprint))
        self.secret_key = self.tmp / "escrow-secret.asc"
        self.secret_key.write_bytes(self.gpg("--armor", "--export-secret-keys", fingerprint))
        self.assertIn(b"PRIVATE KEY BLOCK", self.secret_key.read_bytes())

    def delivery(self):
        return None

    def gpg(self, *args, input_bytes=None):
        result = subprocess.run([GPG, "--homedir", str(self.gnupg), "--batch", "--pinentry-mode", "loopback",
                                 "--passphrase", "", *args], capture_output=True, input=input_bytes, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def make_escrow_key(self):
        self.gpg("--quick-gen-key", "Escrow <escrow@corp.test>", "ed25519", "cert", "0")
        listing = self.gpg("--with-colons", "--list-keys", "escrow@corp.test").decode()
        fingerprint = re.search(r"^fpr:+([0-9A-F]{40}):", listing, re.M).group(1)
        self.gpg("--quick-add-key", fingerprint, "cv25519", "encr", "0")
        return fingerprint

    def get(self, message_id, *extra, check=True):
        return self.pv.archive("get", message_id, *extra, check=check)

    def with_key(self):
        return ("--escrow-key", self.secret_key)

    def assert_no_agent_left_in(self, directory):
        """No gpg-agent (or other daemon) started by postvault for a GnuPG home under `directory`."""
        processes = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        left = [line for line in processes.splitlines() if str(directory) in line and "gpg" in line]
        self.assertEqual(left, [], "gpg daemons left behind")


class EscrowArchiveTest(EscrowTestCase):
    def test_escrow_content_needs_the_secret_key_and_opens_with_standard_tools(self):
        folder = self.tmp / "eml"
        folder.mkdir()
        originals = {f"{i}.eml": make_message(i, body=f"escrow body {i}\r\n") for i in range(4)}
        originals["big.eml"] = make_message(9, attachment="QUJD" * 6000)  # a 24 KB leaf
        for name, data in originals.items():
            (folder / name).write_bytes(data)

        result = self.pv.archive("import", "--format", "eml", folder)
        self.assertEqual(summary_counts(result.stdout.decode()), (len(originals), 0, 0))
        listed = self.pv.archive_list()
        by_sha = {digest: message_id for message_id, digest in listed.items()}
        self.assertEqual(sorted(by_sha), sorted(sha256(d) for d in originals.values()))
        stats = self.pv.archive("stats").stdout.decode()
        self.assertIn("attachments stored once: 1", stats)

        # The search index was written at ingest (the index queue carried the text the server
        # cannot read back): words are found without the key; snippets need it.
        def search(*args, check=True):
            return self.pv.cli("search", "--config", str(self.pv.config_path), *args, check=check)
        self.assertEqual(search("--count", "escrow body").stdout.split()[-1], "4")
        self.assertEqual(search("--count", "body:\"escrow body 2\"").stdout.split()[-1], "1")
        hits = json.loads(search("--json", "body:\"escrow body 2\"").stdout)["results"]
        self.assertEqual(hits[0]["snippet"], "")
        keyed = json.loads(search("--json", "--escrow-key", str(self.secret_key), "body:\"escrow body 2\"").stdout)
        self.assertRegex(keyed["results"][0]["snippet"], r"\[[^\]]*escrow body 2\]")

        # Without the secret key: nothing to read, and the message says what is missing.
        some_id = by_sha[sha256(originals["0.eml"])]
        refused = self.get(some_id, check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertEqual(refused.stdout, b"")
        self.assertIn(b"escrow secret key", refused.stderr)

        # With it: exact bytes, for the message with a leaf too.
        for data in originals.values():
            self.assertEqual(self.get(by_sha[sha256(data)], *self.with_key()).stdout, data)

        # verify: without the key it checks chain and records and says content was not decrypted.
        verify = self.pv.archive("verify")
        output = verify.stdout.decode()
        self.assertIn("archive intact", output)
        self.assertRegex(output, r"note: .*escrow")
        self.assertIn("contents checked: 0", output)
        output = self.pv.archive("verify", *self.with_key()).stdout.decode()
        self.assertIn("archive intact", output)
        self.assertNotIn("note:", output)
        self.assertIn(f"contents checked: {len(originals)}", output)

        # Standard tools: the message's location names its sealed group blob and the slice;
        # ldb -> hex -> gpg --decrypt -> zstd -d -> slice is the original message. The group's
        # SHA-256 is on its "seal" chain entry.
        small = originals["2.eml"]
        small_id = by_sha[sha256(small)]
        location = json.loads(self.ldb(self.pv, "--column_family=locations", "get", small_id).strip())
        sealed = self.blob(location["pack"])
        chain = self.ldb(self.pv, "--column_family=chain", "scan")
        self.assertIn(f" seal {location['pack']} archive {sha256(sealed)} ", chain)
        self.assertNotIn(b"escrow body 2", sealed)
        group = self.open_sealed(sealed)
        start = location["offset"]
        self.assertEqual(group[start:start + location["length"]], small)

        # The big message: skeleton plus the leaf, spliced back at the recorded offsets.
        big = originals["big.eml"]
        big_id = by_sha[sha256(big)]
        location = json.loads(self.ldb(self.pv, "--column_family=locations", "get", big_id).strip())
        group = self.open_sealed(self.blob(location["pack"]))
        skeleton = group[location["offset"]:location["offset"] + location["length"]]
        self.assertLess(len(skeleton), len(big) - 16 * 1024)
        self.assertEqual(len(location["leaves"]), 1)
        leaf_ref = location["leaves"][0]
        leaf_location = json.loads(
            self.ldb(self.pv, "--column_family=locations", "get", f"l/{leaf_ref['sha256']}").strip())
        leaf_group = self.open_sealed(self.blob(leaf_location["pack"]))
        leaf = leaf_group[leaf_location["offset"]:leaf_location["offset"] + leaf_location["length"]]
        self.assertEqual(sha256(leaf), leaf_ref["sha256"])
        offset = leaf_ref["offset"]
        self.assertEqual(skeleton[:offset] + leaf + skeleton[offset:], big)
        self.assert_no_agent_left_in(self.pv.directory)

    def blob(self, key):
        value = self.ldb(self.pv, "--column_family=blobs", "--value_hex", "get", key).strip()
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)

    def open_sealed(self, sealed):
        """gpg --decrypt with the escrow secret key, then zstd -d."""
        frame = self.gpg("--decrypt", input_bytes=sealed)
        self.assertTrue(frame.startswith(b"\x28\xb5\x2f\xfd"), "not a zstd frame")
        result = subprocess.run([ZSTD, "-d", "-c"], input=frame, capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_the_gateway_refuses_a_secret_key_as_escrow_key(self):
        shutil.copy(self.secret_key, self.public_key)
        result = self.pv.archive("import", "--format", "eml", self.eml_folder(1), check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"secret key", result.stderr)
        self.assertNotIn(b"BEGIN PGP", result.stderr)


class EscrowRelayTest(EscrowTestCase):
    def delivery(self):
        self.sink = self.start_sink()
        return {"relayhost": f"127.0.0.1:{self.sink.port}"}

    def test_relayed_message_is_archived_and_readable_with_the_key_while_serving(self):
        self.pv.start()
        message = make_message(40, attachment="QUJD" * 5000)
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("sender40@corp.test", ["someone40@partner.test", "bcc40@partner.test"], message)
        relayed = self.sink.wait_for(1)[0][1]
        self.assertTrue(relayed.endswith(message))
        listed = wait_until(lambda: self.pv.archive_list(), message="the message archived")
        (message_id, digest), = listed.items()
        self.assertEqual(digest, sha256(relayed))
        record = json.loads(self.pv.archive("show", message_id).stdout)
        self.assertEqual(record["recipients"], ["someone40@partner.test", "bcc40@partner.test"])

        # Through the control socket: refused without the key, exact with it.
        refused = self.get(message_id, check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"escrow secret key", refused.stderr)
        self.assertEqual(self.get(message_id, *self.with_key()).stdout, relayed)
        self.assertIsNone(self.pv.process.poll())
        output = self.pv.archive("verify", *self.with_key()).stdout.decode()
        self.assertIn("contents checked: 1", output)
        self.assertIn("archive intact", output)
        self.assertEqual(self.pv.stop(), 0)
        self.assert_no_agent_left_in(self.pv.directory)


if __name__ == "__main__":
    unittest.main()
