#!/usr/bin/python3
"""capture_sink.py — a capturing SMTP server for delivery tests (aiosmtpd 1.4).

Usage:
  /usr/bin/python3 capture_sink.py --listen 127.0.0.1:0 --dir OUT
      [--tls-cert CERT --tls-key KEY [--require-tls]] [--smtputf8] [--verbose]

Prints "READY <port>" on stdout once it listens (port 0 picks a free one).
Each accepted message is written as OUT/<n>.eml (the bytes as received) and
OUT/<n>.json ({"mail_from" ("" for the null sender), "rcpt_tos", "mail_options",
"peer", "tls_version", "tls_cipher"}), the .json last, so a reader that sees it
finds both complete.
Recipients whose local part starts with "reject" get 550 5.1.1 and those
starting with "defer" get 451 4.3.0, at RCPT time. SIGTERM or SIGINT stops it,
and so does the death of its parent (a test that crashed leaves no sink behind).
aiosmtpd's own log (session errors, failed handshakes) goes to stderr only
with --verbose, so a parent that never reads stderr cannot block the sink.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP


class CaptureHandler:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 User unknown"
        if local.startswith("defer"):
            return "451 4.3.0 Try later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        tls_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        facts = {
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "peer": list(session.peer) if session.peer else None,
            "tls_version": tls_object.version() if tls_object else None,
            "tls_cipher": tls_object.cipher()[0] if tls_object else None,
        }
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with open(base + ".eml", "wb") as out:
            out.write(content)
        with open(base + ".json.tmp", "w") as out:
            json.dump(facts, out)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued as %d" % self.count


def parse_listen(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT, port 0 = any free port")
    parser.add_argument("--dir", required=True, help="where to write <n>.eml and <n>.json")
    parser.add_argument("--tls-cert", help="PEM certificate chain: offer STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--require-tls", action="store_true", help="refuse mail before STARTTLS")
    parser.add_argument("--smtputf8", action="store_true", help="offer SMTPUTF8")
    parser.add_argument("--verbose", action="store_true", help="aiosmtpd's log on stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL + 1)

    os.makedirs(args.dir, exist_ok=True)
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = CaptureHandler(args.dir)
    host, port = parse_listen(args.listen)

    class LenientSMTP(SMTP):
        # Real next hops (Postfix, Exchange) take lines longer than RFC 5321's
        # 1000; so does this sink, so real mail is judged by postvault alone.
        line_length_limit = 1 << 20

    def make_session():
        return LenientSMTP(handler, hostname="capture-sink.test", tls_context=tls_context,
                    require_starttls=args.require_tls, enable_SMTPUTF8=args.smtputf8,
                    loop=loop)

    server = loop.run_until_complete(loop.create_server(make_session, host, port))
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    parent = os.getppid()

    def watch_parent():
        if os.getppid() != parent:
            stop.set()
        else:
            loop.call_later(1.0, watch_parent)

    loop.call_later(1.0, watch_parent)
    print("READY %d" % server.sockets[0].getsockname()[1], flush=True)
    loop.run_until_complete(stop.wait())
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
