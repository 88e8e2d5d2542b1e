"""The policy engine through the real binary: `policy explain` (text and --json) on messages built
here, `config check` and a running server's reload refusing a bad rule with line and column while
the running policy stays in force, and `policy scan` over a small collection.
"""

import json
import smtplib
import subprocess

from harness import BINARY, PostvaultTestCase, wait_until

POLICY = r'''
[policy]
adhoc_subject_tag = "[secure]"
adhoc_encrypt = ["pgp", "smime", "bounce"]

[[policy.rules]]
name = "cards"
when = { detectors = ["credit_card"], recipient_domain = ["*", "!corp.example"] }
then = { encrypt = ["pgp", "smime", "plain-tls"], tag = ["pci"], stop = true }

[[policy.rules]]
name = "ssn"
when = { detectors = ["us_ssn"] }
then = { encrypt = ["smime", "hold"], tag = ["pii"] }

[[policy.rules]]
name = "iban"
when = { detectors = ["iban"] }
then = { tag = ["bank"] }

[[policy.rules]]
name = "exe"
when = { attachment_name = [".exe"] }
then = { reject = "No executables, please" }
'''


def message(subject, body, attachment=None):
    head = (f"From: Alice <alice@corp.example>\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n"
            "Message-ID: <p@corp.example>\r\nDate: Tue, 03 Mar 2020 09:00:00 +0000\r\n")
    if not attachment:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
    name, text = attachment
    return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n--b\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
            + text + "\r\n--b--\r\n").encode()


class PolicyTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.pv = self.start_postvault(start=False)
        self.good = self.pv.config_path.read_text() + POLICY
        self.pv.config_path.write_text(self.good)

    def explain(self, data, *recipients, json_output=True):
        path = self.tmp / "m.eml"
        path.write_bytes(data)
        args = ["policy", "explain", "--config", str(self.pv.config_path), "--from", "alice@corp.example"]
        for recipient in recipients:
            args += ["--to", recipient]
        if json_output:
            args.append("--json")
        result = self.pv.cli(*args, str(path))
        return json.loads(result.stdout) if json_output else result.stdout

    def test_explain_per_recipient_with_evidence(self):
        verdict = self.explain(message("invoice", "see attached", ("invoice.txt", "Card 4111 1111 1111 1111\r\n")),
                               "bob@partner.example", "carol@corp.example")
        bob, carol = verdict["recipients"]
        self.assertEqual(bob["address"], "bob@partner.example")
        self.assertEqual(bob["rules"], ["cards"])
        self.assertEqual(bob["actions"]["encrypt"], ["pgp", "smime"])
        self.assertEqual(bob["actions"]["fallback"], "plain-tls")
        self.assertEqual(bob["actions"]["tag"], ["pci"])
        evidence = " | ".join(e["text"] for e in bob["evidence"])
        self.assertIn("4111…1111", evidence)
        self.assertIn("Luhn valid", evidence)
        self.assertIn("attachment invoice.txt", evidence)
        self.assertNotIn("4111 1111 1111 1111", evidence, "evidence is masked")
        self.assertEqual(carol["rules"], [], "an internal recipient is excluded from the card rule")

        # Detector false positives do not fire; true ones do.
        self.assertEqual(self.explain(message("x", "Card 4111 1111 1111 1112"), "bob@partner.example")
                         ["recipients"][0]["rules"], [])
        self.assertEqual(self.explain(message("x", "SSN 078-05-1120 and 666-12-3456"), "bob@partner.example")
                         ["recipients"][0]["rules"], [])
        ssn = self.explain(message("x", "employee SSN 536-22-1234"), "bob@partner.example")["recipients"][0]
        self.assertEqual(ssn["rules"], ["ssn"])
        self.assertEqual(ssn["actions"]["fallback"], "hold")
        self.assertEqual(self.explain(message("x", "pay to DE89 3704 0044 0532 0130 00"), "bob@partner.example")
                         ["recipients"][0]["rules"], ["iban"])
        self.assertEqual(self.explain(message("x", "pay to DE88 3704 0044 0532 0130 00"), "bob@partner.example")
                         ["recipients"][0]["rules"], [])

        # The ad-hoc subject tag, and a reject text.
        tagged = self.explain(message("[SECURE] salaries", "numbers"), "bob@partner.example")
        self.assertTrue(tagged["strip_subject_tag"])
        self.assertEqual(tagged["recipients"][0]["rules"], ["adhoc"])
        self.assertEqual(tagged["recipients"][0]["actions"]["fallback"], "bounce")
        exe = self.explain(message("tool", "here", ("setup.exe", "MZ")), "bob@partner.example")["recipients"][0]
        self.assertEqual(exe["actions"]["reject"], "No executables, please")
        text = self.explain(message("tool", "here", ("setup.exe", "MZ")), "bob@partner.example", json_output=False)
        self.assertIn("reject", text)
        self.assertIn("attachment setup.exe matches '*.exe'", text)

    def test_a_bad_rule_is_refused_with_line_and_column_and_the_running_policy_stays(self):
        self.pv.start()
        bad = self.good.replace('when = { detectors = ["us_ssn"] }', 'when = { subject = "(unclosed" }')
        self.pv.config_path.write_text(bad)
        line = bad.splitlines().index('when = { subject = "(unclosed" }') + 1
        check = self.pv.cli("config", "check", "--config", str(self.pv.config_path), check=False)
        self.assertEqual(check.returncode, 1)
        self.assertIn(f"postvault.toml:{line}:", check.stderr)
        self.assertIn("bad pattern /(unclosed/", check.stderr)
        reload = self.pv.cli("reload", "--config", str(self.pv.config_path), check=False)
        self.assertEqual(reload.returncode, 1, reload.stdout + reload.stderr)
        self.assertIsNone(self.pv.process.poll(), "the server keeps running")
        self.assertIn("reload refused", self.pv.log_text())
        unknown = self.good.replace("tag = [\"bank\"]", "tag = [\"bank\"], colour = \"red\"")
        self.pv.config_path.write_text(unknown)
        check = self.pv.cli("config", "check", "--config", str(self.pv.config_path), check=False)
        self.assertIn("unknown action 'colour'", check.stderr)
        self.pv.config_path.write_text(self.good)
        self.pv.cli("reload", "--config", str(self.pv.config_path))
        check = self.pv.cli("config", "check", "--config", str(self.pv.config_path))
        self.assertIn("4 policy rules", check.stdout)

    def test_a_server_does_not_start_with_a_bad_policy(self):
        self.pv.config_path.write_text(self.good.replace('then = { tag = ["bank"] }', 'then = { encrypt = ["pgp"] }'))
        result = subprocess.run([BINARY, "serve", "--config", str(self.pv.config_path)], capture_output=True,
                                text=True, timeout=30)
        self.assertEqual(result.returncode, 1)
        self.assertIn("must end in a fallback", result.stderr)

    def test_scan_counts_rules_over_a_collection(self):
        folder = self.tmp / "mail"
        folder.mkdir()
        (folder / "1.eml").write_bytes(message("a", "Card 4111 1111 1111 1111"))
        (folder / "2.eml").write_bytes(message("b", "employee SSN 536-22-1234"))
        (folder / "3.eml").write_bytes(message("c", "nothing here"))
        result = self.pv.cli("policy", "scan", "--config", str(self.pv.config_path), "--format", "eml", "--json",
                             "--to", "bob@partner.example", str(folder))
        scan = json.loads(result.stdout)
        self.assertEqual(scan["messages"], 3)
        self.assertEqual(scan["fired"], {"cards": 1, "ssn": 1})
        self.assertEqual(scan["rules"], 4)


class PolicyRelayTest(PostvaultTestCase):
    """The relay applies what it can today: a rule's reject text, and no plaintext where the policy
    asks for encryption (no method exists yet: refused 5xx for fallback bounce, 4xx otherwise);
    the rules that fired and their tags go into the archive record and the search index."""

    def send(self, data, to="bob@partner.example"):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("alice@corp.example", [to], data)

    def test_reject_encrypt_and_tags(self):
        self.sink = self.start_sink()
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink.port}"}, start=False)
        self.pv.config_path.write_text(self.pv.config_path.read_text() + POLICY)
        self.pv.start()

        with self.assertRaises(smtplib.SMTPDataError) as refused:
            self.send(message("tool", "here", ("setup.exe", "MZ")))
        self.assertEqual(refused.exception.smtp_code, 554)
        self.assertIn(b"No executables, please", refused.exception.smtp_error)

        with self.assertRaises(smtplib.SMTPDataError) as adhoc:
            self.send(message("[secure] salaries", "numbers"))
        self.assertEqual(adhoc.exception.smtp_code, 554)
        self.assertIn(b"requires encryption", adhoc.exception.smtp_error)

        with self.assertRaises(smtplib.SMTPDataError) as card:  # fallback plain-tls: not available yet, 4xx
            self.send(message("invoice", "Card 4111 1111 1111 1111"))
        self.assertEqual(card.exception.smtp_code, 451)

        self.send(message("payment", "pay to DE89 3704 0044 0532 0130 00"))
        self.send(message("lunch", "nothing to see"))
        delivered = self.sink.wait_for(2)
        subjects = sorted(data.split(b"Subject: ")[1].split(b"\r\n")[0] for _, data in delivered)
        self.assertEqual(subjects, [b"lunch", b"payment"], "nothing the policy refused reached the next hop")

        records = [json.loads(self.pv.archive("show", i).stdout) for i in self.pv.archive_list()]
        tagged = [r for r in records if r.get("tags")]
        self.assertEqual(len(tagged), 1)
        self.assertEqual(tagged[0]["policy"], ["iban"])
        self.assertEqual(tagged[0]["tags"], ["bank"])
        self.assertEqual(tagged[0]["decisions"][0]["rules"], ["iban"])
        self.assertIn("DE89…3000", tagged[0]["decisions"][0]["evidence"][0]["text"])

        def count(query):
            result = self.pv.cli("search", "--config", str(self.pv.config_path), "--count", query)
            return int(result.stdout.split()[-1])
        wait_until(lambda: count("tag:bank") == 1, timeout=30, message="the tag in the index")
        self.assertEqual(count("policy:iban"), 1)
        self.assertEqual(count("*"), 2)
