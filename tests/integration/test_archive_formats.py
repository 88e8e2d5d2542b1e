"""Archive imports from real files in every format, and the journal listener, through the real binary.

- mbox: an mboxrd file and an mboxo file built from corpus messages plus hand-made ones with
  "From " and ">From " body lines; every message comes back byte for byte.
- eml: a nested folder and a single file; the same folder imported again from a second path
  gives duplicates only, and the record names both paths.
- malformed input (empty, NUL bytes, no blank line after the header) is imported, flagged and
  returned exactly.
- Exchange envelope journal reports: the ORIGINAL message is archived exactly, with the report's
  sender and every recipient (Bcc and expanded list members included).
- PST: a real Outlook file (enron.pst, scripts/install-deps.sh --with-tests).
- the journal listener (archive.journal_listen) archives and never relays; untrusted clients
  are refused.
- `archive import` while the server runs goes through its control socket.
"""

import base64
import json
import os
import pathlib
import random
import re
import shutil
import smtplib
import subprocess
import tarfile
import time
import unittest

from harness import BINARY, SmtpClient, free_port, wait_for_port, wait_until
from test_archive import CORPUS, ArchiveTestCase, make_message, sha256, summary_counts

PST_PATH = pathlib.Path(os.environ.get("POSTVAULT_TEST_PST", "/usr/local/share/postvault-test/enron.pst"))

# --- mbox writers ----------------------------------------------------------------------------

FROM_LINE = b"From archive-test@corp.test Mon Mar  2 10:00:00 2026\n"
FROM_LINE_UNIX = 1772445600  # 2026-03-02 10:00:00 UTC


def write_mbox(path, messages, quote):
    """Writes `messages` as an mbox: From_ line, the quoted message, one separator newline.
    Returns the byte offset of each message's From_ line (the import's source identity)."""
    offsets = []
    with open(path, "wb") as out:
        for message in messages:
            offsets.append(out.tell())
            out.write(FROM_LINE + quote(message) + b"\n")
    return offsets


def quote_mboxrd(message):
    # mboxrd: every line matching ^>*From gets one more '>' (reversible).
    return re.sub(rb"(?m)^(>*From )", rb">\1", message)


def quote_mboxo(message):
    # mboxo: only ^From gets a '>'; an original ">From " line is left alone and so reads back as
    # "From " — mboxo is ambiguous by design, which is why the mboxo file holds no such line.
    return re.sub(rb"(?m)^(From )", rb">\1", message)


def has_quoted_from(message):
    return re.search(rb"(?m)^>+From ", message) is not None


def hand_made_mbox_messages():
    """Messages that exercise From_ quoting and the separator rule (last one ends with a newline)."""
    head = (b"From: quoter@corp.test\nTo: list@partner.test\nDate: Mon, 2 Mar 2026 11:00:00 +0000\n")
    return [
        head + b"Subject: from lines\n\nFrom the start of the body\n>From already quoted\n"
               b">>From twice quoted\n>>>From three times\nFrom: not a header here\nFrom\n",
        head + b"Subject: no final newline\n\nthe last line has no newline\nFrom here on it ends",
        head + b"Subject: crlf\r\n\r\nFrom a CRLF body\r\n>From quoted in CRLF\r\n",
        head + b"Subject: trailing empty lines\n\nbody\n\n\n",
        b"From nobody in a header position\nSubject: starts with a From_ look-alike\n\nx\n",
    ]


def corpus_messages(count, limit=400):
    """Up to `count` distinct messages from the start of ext4-dev (streamed out of the archive,
    no full unpack), preferring ones with From_-like body lines; skips when the corpus is missing."""
    archive = CORPUS / "ext4-dev.tar.zst"
    if not archive.exists():
        raise unittest.SkipTest(f"corpus not found at {archive} (the shared/ folder beside the checkout)")
    process = subprocess.Popen(["zstd", "-dc", str(archive)], stdout=subprocess.PIPE)
    found = []
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    found.append(tar.extractfile(member).read())
                if len(found) >= limit:
                    break
    finally:
        process.kill()
        process.wait()
    distinct = list({sha256(m): m for m in found}.values())
    with_from = [m for m in distinct if re.search(rb"(?m)^>*From ", m)]
    rest = [m for m in distinct if m not in with_from]
    return (with_from[: count // 2] + rest)[:count]


# --- Exchange envelope journal reports --------------------------------------------------------

OUTER = "==JR_1"  # the report's boundary; the original's own boundary starts with it on purpose

ORIGINAL_SMTP_SAFE = (
    b"Received: from mx.partner.test by exch.corp.test; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"From: =?utf-8?q?Al=C3=AFce?= <alice@corp.test>\r\n"
    b"To: bob@partner.test\r\n"
    b"Subject: Q3 numbers \xe2\x80\x94 raw UTF-8 \r\n"
    b"Message-ID: <orig1@corp.test>\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative;\r\n\tboundary=\"==JR_1.inner\"\r\n"
    b"\r\n"
    b"--==JR_1.inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9 with trailing blanks   \r\n"
    b".a line starting with a dot\r\n"
    b"--==JR_1 is not a delimiter here\r\n"
    b"--==JR_1--x neither is this\r\n"
    b"From the desk of Alice\r\n"
    b"\r\n"
    b"--==JR_1.inner--\r\n")

# Read from a file, the original may hold what SMTP cannot carry unchanged.
ORIGINAL_FILE_ONLY = ORIGINAL_SMTP_SAFE.replace(b"Message-ID: <orig1@", b"Message-ID: <orig2@") + (
    b"epilogue: a bare LF line\n"
    b"a lone CR\rin the middle\r\n"
    b"and no final newline")

ENVELOPE_LINES = (
    "Sender: Alice Example <alice@corp.test>\r\n"
    "Subject: Q3 numbers\r\n"
    "Message-Id: <orig1@corp.test>\r\n"
    "To: bob@partner.test\r\n"
    "Cc: carol@partner.test\r\n"
    "Cc: Bob@Partner.test\r\n"
    "Bcc: hidden@corp.test\r\n"
    "To: member@corp.test, Expanded: list@corp.test\r\n")
ENVELOPE_RECIPIENTS = ["bob@partner.test", "carol@partner.test", "hidden@corp.test", "member@corp.test"]


def journal_report(original, envelope_lines=ENVELOPE_LINES, text_encoding="7bit", number=1):
    if text_encoding == "base64":
        text = base64.encodebytes(envelope_lines.encode()).decode().replace("\n", "\r\n")
    else:
        text = envelope_lines
    return (
        "From: Microsoft Exchange <journal@corp.test>\r\n"
        "To: archive@corp.test\r\n"
        "Subject: Q3 numbers\r\n"
        f"Message-ID: <report{number}@corp.test>\r\n"
        "Date: Mon, 2 Mar 2026 10:00:05 +0000\r\n"
        "X-MS-Journal-Report:\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{OUTER}"\r\n'
        "\r\n"
        f"--{OUTER}\r\n"
        'Content-Type: text/plain; charset="us-ascii"\r\n'
        f"Content-Transfer-Encoding: {text_encoding}\r\n"
        "\r\n"
        f"{text}\r\n"
        f"--{OUTER}\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n").encode() + original + f"\r\n--{OUTER}--\r\n".encode()


class FormatsTestCase(ArchiveTestCase):
    def show(self, pv, message_id):
        return json.loads(pv.archive("show", message_id).stdout)

    def import_counts(self, pv, fmt, path, check=True):
        result = pv.archive("import", "--format", fmt, path, check=check)
        return summary_counts(result.stdout.decode()), result.stdout.decode()

    def assert_round_trip(self, pv, originals):
        """Every original is archived once and `archive get` gives its exact bytes; returns {sha: id}."""
        listed = pv.archive_list()
        by_sha = {digest: message_id for message_id, digest in listed.items()}
        expected = {sha256(m): m for m in originals}
        self.assertEqual(sorted(by_sha), sorted(expected))
        for digest, original in expected.items():
            got = pv.archive("get", by_sha[digest]).stdout
            self.assertEqual(got, original, f"message {by_sha[digest]} differs from its original")
        return by_sha


class MboxImportTest(FormatsTestCase):
    def test_mboxrd_round_trips_every_message_byte_exact(self):
        messages = corpus_messages(40) + hand_made_mbox_messages()
        self.assertTrue(any(has_quoted_from(m) for m in messages))  # exercises the mboxrd rule
        path = self.tmp / "archive.mboxrd"
        offsets = write_mbox(path, messages, quote_mboxrd)
        self.assertTrue(b"\n>>From already quoted\n" in path.read_bytes())
        pv = self.start_postvault(start=False)
        (imported, duplicates, failed), _ = self.import_counts(pv, "mbox", path)
        distinct = len({sha256(m) for m in messages})
        self.assertEqual((imported, duplicates, failed), (distinct, len(messages) - distinct, 0))
        pv.start()  # `archive get` through the server: no store to open per message
        by_sha = self.assert_round_trip(pv, messages)
        # The source names the file and the From_ line's byte offset (what a resumed import skips).
        last = messages[-1]
        record = self.show(pv, by_sha[sha256(last)])
        self.assertEqual(record["sources"][0]["source"],
                         f"{os.path.realpath(path)}|mbox:{path.name}@{offsets[-1]}")
        self.assertNotIn(b"\nDate:", last.split(b"\n\n")[0])
        self.assertEqual(record["date"], FROM_LINE_UNIX)  # no Date: field, so the From_ line's date

    def test_mboxo_round_trips_messages_without_quoted_from_lines(self):
        # mboxo cannot tell an original ">From " from a quoted "From ": leave such messages out.
        messages = [m for m in corpus_messages(40) + hand_made_mbox_messages() if not has_quoted_from(m)]
        self.assertTrue(any(re.search(rb"(?m)^From ", m) for m in messages))  # quoting is exercised
        path = self.tmp / "archive.mbox"
        write_mbox(path, messages, quote_mboxo)
        pv = self.start_postvault(start=False)
        (imported, duplicates, failed), _ = self.import_counts(pv, "mbox", path)
        distinct = len({sha256(m) for m in messages})
        self.assertEqual((imported, duplicates, failed), (distinct, len(messages) - distinct, 0))
        pv.start()
        self.assert_round_trip(pv, messages)


class EmlImportTest(FormatsTestCase):
    def nested_folder(self, name="eml"):
        folder = self.tmp / name
        files = {"top.eml": make_message(1), "a/2.eml": make_message(2), "a/b/3.eml": make_message(3),
                 "c/d/e/4.msg": make_message(4, attachment="QUJD" * 6000), "c/5": make_message(5)}
        for relative, data in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
        (folder / ".hidden.eml").write_bytes(make_message(6))  # dotfiles are not mail (import.h)
        return folder, files

    def test_nested_folder_single_file_and_duplicates_from_a_second_path(self):
        pv = self.start_postvault(start=False)
        folder, files = self.nested_folder()
        (imported, duplicates, failed), _ = self.import_counts(pv, "eml", folder)
        self.assertEqual((imported, duplicates, failed), (len(files), 0, 0))
        by_sha = {digest: message_id for message_id, digest in pv.archive_list().items()}
        self.assertEqual(sorted(by_sha), sorted(sha256(data) for data in files.values()))

        # The same import again is a resume: nothing new, nothing doubled.
        (imported, duplicates, failed), output = self.import_counts(pv, "eml", folder)
        self.assertEqual((imported, duplicates, failed), (0, 0, 0))
        self.assertIn(f"already imported by an earlier run: {len(files)}", output)

        # A copy at a second path: the same bytes, so duplicates, each a second source.
        copy = self.tmp / "copy-of-eml"
        shutil.copytree(folder, copy)
        (imported, duplicates, failed), _ = self.import_counts(pv, "eml", copy)
        self.assertEqual((imported, duplicates, failed), (0, len(files), 0))
        self.assertEqual(len(pv.archive_list()), len(files))
        record = self.show(pv, by_sha[sha256(files["a/b/3.eml"])])
        self.assertEqual([s["source"] for s in record["sources"]],
                         [f"{os.path.realpath(folder)}|eml:a/b/3.eml", f"{os.path.realpath(copy)}|eml:a/b/3.eml"])
        self.assertEqual([s["direction"] for s in record["sources"]], ["import", "import"])

        # A single .eml file.
        single = self.tmp / "single.eml"
        single.write_bytes(make_message(7, body="just one\r\n"))
        (imported, duplicates, failed), _ = self.import_counts(pv, "eml", single)
        self.assertEqual((imported, duplicates, failed), (1, 0, 0))
        by_sha = self.assert_round_trip(pv, list(files.values()) + [single.read_bytes()])
        record = self.show(pv, by_sha[sha256(single.read_bytes())])
        self.assertEqual(record["sources"][0]["source"], f"{os.path.realpath(single)}|eml:single.eml")
        self.assertNotIn("problems", record)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())

    def test_folder_and_file_names_that_are_not_utf8(self):
        # Old archives carry Latin-1 names; the import must not stop on them (JSON cannot hold them).
        folder = pathlib.Path(os.fsdecode(bytes(self.tmp) + b"/Gel\xf6scht"))
        (folder / os.fsdecode(b"Entw\xfcrfe")).mkdir(parents=True)
        data = make_message(50, body="caf\u00e9\r\n")
        (folder / os.fsdecode(b"Entw\xfcrfe/m\xe4il.eml")).write_bytes(data)
        pv = self.start_postvault(start=False)
        result = pv.archive("import", "--format", "eml", folder, check=False)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        self.assertEqual(summary_counts(result.stdout.decode()), (1, 0, 0))
        (message_id, digest), = pv.archive_list().items()
        self.assertEqual(pv.archive("get", message_id).stdout, data)
        source = self.show(pv, message_id)["sources"][0]["source"]
        self.assertTrue(source.endswith("m\ufffdil.eml"), source)
        # The resume key keeps the real bytes: the same import again skips the file.
        (imported, duplicates, failed), output = self.import_counts(pv, "eml", folder)
        self.assertEqual((imported, duplicates, failed), (0, 0, 0))
        self.assertIn("already imported by an earlier run: 1", output)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


class MalformedImportTest(FormatsTestCase):
    def test_malformed_files_are_imported_flagged_and_returned_exactly(self):
        folder = self.tmp / "broken"
        folder.mkdir()
        garbage = bytes(random.Random(7).randrange(256) for _ in range(5000)) + b"\0\0tail\0"
        cases = {
            "empty.eml": (b"", "empty message"),
            "garbage.bin": (garbage, "contains NUL bytes"),
            "no-blank-line.eml": (b"From: a@corp.test\r\nTo: b@partner.test\r\nSubject: header only\r\n",
                                  "no empty line between header and body"),
            "not-a-header.eml": (b"this is not a header line\r\nFrom: a@corp.test\r\n\r\nbody\r\n",
                                 "is not a header field"),
        }
        for name, (data, _) in cases.items():
            (folder / name).write_bytes(data)
        pv = self.start_postvault(start=False)
        (imported, duplicates, failed), output = self.import_counts(pv, "eml", folder)
        self.assertEqual((imported, duplicates, failed), (len(cases), 0, 0))
        self.assertIn(f"malformed, kept as is and flagged: {len(cases)}", output)
        by_sha = self.assert_round_trip(pv, [data for data, _ in cases.values()])
        for name, (data, problem) in cases.items():
            record = self.show(pv, by_sha[sha256(data)])
            self.assertTrue(record.get("problems"), f"{name}: no problems recorded")
            self.assertTrue(any(problem in p for p in record["problems"]), f"{name}: {record['problems']}")
            self.assertEqual(record["size"], len(data))
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


class ExchangeJournalImportTest(FormatsTestCase):
    def test_reports_give_the_original_bytes_with_the_full_envelope(self):
        folder = self.tmp / "journal"
        (folder / "2026" / "03").mkdir(parents=True)
        first = journal_report(ORIGINAL_FILE_ONLY)
        (folder / "2026" / "03" / "report1.eml").write_bytes(first)
        # Exchange 2003 style: "Recipient:" lines, the text part base64, a forwarded recipient.
        older_original = make_message(20, body="kept\r\n")
        second = journal_report(older_original, number=2, text_encoding="base64", envelope_lines=(
            "Sender: <dave@corp.test>\r\nSubject: archive test 20\r\nMessage-Id: <m20@corp.test>\r\n"
            "On-Behalf-Of: boss@corp.test\r\n"
            "Recipient: erin@partner.test\r\nRecipient: fwd@corp.test, Forwarded: frank@corp.test\r\n"))
        (folder / "2026" / "03" / "report2.eml").write_bytes(second)
        not_a_report = make_message(21)
        (folder / "stray.eml").write_bytes(not_a_report)
        self.assertIn(b"\n--==JR_1 is not", first)

        pv = self.start_postvault(start=False)
        (imported, duplicates, failed), _ = self.import_counts(pv, "exchange-journal", folder)
        self.assertEqual((imported, duplicates, failed), (3, 0, 0))
        by_sha = self.assert_round_trip(pv, [ORIGINAL_FILE_ONLY, older_original, not_a_report])

        record = self.show(pv, by_sha[sha256(ORIGINAL_FILE_ONLY)])
        self.assertEqual(record["from"], "alice@corp.test")
        self.assertEqual(record["recipients"], ENVELOPE_RECIPIENTS)
        self.assertEqual(record["size"], len(ORIGINAL_FILE_ONLY))
        self.assertTrue(record["sources"][0]["source"].endswith("|exchange-journal:eml:2026/03/report1.eml"),
                        record["sources"])
        self.assertNotIn("problems", record)

        record = self.show(pv, by_sha[sha256(older_original)])
        self.assertEqual(record["from"], "dave@corp.test")
        self.assertEqual(record["recipients"], ["erin@partner.test", "fwd@corp.test"])

        # Not a report: kept as it is, flagged, never dropped.
        record = self.show(pv, by_sha[sha256(not_a_report)])
        self.assertIn("not an Exchange journal report", record.get("problems", []))

        # A journal mailbox exported as a Maildir.
        maildir = self.tmp / "journal-maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        third_original = make_message(22, body="from the journal mailbox\r\n")
        (maildir / "new" / "1772445600.M1P1.exch").write_bytes(journal_report(third_original, number=3))
        (maildir / "tmp" / "1772445601.M2P2.exch").write_bytes(b"a delivery in progress")
        (imported, duplicates, failed), _ = self.import_counts(pv, "exchange-journal", maildir)
        self.assertEqual((imported, duplicates, failed), (1, 0, 0))
        record = self.show(pv, {d: i for i, d in pv.archive_list().items()}[sha256(third_original)])
        self.assertEqual(record["recipients"], ENVELOPE_RECIPIENTS)
        self.assertTrue(record["sources"][0]["source"].endswith("|exchange-journal:maildir:new/1772445600.M1P1.exch"))


class PstImportTest(FormatsTestCase):
    def test_outlook_pst_imports_every_mail(self):
        if not PST_PATH.exists():
            self.fail(f"{PST_PATH} is missing: run scripts/install-deps.sh --with-tests")
        pv = self.start_postvault(start=False)
        (imported, duplicates, failed), _ = self.import_counts(pv, "pst", PST_PATH)
        # lspst (pst-utils) lists 71 e-mails in this file (as the unit test expects).
        self.assertEqual((imported, duplicates, failed), (71, 0, 0))
        verify = pv.archive("verify").stdout.decode()
        self.assertIn("contents checked: 71", verify)
        self.assertIn("archive intact", verify)
        listed = pv.archive_list()
        self.assertEqual(len(listed), 71)
        ids = sorted(listed)
        self.assertTrue(self.show(pv, ids[0])["sources"][0]["source"].startswith(f"{PST_PATH.resolve()}|pst:"))
        # `archive get` until the known subject turns up (each get also checks the SHA-256).
        for message_id in ids:
            data = pv.archive("get", message_id).stdout
            self.assertEqual(sha256(data), listed[message_id])
            if re.search(rb"(?m)^Subject: West Texas Capacity\r?$", data.split(b"\r\n\r\n", 1)[0]):
                break
        else:
            self.fail("no archived PST message has the subject 'West Texas Capacity'")
        # A second import of the same file is a resume: the PST reader is deterministic.
        (imported, duplicates, failed), output = self.import_counts(pv, "pst", PST_PATH)
        self.assertEqual((imported, duplicates, failed), (0, 0, 0))
        self.assertIn("already imported by an earlier run: 71", output)

    def test_parallel_imports_through_the_server_one_at_a_time(self):
        # The server runs one import at a time (libpst has global state, and imports must not
        # crowd out mail); a second one at the same moment is refused with a clear message.
        if not PST_PATH.exists():
            self.fail(f"{PST_PATH} is missing: run scripts/install-deps.sh --with-tests")
        copies = []
        for name in ("a", "b", "c"):
            copies.append(self.tmp / f"{name}.pst")
            shutil.copyfile(PST_PATH, copies[-1])
        pv = self.start_postvault()
        imports = [subprocess.Popen([BINARY, "archive", "import", "--config", str(pv.config_path), "--format", "pst",
                                     str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for path in copies]
        outputs = [process.communicate(timeout=240) for process in imports]
        self.assertIsNone(pv.process.poll(), "the server died during parallel imports")
        finished = []
        for process, (out, err) in zip(imports, outputs):
            if process.returncode == 0:
                finished.append(summary_counts(out.decode()))
            else:
                self.assertIn(b"another import is running", err, (out + err).decode(errors="replace"))
        self.assertGreaterEqual(len(finished), 1)
        self.assertEqual(sum(c[0] for c in finished), 71, finished)  # each message once, whichever came first
        self.assertEqual(sum(c[1] for c in finished), 71 * (len(finished) - 1), finished)
        self.assertEqual(len(pv.archive_list()), 71)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


class JournalListenerTest(FormatsTestCase):
    def start_with_journal(self, smtp=None):
        self.sink = self.start_sink()
        self.journal_port = free_port()
        extra = f'[archive]\njournal_listen = ["127.0.0.1:{self.journal_port}"]\n'
        pv = self.start_postvault(smtp=smtp, delivery={"relayhost": f"127.0.0.1:{self.sink.port}"}, extra=extra)
        return pv

    def test_journal_listener_archives_unwraps_and_never_relays(self):
        pv = self.start_with_journal()
        wait_for_port(self.journal_port, process=pv.process)
        plain = make_message(30, body="a BCC journal copy\r\n")
        report = journal_report(ORIGINAL_SMTP_SAFE)
        # An original with no body (legal, but flagged): still unwrapped, not the report kept whole.
        header_only = b"From: carol@corp.test\r\nTo: dan@partner.test\r\nSubject: header only\r\n"
        flagged_report = journal_report(header_only, number=2, envelope_lines=(
            "Sender: carol@corp.test\r\nSubject: header only\r\nTo: dan@partner.test\r\nBcc: eve@corp.test\r\n"))
        with smtplib.SMTP("127.0.0.1", self.journal_port, timeout=30) as client:
            client.sendmail("copy@corp.test", ["journal@corp.test", "auditor@partner.test"], plain)
            client.sendmail("exchange@corp.test", ["journal@corp.test"], report)
            client.sendmail("exchange@corp.test", ["journal@corp.test"], flagged_report)
            # The same original journaled again (another report around it): one message, two sources.
            client.sendmail("exchange@corp.test", ["journal@corp.test"], journal_report(
                ORIGINAL_SMTP_SAFE, number=3, envelope_lines="Sender: alice@corp.test\r\nTo: late@partner.test\r\n"))
        listed = wait_until(lambda: len(pv.archive_list()) >= 3 and pv.archive_list(), message="3 archived")
        self.assertEqual(len(listed), 3)
        records = [self.show(pv, message_id) for message_id in listed]
        self.assertEqual([r["direction"] for r in records], ["journal"] * 3)
        self.assertEqual(sorted(r["from"] for r in records), ["alice@corp.test", "carol@corp.test", "copy@corp.test"])
        unwrapped = next(r for r in records if r["from"] == "alice@corp.test")
        copy = next(r for r in records if r["from"] == "copy@corp.test")
        flagged = next(r for r in records if r["from"] == "carol@corp.test")
        self.assertEqual(flagged["recipients"], ["dan@partner.test", "eve@corp.test"])
        self.assertEqual(pv.archive("get", flagged["id"]).stdout, header_only)
        self.assertIn("no empty line between header and body", flagged.get("problems", []))

        # The report is unwrapped: the original's exact bytes, the report's envelope.
        self.assertEqual(unwrapped["recipients"], ENVELOPE_RECIPIENTS)
        self.assertEqual(unwrapped["sha256"], sha256(ORIGINAL_SMTP_SAFE))
        self.assertEqual(pv.archive("get", unwrapped["id"]).stdout, ORIGINAL_SMTP_SAFE)
        self.assertNotIn("problems", unwrapped)
        self.assertEqual(unwrapped["client"]["ip"], "127.0.0.1")
        def sources():
            return self.show(pv, unwrapped["id"])["sources"]
        wait_until(lambda: len(sources()) == 2, message="the second report recorded as a source")
        self.assertEqual([(s["direction"], s.get("from"), s.get("recipients")) for s in sources()],
                         [("journal", None, None), ("journal", "alice@corp.test", ["late@partner.test"])])
        # Anything else is archived as received (with the listener's Received: line) and its envelope.
        self.assertEqual(copy["recipients"], ["journal@corp.test", "auditor@partner.test"])
        archived = pv.archive("get", copy["id"]).stdout
        self.assertTrue(archived.startswith(b"Received: "), archived[:200])
        self.assertTrue(archived.endswith(plain), archived[-200:])
        self.assertNotIn("problems", copy)

        # The listener never relays: a message through the relay port reaches the sink, and only it.
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            client.sendmail("sender31@corp.test", ["someone31@partner.test"], make_message(31))
        self.sink.wait_for(1)
        time.sleep(1.0)
        arrived = self.sink.messages()
        self.assertEqual([meta["rcpt_tos"] for meta, _ in arrived], [["someone31@partner.test"]])
        wait_until(lambda: pv.queue_json() == [], message="an empty queue")
        self.assertEqual(len(pv.archive_list()), 4)

    def test_journal_listener_refuses_untrusted_clients(self):
        pv = self.start_with_journal(smtp={"trusted_networks": ["10.0.0.0/8"]})
        wait_for_port(self.journal_port, process=pv.process)
        client = SmtpClient(self.journal_port)
        self.assertReply(client.read_reply(), 220)
        self.assertReply(client.command("EHLO outside.example"), 250)
        self.assertReply(client.command("MAIL FROM:<spoof@outside.example>"), 250)
        self.assertReply(client.command("RCPT TO:<journal@corp.test>"), 554)
        self.assertReply(client.command("RCPT TO:<postmaster@corp.test>"), 554)
        self.assertEqual(client.command("DATA")[0] // 100, 5)
        client.command("QUIT")
        self.assertEqual(pv.archive_list(), {})


class ImportWhileServingTest(FormatsTestCase):
    def test_import_goes_through_the_running_server(self):
        pv = self.start_postvault()
        folder = self.eml_folder(8, attachment_every=4)
        result = pv.archive("import", "--format", "eml", folder)
        self.assertIn(b"importing through it", result.stderr)
        self.assertEqual(summary_counts(result.stdout.decode()), (8, 0, 0))
        self.assertIsNone(pv.process.poll())
        originals = [p.read_bytes() for p in sorted(folder.iterdir())]
        listed = pv.archive_list()  # a secondary handle next to the running writer
        self.assertEqual(sorted(listed.values()), sorted(sha256(m) for m in originals))
        self.assert_round_trip(pv, originals)  # `archive get` through the control socket
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())
        self.assertEqual(pv.stop(), 0)
        chain = self.ldb(pv, "--column_family=chain", "scan")
        self.assertEqual(chain.count(" ingest "), 8, chain)
        self.assertRegex(chain, r" import ")


if __name__ == "__main__":
    unittest.main()
