"""Every configurable limit, checked through the real server with its reply."""

import socket
import time
import unittest

from harness import PostvaultTestCase, SmtpClient


class LimitsTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        self.pv = self.start_postvault(
            smtp={"max_message_size": 4096, "max_recipients": 2, "max_header_size": 2048,
                  "max_command_line": 600, "max_data_line": 1200, "command_timeout": "2s",
                  "data_timeout": "3s", "max_connections": 6, "max_connections_per_ip": 3, "max_errors": 3},
            delivery={"relayhost": f"127.0.0.1:{self.sink.port}"})

    def session(self, source=None):
        client = SmtpClient(self.pv.port, source=source)
        self.assertReply(client.read_reply(), 220)
        self.assertReply(client.command("EHLO limits.example.com"), 250)
        return client

    def transaction(self, client):
        self.assertReply(client.command("MAIL FROM:<a@example.com>"), 250)
        self.assertReply(client.command("RCPT TO:<b@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)

    def test_size_parameter_above_maximum(self):
        client = self.session()
        _, text = client.command("EHLO again.example.com")
        self.assertIn("SIZE 4096", text)
        self.assertReply(client.command("MAIL FROM:<a@example.com> SIZE=5000"), 552, "5.3.4")

    def test_actual_size_above_maximum(self):
        client = self.session()
        self.transaction(client)
        client.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".\r\n")
        self.assertReply(client.read_reply(), 552, "5.3.4")
        self.assertReply(client.command("NOOP"), 250)

    def test_too_many_recipients(self):
        client = self.session()
        self.assertReply(client.command("MAIL FROM:<a@example.com>"), 250)
        self.assertReply(client.command("RCPT TO:<1@example.org>"), 250)
        self.assertReply(client.command("RCPT TO:<2@example.org>"), 250)
        self.assertReply(client.command("RCPT TO:<3@example.org>"), 452, "4.5.3")

    def test_header_too_large(self):
        client = self.session()
        self.transaction(client)
        client.send(b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(40)) + b"\r\nbody\r\n.\r\n")
        self.assertReply(client.read_reply(), 552)

    def test_command_line_too_long(self):
        client = self.session()
        self.assertReply(client.command("NOOP " + "z" * 700), 500, "5.5.2")
        self.assertReply(client.command("NOOP"), 250)

    def test_data_line_too_long(self):
        client = self.session()
        self.transaction(client)
        client.send(b"Subject: long\r\n\r\n" + b"w" * 1500 + b"\r\n.\r\n")
        code, _ = client.read_reply()
        self.assertEqual(code // 100, 5)

    def test_command_timeout(self):
        client = self.session()
        started = time.time()
        self.assertReply(client.read_reply(), 421, "4.4.2")
        self.assertGreaterEqual(time.time() - started, 1.5)
        self.assertTrue(client.closed())

    def test_data_timeout(self):
        client = self.session()
        self.transaction(client)
        client.send(b"Subject: slow\r\n\r\npartial")
        self.assertReply(client.read_reply(), 421, "4.4.2")
        self.assertTrue(client.closed())
        self.assertEqual(self.pv.queue_json(), [])

    def test_connections_per_ip(self):
        held = [self.session() for _ in range(3)]
        extra = SmtpClient(self.pv.port)
        self.assertReply(extra.read_reply(), 421, "4.7.0")
        self.assertTrue(extra.closed())
        # Another address still gets in.
        other = SmtpClient(self.pv.port, source="127.0.0.2")
        self.assertReply(other.read_reply(), 220)
        for client in held:
            client.close()

    def test_connections_in_total(self):
        held = [self.session(source=f"127.0.0.{i}") for i in range(1, 4)]
        held += [self.session(source=f"127.0.1.{i}") for i in range(1, 4)]
        extra = SmtpClient(self.pv.port, source="127.0.2.1")
        self.assertReply(extra.read_reply(), 421, "4.7.0")
        for client in held:
            client.close()

    def test_too_many_errors(self):
        client = self.session()
        for _ in range(2):
            self.assertReply(client.command("BOGUS"), 500)
        code, text = client.command("BOGUS")
        if code == 500:
            code, text = client.read_reply()
        self.assertEqual(code, 421, text)
        self.assertTrue(client.closed())

    def test_reply_limits_do_not_lose_accepted_mail(self):
        client = self.session()
        self.transaction(client)
        client.send(b"Subject: ok\r\n\r\nsmall\r\n.\r\n")
        self.assertReply(client.read_reply(), 250)
        self.sink.wait_for(1)


class MemoryBudgetTest(PostvaultTestCase):
    def test_sessions_together_cannot_hold_more_than_the_budget(self):
        sink = self.start_sink()
        pv = self.start_postvault(smtp={"max_buffered_bytes": "64KiB", "max_message_size": "1MiB"},
                                  delivery={"relayhost": f"127.0.0.1:{sink.port}"})

        def start_data(client):
            client.read_reply()
            client.command("EHLO memory.example.com")
            self.assertReply(client.command("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(client.command("RCPT TO:<b@example.org>"), 250)
            self.assertReply(client.command("DATA"), 354)

        first, second = SmtpClient(pv.port), SmtpClient(pv.port)
        start_data(first)
        start_data(second)
        chunk = b"Subject: memory\r\n\r\n" + (b"m" * 78 + b"\r\n") * 500  # 40 KB, no terminator yet
        first.send(chunk)
        time.sleep(0.3)
        second.send(chunk)
        self.assertReply(second.read_reply(), 421, "4.3.1")
        self.assertTrue(second.closed())
        # The session within the budget completes, and the budget is free again afterwards.
        first.send(b".\r\n")
        self.assertReply(first.read_reply(), 250)
        third = SmtpClient(pv.port)
        start_data(third)
        third.send(chunk + b".\r\n")
        self.assertReply(third.read_reply(), 250)
        sink.wait_for(2)


class DiskFloorTest(PostvaultTestCase):
    def test_full_disk_gets_452(self):
        sink = self.start_sink()
        pv = self.start_postvault(smtp={"min_free_disk": "1000000TiB"},
                                  delivery={"relayhost": f"127.0.0.1:{sink.port}"})
        client = SmtpClient(pv.port)
        client.read_reply()
        client.command("EHLO disk.example.com")
        self.assertReply(client.command("MAIL FROM:<a@example.com>"), 452, "4.3.1")
        self.assertReply(client.command("QUIT"), 221)


if __name__ == "__main__":
    unittest.main()
