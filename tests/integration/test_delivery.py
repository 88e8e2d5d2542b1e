"""Delivery to the next hop: per-recipient outcomes, DSNs, retries, TLS policy."""

import email
import email.policy
import subprocess
import unittest

from harness import PostvaultTestCase, SmtpClient, wait_until

BODY = b"Subject: delivery test\r\nMessage-ID: <delivery-test@example.com>\r\n\r\nhello\r\n"


def send(port, sender, recipients, body=BODY):
    client = SmtpClient(port)
    client.read_reply()
    client.command("EHLO sender.example.com")
    code, text = client.command(f"MAIL FROM:<{sender}>")
    assert code == 250, text
    for recipient in recipients:
        code, text = client.command(f"RCPT TO:<{recipient}>")
        assert code == 250, text
    code, text = client.command("DATA")
    assert code == 354, text
    client.send(body + b".\r\n")
    code, text = client.read_reply()
    assert code == 250, text
    client.command("QUIT")
    return text.split()[-1]


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.compat32)


class PartialAcceptanceTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink.port}",
                                                 "retry_min": "30s", "retry_max": "60s"})

    def test_each_recipient_gets_its_own_outcome_and_the_sender_a_dsn(self):
        queue_id = send(self.pv.port, "sender@example.com",
                        ["ok@example.org", "reject-me@example.org", "defer-me@example.org"])
        messages = self.sink.wait_for(2)
        by_sender = {meta["mail_from"]: (meta, data) for meta, data in messages}
        self.assertEqual(by_sender["sender@example.com"][0]["rcpt_tos"], ["ok@example.org"])

        dsn_meta, dsn_data = by_sender[""]
        self.assertEqual(dsn_meta["rcpt_tos"], ["sender@example.com"])
        dsn = parse(dsn_data)
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        parts = [part.get_content_type() for part in dsn.walk()]
        self.assertIn("message/delivery-status", parts)
        text = dsn_data.decode(errors="replace")
        self.assertIn("Final-Recipient: rfc822; reject-me@example.org", text)
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertNotIn("ok@example.org", text.split("Final-Recipient", 1)[1])
        self.assertIn("delivery-test@example.com", text)  # the original headers ride along

        queued = self.pv.queue_json()
        self.assertEqual([m["id"] for m in queued], [queue_id])
        states = {r["address"]: r for r in queued[0]["recipients"]}
        self.assertEqual(states["ok@example.org"]["state"], "delivered")
        self.assertEqual(states["reject-me@example.org"]["state"], "bounced")
        self.assertEqual(states["defer-me@example.org"]["state"], "deferred")
        self.assertGreaterEqual(states["defer-me@example.org"]["attempts"], 1)
        self.assertIn("451", states["defer-me@example.org"]["last_reply"])
        self.assertIn(f"qid={queue_id}", self.pv.log_text())

    def test_no_dsn_to_the_null_sender(self):
        send(self.pv.port, "", ["reject-me@example.org"])
        wait_until(lambda: self.pv.queue_json() == [], message="bounce to finish")
        self.assertEqual(self.sink.messages(), [])


class ExpiryTest(PostvaultTestCase):
    def test_message_still_deferred_after_max_queue_time_bounces(self):
        sink = self.start_sink()
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}", "max_queue_time": "3s",
                                            "retry_min": "1s", "retry_max": "1s"})
        send(pv.port, "sender@example.com", ["defer-forever@example.org"])
        meta, data = sink.wait_for(1, timeout=30)[0]
        self.assertEqual(meta["mail_from"], "")
        self.assertIn(b"defer-forever@example.org", data)
        self.assertIn(b"Status: 4.4.7", data)
        wait_until(lambda: pv.queue_json() == [], message="queue to empty")


class TlsPolicyTest(PostvaultTestCase):
    def make_certificate(self, name):
        cert, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                        "-days", "2", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        return cert, key

    def test_required_tls_verified_delivery(self):
        cert, key = self.make_certificate("localhost")
        sink = self.start_sink(tls_cert=cert, tls_key=key)
        pv = self.start_postvault(delivery={"relayhost": f"localhost:{sink.port}", "tls": "required",
                                            "ca_file": str(cert)})
        queue_id = send(pv.port, "sender@example.com", ["tls@example.org"])
        meta, _ = sink.wait_for(1)[0]
        self.assertTrue(meta.get("tls_version", "").startswith("TLSv1."), meta)
        wait_until(lambda: f"qid={queue_id}" in pv.log_text() and "tls=TLSv1." in pv.log_text(),
                   message="TLS recorded in the delivery log")

    def test_required_tls_never_falls_back_to_plaintext(self):
        sink = self.start_sink()  # offers no STARTTLS
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}", "tls": "required"})
        queue_id = send(pv.port, "sender@example.com", ["secret@example.org"])

        def deferred():
            messages = pv.queue_json()
            return messages and messages[0]["recipients"][0]["state"] == "deferred" and messages
        messages = wait_until(deferred, message="deferral")
        self.assertEqual(messages[0]["id"], queue_id)
        self.assertEqual(sink.messages(), [])

    def test_required_tls_refuses_a_certificate_for_another_host(self):
        cert, key = self.make_certificate("wrong.example")
        sink = self.start_sink(tls_cert=cert, tls_key=key)
        pv = self.start_postvault(delivery={"relayhost": f"localhost:{sink.port}", "tls": "required",
                                            "ca_file": str(cert)})
        send(pv.port, "sender@example.com", ["secret@example.org"])
        wait_until(lambda: (pv.queue_json() or [{}])[0].get("recipients", [{}])[0].get("state") == "deferred",
                   message="deferral")
        self.assertEqual(sink.messages(), [])

    def test_per_domain_policy_overrides_default(self):
        sink = self.start_sink()  # no STARTTLS
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}", "tls": "may",
                                            "tls_policy": {"secure.example": "required"}})
        send(pv.port, "sender@example.com", ["open@example.org"])
        send(pv.port, "sender@example.com", ["closed@secure.example"])
        meta, _ = sink.wait_for(1)[0]
        self.assertEqual(meta["rcpt_tos"], ["open@example.org"])
        wait_until(lambda: any(r["address"] == "closed@secure.example" and r["state"] == "deferred"
                               for m in pv.queue_json() for r in m["recipients"]), message="deferral")
        self.assertEqual(len(sink.messages()), 1)

    def test_opportunistic_tls_is_used_when_offered(self):
        cert, key = self.make_certificate("sink.example")
        sink = self.start_sink(tls_cert=cert, tls_key=key)
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}", "tls": "may"})
        send(pv.port, "sender@example.com", ["may@example.org"])
        meta, _ = sink.wait_for(1)[0]
        self.assertTrue(meta.get("tls_version", "").startswith("TLSv1."), meta)


if __name__ == "__main__":
    unittest.main()
