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


RELAY_POLICY = r"""
[policy]
adhoc_subject_tag = "[secure]"
adhoc_encrypt = ["pgp", "smime", "plain-tls"]

[[policy.rules]]
name = "competitors"
when = { recipient_domain = ["competitor.example"] }
then = { reject = "Mail to competitors is not allowed" }

[[policy.rules]]
name = "exe"
when = { attachment_name = [".exe"] }
then = { reject = "No executables, please" }

[[policy.rules]]
name = "ssn-hold"
when = { detectors = ["us_ssn"] }
then = { encrypt = ["pgp", "hold"], notify = true, stop = true }

[[policy.rules]]
name = "cards"
when = { detectors = ["credit_card"], recipient_domain = ["*", "!corp.example"] }
then = { encrypt = ["pgp", "smime", "bounce"], tag = ["pci"] }

[[policy.rules]]
name = "review"
when = { subject = "merger" }
then = { quarantine = true, notify = true }

[[policy.rules]]
name = "bank"
when = { recipient_domain = ["bank.example"] }
then = { require_tls = true }

[[policy.rules]]
name = "iban"
when = { detectors = ["iban"] }
then = { tag = ["bank"] }
"""


def subject_of(data):
    import email
    import email.header
    import email.policy
    return str(email.message_from_bytes(data, policy=email.policy.default)["Subject"])


class PolicyRelayTest(PostvaultTestCase):
    """The relay applies the policy per recipient: a message is split into recipient groups, each
    delivered as its decision says. No encryption method exists yet on this server (OpenPGP comes
    with issue 7), so every `encrypt` takes its fallback: plain-tls (sent as received but only over
    a verified TLS connection), hold (kept in the queue for an administrator) or bounce (a DSN tells
    the sender why) — never plaintext. The next hop is a TLS sink whose certificate the relay
    verifies (ca_file), with opportunistic TLS for everything else."""

    def setUp(self):
        super().setUp()
        cert, key = self.tmp / "localhost.crt", self.tmp / "localhost.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-days", "2", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        self.sink = self.start_sink(tls_cert=cert, tls_key=key)
        self.pv = self.start_postvault(delivery={"relayhost": f"localhost:{self.sink.port}", "tls": "may",
                                                 "ca_file": str(cert)}, start=False)
        self.pv.config_path.write_text(self.pv.config_path.read_text() + RELAY_POLICY)
        self.pv.start()

    def send(self, data, to=("bob@partner.example",)):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("alice@corp.example", list(to), data)

    def at_sink(self, predicate, message):
        return wait_until(lambda: [m for m in self.sink.messages() if predicate(*m)], timeout=30, message=message)

    def queue_states(self):
        return {r["address"]: r["state"] for m in self.pv.queue_json() for r in m["recipients"]}

    def test_reject_refuses_the_whole_message(self):
        with self.assertRaises(smtplib.SMTPDataError) as refused:
            self.send(message("tool", "here", ("setup.exe", "MZ")))
        self.assertEqual(refused.exception.smtp_code, 554)
        self.assertIn(b"No executables, please", refused.exception.smtp_error)
        self.assertEqual(self.pv.queue_json(), [])

    def test_an_address_rule_refuses_its_recipient_at_rcpt_and_the_others_still_go(self):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            refused = client.sendmail("alice@corp.example", ["Bob@Competitor.Example", "carol@corp.example"],
                                      message("plans", "see you"))
        self.assertEqual(list(refused), ["Bob@Competitor.Example"])
        code, text = refused["Bob@Competitor.Example"]
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1", text)
        self.assertIn(b"Mail to competitors is not allowed", text)
        carol = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["carol@corp.example"], "carol's copy")[0]
        self.assertIn(b"see you", carol[1])
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            self.send(message("plans", "again"), to=["eve@competitor.example"])
        self.assertIn("refused <eve@competitor.example> from <alice@corp.example> at RCPT: rule competitors",
                      self.pv.log_text())

    def test_recipients_split_plain_for_one_and_bounce_with_reason_for_the_other(self):
        self.send(message("invoice", "Card 4111 1111 1111 1111"), to=["bob@partner.example", "carol@corp.example"])
        carol = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["carol@corp.example"], "carol's copy")[0]
        self.assertIn(b"Card 4111 1111 1111 1111", carol[1])
        dsn = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["alice@corp.example"], "the DSN")[0][1]
        self.assertIn(b"Status: 5.7.1", dsn)
        self.assertIn(b"policy rule cards requires encryption (pgp, smime)", dsn)
        self.assertNotIn(b"4111 1111 1111 1111", dsn, "the DSN quotes headers, not the body")
        for meta, data in self.sink.messages():
            self.assertNotIn("bob@partner.example", meta["rcpt_tos"], "never plaintext when the policy said encrypt")
        wait_until(lambda: self.pv.queue_json() == [], message="the queue to empty")
        records = [json.loads(self.pv.archive("show", i).stdout) for i in self.pv.archive_list()]
        record = next(r for r in records if r.get("policy"))
        self.assertEqual(record["policy"], ["cards"])
        self.assertEqual(record["tags"], ["pci"])

    def test_subject_tag_removed_on_delivery_over_verified_tls(self):
        self.send(message("[secure] salaries", "the numbers"))
        encoded = message("=?utf-8?q?=5BSECURE=5D_Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "und Zahlen")
        self.send(encoded.replace(b"bob@partner.example", b"dora@partner.example"), to=["dora@partner.example"])
        delivered = self.sink.wait_for(2)
        subjects = sorted(subject_of(data) for _, data in delivered)
        self.assertEqual(subjects, ["Grüße aus Köln", "salaries"])
        for meta, data in delivered:
            self.assertTrue(meta.get("tls_version", "").startswith("TLSv1."), "plain-tls means TLS")
            self.assertNotIn(b"[secure]", data.lower())
        # The archive keeps the message as it was received, and how each recipient got it.
        ids = self.pv.archive_list()
        self.assertEqual(sorted(subject_of(self.pv.archive("get", i).stdout) for i in ids),
                         ["[SECURE] Grüße aus Köln", "[secure] salaries"])

        def methods():
            records = [json.loads(self.pv.archive("show", i).stdout) for i in ids]
            return [o["method"] for r in records for o in r.get("outcomes", [])]
        wait_until(lambda: methods() == ["plain-tls", "plain-tls"], message="the method in the archive")

    def test_hold_fallback_and_notify_then_release_holds_again(self):
        self.send(message("staff", "employee SSN 536-22-1234"))
        wait_until(lambda: self.queue_states().get("bob@partner.example") == "held", message="held")
        notices = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["alice@corp.example"] and
                               b"held:" in data, "the hold notice")
        text = notices[0][1].decode()
        self.assertIn("Policy notice: staff", text)
        self.assertIn("policy rule ssn-hold requires encryption (pgp)", text)
        self.assertNotIn("536-22-1234", text)
        queue_id = self.pv.queue_json()[0]["id"]
        shown = self.pv.queue("show", queue_id).stdout
        self.assertIn("held", shown)
        self.assertIn("policy: rule ssn-hold encrypt=pgp,hold notify", shown)
        released = self.pv.queue("release", queue_id)
        self.assertIn("1 recipient(s) released", released.stdout)
        wait_until(lambda: "released by the administrator" in self.pv.log_text() and
                   self.queue_states().get("bob@partner.example") == "held", message="held again: still no key")
        self.assertFalse([m for m in self.sink.messages() if "bob@partner.example" in m[0]["rcpt_tos"]])
        self.assertEqual(self.pv.queue("release", "NOSUCHID", check=False).returncode, 1)

    def test_quarantine_waits_for_release(self):
        self.send(message("merger plans", "let us talk"))
        wait_until(lambda: self.queue_states().get("bob@partner.example") == "held", message="quarantined")
        notice = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["alice@corp.example"], "the notice")[0][1]
        self.assertIn(b"held for review by an administrator", notice)
        self.assertIn(b"(policy: review)", notice)
        self.assertFalse([m for m in self.sink.messages() if "bob@partner.example" in m[0]["rcpt_tos"]])
        self.pv.queue("release", self.pv.queue_json()[0]["id"])
        delivered = self.at_sink(lambda meta, data: meta["rcpt_tos"] == ["bob@partner.example"], "release")
        self.assertEqual(subject_of(delivered[0][1]), "merger plans")

    def test_tags_are_searchable(self):
        self.send(message("payment", "pay to DE89 3704 0044 0532 0130 00"))
        self.send(message("lunch", "nothing to see"))
        self.sink.wait_for(2)
        records = [json.loads(self.pv.archive("show", i).stdout) for i in self.pv.archive_list()]
        tagged = [r for r in records if r.get("tags")]
        self.assertEqual(len(tagged), 1)
        self.assertEqual(tagged[0]["policy"], ["iban"])
        self.assertEqual(tagged[0]["decisions"][0]["rules"], ["iban"])
        self.assertIn("DE89…3000", tagged[0]["decisions"][0]["evidence"][0]["text"])

        def count(query):
            result = self.pv.cli("search", "--config", str(self.pv.config_path), "--count", query)
            return int(result.stdout.split()[-1])
        wait_until(lambda: count("tag:bank") == 1, timeout=30, message="the tag in the index")
        self.assertEqual(count("policy:iban"), 1)
        self.assertEqual(count("*"), 2)


class RequireTlsTest(PostvaultTestCase):
    def test_require_tls_defers_when_the_next_hop_has_no_tls_and_others_still_go(self):
        sink = self.start_sink()  # no STARTTLS
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}", "tls": "may"}, start=False)
        pv.config_path.write_text(pv.config_path.read_text() + RELAY_POLICY)
        pv.start()
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            client.sendmail("alice@corp.example", ["ann@bank.example", "bob@partner.example"],
                            message("statement", "see you"))
        meta, _ = sink.wait_for(1)[0]
        self.assertEqual(meta["rcpt_tos"], ["bob@partner.example"])

        def deferred():
            recipients = {r["address"]: r for m in pv.queue_json() for r in m["recipients"]}
            ann = recipients.get("ann@bank.example")
            return ann if ann and ann["state"] == "deferred" else None
        ann = wait_until(deferred, message="ann deferred")
        self.assertIn("TLS", ann["last_reply"])
        self.assertEqual(len(sink.messages()), 1)
