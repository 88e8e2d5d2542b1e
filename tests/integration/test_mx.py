"""Delivery by MX lookup, end to end on loopback.

postvault asks tests/tools/dns_server.py ([delivery] dns_servers) instead of
the system resolver. Every MX host resolves to its own 127.0.0.x address and
capture sinks listen there, all on the one shared mx_port; an address where
no sink listens is a host that is down.
"""

import json
import pathlib
import re
import smtplib
import socket
import subprocess
import unittest

from harness import PYTHON, SOURCE_DIR, CaptureSink, PostvaultTestCase, wait_until

DNS_SERVER = SOURCE_DIR / "tests" / "tools" / "dns_server.py"
BODY = b"Subject: mx test\r\nMessage-ID: <mx-test@sender.test>\r\n\r\nhello\r\n"


class DnsServer:
    """tests/tools/dns_server.py serving `records` ("NAME TYPE DATA")."""

    def __init__(self, directory, records, host="127.0.0.1"):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        zone = directory / "zone.json"
        zone.write_text(json.dumps(records))
        self.log_path = directory / "queries.txt"
        self.log_path.touch()
        listen = f"[{host}]:0" if ":" in host else f"{host}:0"
        self.process = subprocess.Popen([PYTHON, str(DNS_SERVER), "--listen", listen, "--zone", str(zone),
                                         "--log", str(self.log_path)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.process.kill()
            raise RuntimeError("DNS server did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def queries(self):
        """["udp example.com MX", ...] in arrival order."""
        return self.log_path.read_text().splitlines()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


class LoopbackSink(CaptureSink):
    """A capture sink on any 127.x address (CaptureSink itself uses 127.0.0.1)."""

    def __init__(self, directory, host, port):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.process = subprocess.Popen([PYTHON, str(SOURCE_DIR / "tests" / "tools" / "capture_sink.py"),
                                         "--listen", f"{host}:{port}", "--dir", str(self.directory)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.process.kill()
            raise RuntimeError(f"capture sink on {host} did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])


def unused_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MxDeliveryTest(PostvaultTestCase):
    def start_dns(self, records, host="127.0.0.1"):
        server = DnsServer(self.tmp / "dns", records, host)
        self.cleanups.append(server.stop)
        return server

    def start_sinks(self, *hosts):
        """One capture sink per 127.0.0.x address, all on one port: ({host: sink}, port)."""
        sinks, port = {}, 0
        for host in hosts:
            sink = LoopbackSink(self.tmp / f"sink-{host}", host, port)
            self.cleanups.append(sink.stop)
            sinks[host], port = sink, sink.port
        if port == 0:  # no sink at all: a port where nothing listens
            port = unused_udp_port()
        return sinks, port

    def start_relay(self, dns_servers, mx_port):
        return self.start_postvault(delivery={"mx_port": mx_port, "dns_servers": dns_servers})

    def send(self, pv, sender, recipients):
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=10) as client:
            client.sendmail(sender, recipients, BODY)

    def assert_delivered(self, sink, recipients):
        meta, data = sink.wait_for(1)[0]
        self.assertEqual(meta["mail_from"], "sender@sender.test")
        self.assertEqual(sorted(meta["rcpt_tos"]), sorted(recipients))
        self.assertIn(b"<mx-test@sender.test>", data)

    def wait_for_empty_queue(self, pv):
        wait_until(lambda: pv.queue_json() == [], message="queue to empty")

    def dsn_of(self, sink):
        """The one DSN at `sink`, as text, after checking its envelope."""
        meta, data = sink.wait_for(1)[0]
        self.assertEqual(meta["mail_from"], "")
        self.assertEqual(meta["rcpt_tos"], ["sender@sender.test"])
        return data.decode(errors="replace")

    # --- where the mail goes ----------------------------------------------------

    def test_single_mx_gets_the_mail(self):
        dns = self.start_dns(["one.test MX 10 mx.one.test", "mx.one.test A 127.0.0.3"])
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@one.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@one.test"])
        self.wait_for_empty_queue(pv)
        # The MX and the MX host's addresses both came from the configured server.
        self.assertIn("udp one.test MX", dns.queries())
        self.assertIn("udp mx.one.test A", dns.queries())

    def test_lowest_preference_first(self):
        dns = self.start_dns(["pref.test MX 20 mx2.pref.test", "pref.test MX 10 mx1.pref.test",
                              "mx1.pref.test A 127.0.0.3", "mx2.pref.test A 127.0.0.4"])
        sinks, port = self.start_sinks("127.0.0.3", "127.0.0.4")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@pref.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@pref.test"])
        self.wait_for_empty_queue(pv)
        self.assertEqual(sinks["127.0.0.4"].messages(), [])

    def test_backup_mx_when_the_primary_is_down(self):
        dns = self.start_dns(["two.test MX 10 mx1.two.test", "two.test MX 20 mx2.two.test",
                              "mx1.two.test A 127.0.0.2", "mx2.two.test A 127.0.0.3"])
        sinks, port = self.start_sinks("127.0.0.3")  # nothing listens on 127.0.0.2
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@two.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@two.test"])
        self.wait_for_empty_queue(pv)
        self.assertIn("127.0.0.2", pv.log_text())  # the primary was tried first

    def test_domain_without_mx_uses_its_address(self):
        # RFC 5321 §5.1: no MX records, so the domain itself is the mail host.
        dns = self.start_dns(["bare.test A 127.0.0.3"])
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@bare.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@bare.test"])
        self.wait_for_empty_queue(pv)
        queries = dns.queries()
        self.assertLess(queries.index("udp bare.test MX"), queries.index("udp bare.test A"))

    def test_recipients_at_two_domains_go_to_their_own_hosts(self):
        dns = self.start_dns(["alpha.test MX 10 mx.alpha.test", "mx.alpha.test A 127.0.0.3",
                              "beta.test MX 10 mx.beta.test", "mx.beta.test A 127.0.0.4"])
        sinks, port = self.start_sinks("127.0.0.3", "127.0.0.4")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["a@alpha.test", "b@beta.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["a@alpha.test"])
        self.assert_delivered(sinks["127.0.0.4"], ["b@beta.test"])
        self.wait_for_empty_queue(pv)
        self.assertEqual(len(sinks["127.0.0.3"].messages()) + len(sinks["127.0.0.4"].messages()), 2)

    def test_truncated_answer_is_retried_over_tcp(self):
        # Twenty long MX names do not fit in 512 bytes of UDP; only the best
        # one has an address.
        records = [f"big.test MX {20 + n} mx-{n}-with-a-long-label-to-fill-the-answer.big.test" for n in range(20)]
        records += ["big.test MX 10 mx.big.test", "mx.big.test A 127.0.0.3"]
        dns = self.start_dns(records)
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@big.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@big.test"])
        self.assertIn("udp big.test MX", dns.queries())
        self.assertIn("tcp big.test MX", dns.queries())

    def test_ipv6_dns_server(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        dns = self.start_dns(["six.test MX 10 mx.six.test", "mx.six.test A 127.0.0.3"], host="::1")
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@six.test"])
        self.assert_delivered(sinks["127.0.0.3"], ["someone@six.test"])
        self.assertIn("udp six.test MX", dns.queries())

    # --- bounces and deferrals -------------------------------------------------

    SENDER_MX = ["sender.test MX 10 mx.sender.test", "mx.sender.test A 127.0.0.3"]

    def test_null_mx_bounces_at_once(self):
        dns = self.start_dns(["nomail.test MX 0 ."] + self.SENDER_MX)
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@nomail.test"])
        text = self.dsn_of(sinks["127.0.0.3"])
        self.assertIn("Final-Recipient: rfc822; someone@nomail.test", text)
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.1.10", text)
        self.wait_for_empty_queue(pv)
        self.assertNotIn("nomail.test A", " ".join(dns.queries()))  # no address lookup for a null MX

    def test_unknown_domain_bounces(self):
        dns = self.start_dns(self.SENDER_MX)
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([dns.address], port)
        self.send(pv, "sender@sender.test", ["someone@missing.test"])
        text = self.dsn_of(sinks["127.0.0.3"])
        self.assertIn("Final-Recipient: rfc822; someone@missing.test", text)
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.1.2", text)
        self.wait_for_empty_queue(pv)

    def test_dns_server_not_answering_defers(self):
        sinks, port = self.start_sinks("127.0.0.3")
        pv = self.start_relay([f"127.0.0.1:{unused_udp_port()}"], port)
        self.send(pv, "sender@sender.test", ["someone@one.test"])

        def retried():
            messages = pv.queue_json()
            recipient = messages[0]["recipients"][0] if messages else {}
            self.assertNotEqual(recipient.get("state"), "bounced", recipient)
            return recipient.get("state") == "deferred" and recipient.get("attempts", 0) >= 2 and recipient
        recipient = wait_until(retried, message="two deferred attempts")
        self.assertIn("4.4.3", recipient["last_reply"])
        self.assertEqual(sinks["127.0.0.3"].messages(), [])  # no DSN either

    # --- configuration -----------------------------------------------------------

    def test_config_check_rejects_unusable_dns_servers(self):
        pv = self.start_postvault(start=False, delivery={
            "dns_servers": ["10.0.0.53", "dns.example.net", "::1", "127.0.0.1:0", "[::1]:5353"]})
        result = pv.cli("config", "check", "--config", str(pv.config_path), check=False)
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        problems = re.findall(r"postvault\.toml:\d+:\d+: 'delivery\.dns_servers'.*", output)
        self.assertEqual(len(problems), 4, output)  # 3 bad entries, and more than 3 servers
        self.assertIn("'dns.example.net' must be an IP address", output)
        self.assertNotIn("10.0.0.53", output)
        self.assertNotIn("[::1]:5353", output)

        pv.write_config(delivery={"dns_servers": ["10.0.0.53", "127.0.0.1:5353", "[::1]:5353"]})
        result = pv.cli("config", "check", "--config", str(pv.config_path), check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
