"""The relay end to end: real clients (swaks, smtplib) -> postvault -> capture sink."""

import email
import smtplib
import ssl
import subprocess
import unittest

from harness import PostvaultTestCase, SmtpClient, wait_until

MESSAGE = (b"From: Alice <alice@example.com>\r\n"
           b"To: Bob <bob@example.org>\r\n"
           b"Subject: quarterly figures\r\n"
           b"Message-ID: <relay-test-1@example.com>\r\n"
           b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n"
           b"\r\n"
           b"Caf\xc3\xa9 figures attached.\r\n"
           b"..a line that starts with a dot\r\n")


def strip_received(data):
    """Splits off the Received: header postvault prepends; returns (header, rest)."""
    assert data.startswith(b"Received: "), data[:200]
    end = 0
    while True:
        end = data.index(b"\r\n", end) + 2
        if data[end:end + 1] not in (b" ", b"\t"):
            return data[:end], data[end:]


class RelayTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink.port}"})

    def test_raw_message_is_relayed_byte_exact_with_one_received_header(self):
        client = SmtpClient(self.pv.port)
        self.assertReply(client.read_reply(), 220, "postvault.test")
        code, text = client.command("EHLO client.example.com")
        self.assertEqual(code, 250)
        for extension in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS",
                          "CHUNKING"):
            self.assertIn(extension, text)
        self.assertReply(client.command("MAIL FROM:<alice@example.com> BODY=8BITMIME"), 250)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(MESSAGE + b".\r\n")
        code, text = client.read_reply()
        self.assertEqual(code, 250, text)
        queue_id = text.split()[-1]
        self.assertReply(client.command("QUIT"), 221)

        meta, data = self.sink.wait_for(1)[0]
        self.assertEqual(meta["mail_from"], "alice@example.com")
        self.assertEqual(meta["rcpt_tos"], ["bob@example.org"])
        received, rest = strip_received(data)
        # The body arrives dot-unstuffed exactly as sent, nothing else changed.
        expected = MESSAGE.replace(b"\r\n..a line", b"\r\n.a line")
        self.assertEqual(rest, expected)
        self.assertIn(queue_id.encode(), received)
        self.assertIn(b"by postvault.test", received)
        self.assertIn(b"client.example.com", received)
        self.assertIn(b"127.0.0.1", received)

    def test_swaks_with_pipelining(self):
        result = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{self.pv.port}", "--from", "carol@example.com",
             "--to", "dave@example.net,erin@example.net", "--pipeline", "--header", "Subject: via swaks",
             "--body", "hello from swaks"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("250 2.0.0", result.stdout)
        meta, data = self.sink.wait_for(1)[0]
        self.assertEqual(sorted(meta["rcpt_tos"]), ["dave@example.net", "erin@example.net"])
        self.assertIn(b"Subject: via swaks", data)
        # Two recipients: the Received: header must not name either (BCC privacy).
        received, _ = strip_received(data)
        self.assertNotIn(b"for <", received)

    def test_smtplib_bcc_recipients_are_delivered(self):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            refused = client.sendmail("alice@example.com", ["to@example.org", "hidden@example.net"], MESSAGE)
            self.assertEqual(refused, {})
        meta, data = self.sink.wait_for(1)[0]
        self.assertEqual(sorted(meta["rcpt_tos"]), ["hidden@example.net", "to@example.org"])
        self.assertNotIn(b"hidden@example.net", data)

    def test_starttls_received_header_records_version_and_cipher(self):
        context = ssl.create_default_context(cafile=str(self.pv.cert))
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.ehlo("tls.example.com")
            self.assertTrue(client.has_extn("starttls"))
            client.starttls(context=context)
            client.ehlo("tls.example.com")
            self.assertFalse(client.has_extn("starttls"))
            client.sendmail("alice@example.com", ["bob@example.org"], MESSAGE)
        meta, data = self.sink.wait_for(1)[0]
        received, _ = strip_received(data)
        self.assertIn(b"ESMTPS", received)
        self.assertRegex(received.decode(), r"using TLSv1\.[23] with cipher \S+")

    def test_tls_below_1_2_is_refused(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.ehlo("old.example.com")
            with self.assertRaises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
                client.starttls(context=context)

    def test_smuggling_sequences_never_split_a_message(self):
        client = SmtpClient(self.pv.port)
        client.read_reply()
        client.command("EHLO smuggler.example.com")
        for separator in (b"\n.\n", b"\n.\r\n", b"\r.\r\n"):
            self.assertReply(client.command("MAIL FROM:<alice@example.com>"), 250)
            self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
            self.assertReply(client.command("DATA"), 354)
            client.send(b"Subject: smuggle\r\n\r\nfirst part" + separator +
                        b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                        b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n")
            code, text = client.read_reply()
            self.assertEqual(code, 550, text)
            self.assertIn("5.5.2", text)
        # The session is still usable and nothing was relayed.
        self.assertReply(client.command("NOOP"), 250)
        self.assertReply(client.command("QUIT"), 221)
        self.assertEqual(self.pv.queue_json(), [])
        self.assertEqual(self.sink.messages(), [])

    def send_utf8(self):
        client = SmtpClient(self.pv.port)
        client.read_reply()
        client.command("EHLO utf8.example.com")
        code, _ = client.command("MAIL FROM:<jos\u00e9@example.com>")
        self.assertEqual(code // 100, 5)
        self.assertReply(client.command("MAIL FROM:<jos\u00e9@example.com> SMTPUTF8"), 250)
        self.assertReply(client.command("RCPT TO:<b\u00fccher@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send("Subject: =?utf-8?q?b=C3=BCcher?=\r\n\r\nhallo\r\n.\r\n".encode())
        code, text = client.read_reply()
        self.assertEqual(code, 250, text)
        return text.split()[-1]

    def test_utf8_addresses_need_smtputf8(self):
        sink = self.start_sink("utf8-sink", smtputf8=True)
        self.pv.write_config(delivery={"relayhost": f"127.0.0.1:{sink.port}"})
        self.pv.cli("reload", "--config", str(self.pv.config_path))
        self.send_utf8()
        meta, _ = sink.wait_for(1)[0]
        self.assertEqual(meta["rcpt_tos"], ["b\u00fccher@example.org"])

    def test_utf8_mail_is_never_downgraded_for_a_hop_without_smtputf8(self):
        queue_id = self.send_utf8()
        wait_until(lambda: f"qid={queue_id}" in self.pv.log_text() and "5.6.7" in self.pv.log_text(),
                   message="bounce with 5.6.7")
        self.assertFalse(any(meta["mail_from"] == "jos\u00e9@example.com" for meta, _ in self.sink.messages()))


class RelayControlTest(PostvaultTestCase):
    """Never an open relay: only trusted networks or authenticated users relay."""

    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        password_hash = self.hash_password("s3cret-pass")
        self.pv = self.start_postvault(
            smtp={"trusted_networks": ["127.0.0.1/32"], "local_domains": ["corp.example"],
                  "users": [{"name": "alice", "password_hash": password_hash}]},
            delivery={"relayhost": f"127.0.0.1:{self.sink.port}",
                      "inbound_relayhost": f"127.0.0.1:{self.sink.port}"})

    def hash_password(self, password):
        from harness import BINARY
        result = subprocess.run([BINARY, "hash-password"], input=password + "\n", capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("$argon2id$"))
        return result.stdout.strip()

    def test_untrusted_client_cannot_relay_but_reaches_local_domains(self):
        client = SmtpClient(self.pv.port, source="127.0.0.2")
        client.read_reply()
        code, text = client.command("EHLO outsider.example.net")
        self.assertNotIn("AUTH", text)  # never offered without TLS
        self.assertReply(client.command("MAIL FROM:<spammer@example.net>"), 250)
        self.assertReply(client.command("RCPT TO:<victim@example.org>"), 554, "5.7.1")
        self.assertReply(client.command("RCPT TO:<Staff@CORP.example>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(b"Subject: inbound\r\n\r\nhello\r\n.\r\n")
        self.assertReply(client.read_reply(), 250)
        meta, _ = self.sink.wait_for(1)[0]
        self.assertEqual(meta["rcpt_tos"], ["Staff@CORP.example"])

    def test_authenticated_submission_after_starttls(self):
        base = ["swaks", "--server", f"127.0.0.1:{self.pv.port}", "--local-interface", "127.0.0.2",
                "--from", "alice@corp.example", "--to", "partner@example.org", "--tls",
                "--auth", "PLAIN", "--auth-user", "alice"]
        wrong = subprocess.run(base + ["--auth-password", "wrong"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn("535", wrong.stdout)
        right = subprocess.run(base + ["--auth-password", "s3cret-pass"], capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(right.returncode, 0, right.stdout + right.stderr)
        meta, data = self.sink.wait_for(1)[0]
        self.assertEqual(meta["rcpt_tos"], ["partner@example.org"])
        self.assertIn(b"ESMTPSA", data)

    def test_auth_login_also_works(self):
        result = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{self.pv.port}", "--local-interface", "127.0.0.2",
             "--from", "alice@corp.example", "--to", "partner@example.org", "--tls", "--auth", "LOGIN",
             "--auth-user", "alice", "--auth-password", "s3cret-pass"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.sink.wait_for(1)


if __name__ == "__main__":
    unittest.main()
