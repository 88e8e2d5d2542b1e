"""The compliance archive through the real binary: journaling, exact bytes, tamper evidence.

- Every message of ../shared/corpus/ is imported and comes back byte for byte (same SHA-256),
  before and after repacking.
- The relay journals each accepted message with every envelope recipient (BCC included) and
  later the per-recipient outcome; the archive commands work while the server runs.
- Tampering with RocksDB's own `ldb` tool (a changed byte, a deleted key, two entries swapped)
  makes `archive verify` fail and name the place.
- kill -9 during an import, then the same import again: nothing lost, nothing doubled.
"""

import email
import email.policy
import hashlib
import pathlib
import re
import shutil
import smtplib
import subprocess
import time
import unittest

from harness import SOURCE_DIR, PostvaultTestCase, wait_until

CORPUS = SOURCE_DIR.parent / "shared" / "corpus"
LDB = shutil.which("ldb") or "/usr/bin/ldb"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def summary_counts(output):
    """(imported, duplicates, failed) from the import's last line."""
    last = output.strip().splitlines()[-1]
    match = re.fullmatch(r"imported (\d+), duplicates (\d+), failed (\d+)", last)
    if not match:
        raise AssertionError(f"unexpected import summary: {last!r}")
    return tuple(int(n) for n in match.groups())


def make_message(index, body="", attachment=None, extra_headers=""):
    text = (f"From: sender{index}@corp.test\r\nTo: someone{index}@partner.test\r\n"
            f"Subject: archive test {index}\r\nMessage-ID: <m{index}@corp.test>\r\n"
            f"Date: Mon, 2 Mar 2026 10:{index % 60:02d}:00 +0000\r\n{extra_headers}")
    if attachment is None:
        return (text + f"\r\nbody {index}\r\n{body}").encode()
    boundary = f"b{index}"
    encoded = "\r\n".join(attachment[i:i + 76] for i in range(0, len(attachment), 76))
    return (text + f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nsee attached {index}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="data.bin"\r\n\r\n{encoded}\r\n--{boundary}--\r\n').encode()


class ArchiveTestCase(PostvaultTestCase):
    def unpack(self, name):
        archive = CORPUS / f"{name}.tar.zst"
        if not archive.exists():
            self.skipTest(f"corpus not found at {archive} (the shared/ folder beside the checkout)")
        target = self.tmp / "corpus"
        target.mkdir(exist_ok=True)
        if not (target / name).exists():
            subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(target)], check=True)
        return target / name

    def eml_folder(self, count, name="eml", attachment_every=0):
        folder = self.tmp / name
        folder.mkdir()
        shared = "QUJD" * 6000  # a 24 KB attachment sent again and again: stored once
        for i in range(count):
            attachment = shared if attachment_every and i % attachment_every == 0 else None
            (folder / f"{i:04d}.eml").write_bytes(make_message(i, attachment=attachment))
        return folder

    def ldb(self, pv, *args, check=True):
        result = subprocess.run([LDB, f"--db={pv.directory / 'archive'}", "--try_load_options", *args],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"ldb {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout


class ArchiveCorpusTest(ArchiveTestCase):
    def test_every_corpus_message_round_trips_byte_exact(self):
        pv = self.start_postvault(start=False)
        expected = {}
        for name in ("ext4-dev", "usrp-dev"):
            folder = self.unpack(name)
            files = [p for p in folder.rglob("*") if p.is_file()]
            for path in files:
                expected.setdefault(sha256(path.read_bytes()), path)
            result = pv.archive("import", "--format", "maildir", folder)
            imported, duplicates, failed = summary_counts(result.stdout.decode())
            self.assertEqual(failed, 0)
            self.assertEqual(imported + duplicates, len(files))

        listed = pv.archive_list()
        self.assertEqual(sorted(listed.values()), sorted(expected))  # one message per distinct SHA-256

        verify = pv.archive("verify").stdout.decode()
        self.assertIn(f"contents checked: {len(expected)}", verify)
        self.assertIn("archive intact", verify)

        # Exact bytes through `archive get`, for a sample across both corpora.
        ids = sorted(listed)
        for message_id in ids[:: max(1, len(ids) // 60)]:
            original = expected[listed[message_id]].read_bytes()
            self.assertEqual(pv.archive("get", message_id).stdout, original, message_id)

        stats = pv.archive("stats").stdout.decode()
        self.assertIn(f"messages: {len(expected)}", stats)
        raw = int(re.search(r"raw bytes: (\d+)", stats).group(1))
        self.assertEqual(raw, sum(p.stat().st_size for p in expected.values()))


class ArchiveCompactTest(ArchiveTestCase):
    def test_repacked_messages_still_come_back_exact(self):
        pv = self.start_postvault(start=False)
        folder = self.eml_folder(120, attachment_every=10)
        pv.archive("import", "--format", "eml", folder)
        before = pv.archive_list()
        result = pv.archive("compact")
        self.assertIn("repacked 120 message(s)", result.stdout.decode())
        stats = pv.archive("stats").stdout.decode()
        self.assertIn("packed messages: 120", stats)
        self.assertIn("attachments stored once: 1 (referenced 12 times)", stats)
        self.assertEqual(pv.archive_list(), before)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())
        for message_id, digest in before.items():
            self.assertEqual(sha256(pv.archive("get", message_id).stdout), digest)


class ArchiveRelayTest(ArchiveTestCase):
    def test_relay_journals_bcc_recipients_and_outcomes(self):
        sink = self.start_sink()
        pv = self.start_postvault(smtp={"local_domains": ["corp.test"]},
                                  delivery={"relayhost": f"127.0.0.1:{sink.port}"})
        message = make_message(1)  # headers name only someone1@partner.test
        envelope = ["someone1@partner.test", "hidden@partner.test", "auditor@other.test"]
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            client.sendmail("sender1@corp.test", envelope, message)
            client.sendmail("outside@partner.test", ["boss@corp.test"], make_message(2))
        sink.wait_for(2)

        # While the server runs: list and show read a secondary handle.
        listed = pv.archive_list()
        self.assertEqual(len(listed), 2)
        records = {}
        for message_id in listed:
            records[message_id] = __import__("json").loads(pv.archive("show", message_id).stdout)
        outbound = next(r for r in records.values() if r["direction"] == "outbound")
        inbound = next(r for r in records.values() if r["direction"] == "inbound")
        self.assertEqual(outbound["recipients"], envelope)
        self.assertEqual(outbound["from"], "sender1@corp.test")
        self.assertEqual(outbound["client"]["ip"], "127.0.0.1")
        self.assertEqual(inbound["recipients"], ["boss@corp.test"])

        # The per-recipient outcome arrives as a metadata update.
        def outcomes():
            record = __import__("json").loads(pv.archive("show", outbound["id"]).stdout)
            return {o["address"]: o for o in record["outcomes"]}
        wait_until(lambda: len(outcomes()) == 3, message="outcomes recorded")
        for address in envelope:
            self.assertEqual(outcomes()[address]["state"], "delivered")
            self.assertTrue(outcomes()[address]["reply"].startswith("250"))

        # What the archive holds is exactly what was relayed (Received: included).
        relayed = [data for meta, data in sink.messages() if meta["rcpt_tos"] == envelope][0]
        archived = pv.archive("get", outbound["id"]).stdout  # through the server: recorded as access
        self.assertEqual(archived, relayed)
        self.assertEqual(sha256(archived), outbound["sha256"])
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())

        # Access is on the record: the chain has ingest x2, update x>=1, access x1.
        self.assertEqual(pv.stop(), 0)
        chain = self.ldb(pv, "--column_family=chain", "scan")
        self.assertIn(" access " + outbound["id"], chain)
        self.assertRegex(chain, r" update " + outbound["id"])

    def test_maintenance_goes_through_the_running_server(self):
        pv = self.start_postvault()
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            client.sendmail("sender1@corp.test", ["someone@partner.test"], make_message(1))
        wait_until(lambda: len(pv.archive_list()) == 1, message="message archived")
        # A proof right away: the server signs a checkpoint for it on request.
        (message_id,) = pv.archive_list()
        proof = __import__("json").loads(pv.archive("prove", message_id).stdout)
        self.assertEqual(proof["message"]["id"], message_id)
        self.assertIn(b"repacked 1 message(s)", pv.archive("compact").stdout)
        self.assertIn(b"new key-encryption key kek-2", pv.archive("rotate-key").stdout)
        self.assertIn(b"verified", pv.archive("backup", self.tmp / "backup").stdout)
        refused = pv.archive("restore", self.tmp / "backup", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"running server", refused.stderr)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


class ArchiveTamperTest(ArchiveTestCase):
    """Each test breaks a fresh archive one way; verify must fail and say where."""

    def archive_with_messages(self, count=12):
        pv = self.start_postvault(start=False)
        pv.archive("import", "--format", "eml", self.eml_folder(count, attachment_every=5))
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())
        return pv, sorted(pv.archive_list())

    def assert_verify_fails(self, pv, *fragments):
        result = pv.archive("verify", check=False)
        output = result.stdout.decode()
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn("ARCHIVE DAMAGED", output)
        first = output.split("the first break:\n", 1)[1].splitlines()[0]
        for fragment in fragments:
            self.assertIn(fragment, first, output)
        return output

    def test_a_flipped_byte_in_stored_content_is_found(self):
        pv, ids = self.archive_with_messages()
        key = f"m/{ids[3]}"
        value = self.ldb(pv, "--column_family=blobs", "--value_hex", "get", key).strip()
        data = bytearray.fromhex(value[2:] if value.startswith("0x") else value)
        data[len(data) // 2] ^= 0x01
        self.ldb(pv, "--column_family=blobs", "--value_hex", "put", key, "0x" + data.hex())
        self.assert_verify_fails(pv, ids[3])

    def test_a_changed_metadata_record_is_found(self):
        pv, ids = self.archive_with_messages()
        record = self.ldb(pv, "--column_family=messages", "get", ids[5]).strip()
        forged = record.replace("someone5@partner.test", "someone6@partner.test")
        if forged == record:
            forged = record.replace('"import"', '"inbound"')
        self.assertNotEqual(forged, record)
        self.ldb(pv, "--column_family=messages", "put", ids[5], forged)
        self.assert_verify_fails(pv, ids[5], "record was changed")

    def test_a_deleted_chain_entry_is_found(self):
        pv, _ = self.archive_with_messages()
        self.ldb(pv, "--column_family=chain", "--key_hex", "delete", "0x0000000000000004")
        self.assert_verify_fails(pv, "entry 4 is missing")

    def test_a_deleted_message_is_found(self):
        pv, ids = self.archive_with_messages()
        self.ldb(pv, "--column_family=messages", "delete", ids[7])
        output = self.assert_verify_fails(pv)
        self.assertIn(f"message {ids[7]} (ingest entry", output)

    def test_reordered_entries_are_found(self):
        pv, _ = self.archive_with_messages()
        third = self.ldb(pv, "--column_family=chain", "--key_hex", "get", "0x0000000000000003").strip()
        fourth = self.ldb(pv, "--column_family=chain", "--key_hex", "get", "0x0000000000000004").strip()
        self.ldb(pv, "--column_family=chain", "--key_hex", "put", "0x0000000000000003", fourth)
        self.ldb(pv, "--column_family=chain", "--key_hex", "put", "0x0000000000000004", third)
        self.assert_verify_fails(pv, "position 3", "reordered")

    def test_entries_removed_from_the_end_are_found(self):
        pv, _ = self.archive_with_messages()
        last = int(re.search(r"chain entries: (\d+)", pv.archive("stats").stdout.decode()).group(1)) - 1
        self.ldb(pv, "--column_family=chain", "--key_hex", "delete", f"0x{last:016x}")
        self.assert_verify_fails(pv, "removed")


class ArchiveProofTest(ArchiveTestCase):
    def test_inclusion_proof_checks_with_standard_tools(self):
        pv, = (self.start_postvault(start=False),)
        folder = self.eml_folder(9)
        pv.archive("import", "--format", "eml", folder)
        listed = pv.archive_list()
        message_id = sorted(listed)[4]
        proof = self.tmp / "proof.json"
        proof.write_bytes(pv.archive("prove", message_id).stdout)
        public = self.tmp / "archive-public.pem"
        subprocess.run(["openssl", "pkey", "-in", str(pv.directory / "keys" / "archive-signing.pem"), "-pubout",
                        "-out", str(public)], check=True)
        check = subprocess.run(["/usr/bin/python3", str(SOURCE_DIR / "tools" / "verify-proof.py"), str(proof),
                                "--key", str(public)], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertIn("proof OK", check.stdout)
        # The proof names the message's SHA-256, which anyone can recompute from the bytes.
        self.assertIn(listed[message_id], proof.read_text())
        forged = proof.read_text().replace(listed[message_id], sha256(b"something else"))
        proof.write_text(forged)
        check = subprocess.run(["/usr/bin/python3", str(SOURCE_DIR / "tools" / "verify-proof.py"), str(proof),
                                "--key", str(public)], capture_output=True, text=True)
        self.assertNotEqual(check.returncode, 0)


class ArchiveImportResumeTest(ArchiveTestCase):
    def test_kill_during_import_then_resume_loses_and_doubles_nothing(self):
        folder = self.unpack("ext4-dev")
        files = [p for p in folder.rglob("*") if p.is_file()]
        distinct = {sha256(p.read_bytes()) for p in files}
        pv = self.start_postvault(start=False)
        from harness import BINARY
        process = subprocess.Popen([BINARY, "archive", "import", "--config", str(pv.config_path),
                                    "--format", "maildir", str(folder)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill once a part is in (a secondary handle sees the writer's progress).
        def some_imported():
            stats = pv.archive("stats", check=False).stdout.decode()
            found = re.search(r"messages: (\d+)", stats)
            return found and int(found.group(1)) > 300
        wait_until(some_imported, timeout=60, interval=0.02, message="part of the import")
        process.kill()
        process.wait()
        self.assertNotEqual(process.returncode, 0, "the import finished before it could be killed")

        result = pv.archive("import", "--format", "maildir", folder)
        output = result.stdout.decode()
        imported, duplicates, failed = summary_counts(output)
        resumed = int(re.search(r"already imported by an earlier run: (\d+)", output).group(1))
        self.assertGreater(resumed, 300)
        self.assertEqual(failed, 0)
        self.assertEqual(resumed + imported + duplicates, len(files))
        listed = pv.archive_list()
        self.assertEqual(len(listed), len(distinct))
        self.assertEqual(set(listed.values()), distinct)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


class ArchiveBackupTest(ArchiveTestCase):
    def test_backup_and_restore_give_the_same_verified_archive(self):
        pv = self.start_postvault(start=False)
        pv.archive("import", "--format", "eml", self.eml_folder(15, attachment_every=4))
        before = pv.archive_list()
        backup = self.tmp / "backup"
        self.assertIn("verified", pv.archive("backup", backup).stdout.decode())
        shutil.move(str(pv.directory / "archive"), str(self.tmp / "damaged"))
        result = pv.archive("restore", backup)
        self.assertIn("archive intact", result.stdout.decode())
        self.assertEqual(pv.archive_list(), before)
        for message_id, digest in before.items():
            self.assertEqual(sha256(pv.archive("get", message_id).stdout), digest)
        # Restoring over an existing archive is refused.
        refused = pv.archive("restore", backup, check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"not empty", refused.stderr)


if __name__ == "__main__":
    unittest.main()
