"""init, config check, SIGHUP reload and SIGTERM drain of the real binary."""

import os
import signal
import smtplib
import stat
import subprocess
import time
import unittest

from harness import BINARY, PostvaultTestCase, SmtpClient, wait_until


class InitAndConfigTest(PostvaultTestCase):
    def test_init_creates_a_valid_configuration_and_private_key(self):
        directory = self.tmp / "fresh"
        result = subprocess.run([BINARY, "init", "--dir", str(directory)], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        key_mode = stat.S_IMODE(os.stat(directory / "tls" / "key.pem").st_mode)
        self.assertEqual(key_mode, 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        check = subprocess.run([BINARY, "config", "check", "--config", str(directory / "postvault.toml")],
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        # The certificate is a real one openssl can read.
        x509 = subprocess.run(["openssl", "x509", "-in", str(directory / "tls" / "cert.pem"), "-noout", "-ext",
                               "subjectAltName"], capture_output=True, text=True)
        self.assertIn("127.0.0.1", x509.stdout)
        # A second init keeps what exists.
        before = (directory / "postvault.toml").read_bytes()
        again = subprocess.run([BINARY, "init", "--dir", str(directory)], capture_output=True, text=True)
        self.assertEqual(again.returncode, 0)
        self.assertEqual((directory / "postvault.toml").read_bytes(), before)

    def check(self, text):
        path = self.tmp / "check.toml"
        path.write_text(text)
        return subprocess.run([BINARY, "config", "check", "--config", str(path)], capture_output=True, text=True)

    def test_unknown_key_reported_with_line_and_column(self):
        result = self.check('[server]\nhostname = "a.example"\n\n[smtp]\n  lisen = ["127.0.0.1:25"]\n')
        self.assertEqual(result.returncode, 1)
        self.assertIn("check.toml:5:3: unknown key 'smtp.lisen'", result.stderr)

    def test_syntax_error_reported_with_line_and_column(self):
        result = self.check('[smtp]\nmax_recipients = = 3\n')
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, r"check\.toml:2:\d+: ")

    def test_bad_values_all_reported(self):
        result = self.check('[smtp]\nmax_recipients = "many"\ntrusted_networks = ["10.0.0.0/33"]\n'
                            '[delivery]\ntls = "sometimes"\nmax_queue_time = "5 fortnights"\n')
        self.assertEqual(result.returncode, 1)
        self.assertIn("check.toml:2:18:", result.stderr)
        self.assertIn("check.toml:3:", result.stderr)
        self.assertIn("check.toml:5:7:", result.stderr)
        self.assertIn("check.toml:6:", result.stderr)

    def test_world_readable_key_is_refused(self):
        directory = self.tmp / "loose"
        subprocess.run([BINARY, "init", "--dir", str(directory)], check=True, capture_output=True)
        os.chmod(directory / "tls" / "key.pem", 0o644)
        result = subprocess.run([BINARY, "config", "check", "--config", str(directory / "postvault.toml")],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("chmod 600", result.stderr)


class SignalsTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink.port}"},
                                       smtp={"max_recipients": 5})

    def test_sighup_applies_a_valid_configuration_and_keeps_the_old_one_otherwise(self):
        good = self.pv.config_path.read_text()
        self.pv.config_path.write_text(good.replace("max_recipients = 5", "max_recipients = 1"))
        self.pv.signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in self.pv.log_text(), message="reload")

        def recipients_accepted():
            client = SmtpClient(self.pv.port)
            client.read_reply()
            client.command("EHLO reload.example.com")
            client.command("MAIL FROM:<a@example.com>")
            codes = [client.command(f"RCPT TO:<r{i}@example.org>")[0] for i in range(3)]
            client.command("QUIT")
            return codes.count(250)

        self.assertEqual(recipients_accepted(), 1)
        self.pv.config_path.write_text(good.replace("[smtp]", "[smtp]\nno_such_key = 1"))
        self.pv.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in self.pv.log_text(), message="refused reload")
        self.assertIn("unknown key 'smtp.no_such_key'", self.pv.log_text())
        self.assertEqual(recipients_accepted(), 1)  # still the last good configuration
        self.assertEqual(self.pv.process.poll(), None)

    def test_reload_command_reports_errors(self):
        good = self.pv.config_path.read_text()
        self.pv.config_path.write_text(good + "\n[bogus]\n")
        result = self.pv.cli("reload", "--config", str(self.pv.config_path), check=False)
        self.assertEqual(result.returncode, 1)
        self.pv.config_path.write_text(good)
        self.pv.cli("reload", "--config", str(self.pv.config_path))

    def test_sigterm_finishes_the_transaction_in_progress_and_exits_cleanly(self):
        busy = SmtpClient(self.pv.port)
        busy.read_reply()
        busy.command("EHLO busy.example.com")
        busy.command("MAIL FROM:<a@example.com>")
        busy.command("RCPT TO:<b@example.org>")
        self.assertReply(busy.command("DATA"), 354)
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        idle = SmtpClient(self.pv.port)
        idle.read_reply()
        time.sleep(0.2)
        self.pv.signal(signal.SIGTERM)
        self.assertReply(idle.read_reply(), 421, "4.3.2")
        busy.send(b"second half\r\n.\r\n")
        self.assertReply(busy.read_reply(), 250)
        self.assertEqual(self.pv.process.wait(timeout=40), 0)
        self.assertIn("serve: stopped", self.pv.log_text())
        # Acknowledged means delivered, now or after the next start.
        if not self.sink.messages():
            self.pv.start()
        self.sink.wait_for(1)


if __name__ == "__main__":
    unittest.main()
