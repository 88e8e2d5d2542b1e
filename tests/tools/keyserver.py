#!/usr/bin/python3
"""keyserver.py — an HKP keyserver and WKD host for key discovery tests (stdlib only).

Usage:
  /usr/bin/python3 keyserver.py --dir DIR [--listen 127.0.0.1:0]
      [--tls-cert CERT --tls-key KEY] [--redirect FROM=TO ...] [--verbose]

Prints "READY <port>" on stdout once it listens (port 0 picks a free one), then serves:
  GET /pks/lookup?op=get&options=mr&search=ADDR
      DIR/hkp/<ADDR lower-cased>.asc as application/pgp-keys, or 404;
  GET /.well-known/openpgpkey/<domain>/hu/<hash>   (WKD advanced)
  GET /.well-known/openpgpkey/hu/<hash>            (WKD direct)
      DIR/wkd/<hash> as application/octet-stream, or 404 (the ?l= query is ignored);
  GET /.well-known/openpgpkey/<domain>/policy and /.well-known/openpgpkey/policy
      200 with an empty body;
  anything else 404. With --redirect FROM=TO (repeatable) a request whose path
  (without query) is FROM gets "302 Found" with "Location: TO", TO as given.
Every response has a Content-Length. Each request's path, query included, is
appended to DIR/requests.log (one line each) before the response is sent, so a
test that has its response can assert which sources were asked.

With --tls-cert the listening socket speaks HTTPS only (TLS 1.2 minimum); the
handshake runs on the connection's own thread, so a client that fails or stalls
it does not block the others. SIGTERM or SIGINT stops it, and so does the death
of its parent. Request logging goes to stderr only with --verbose, so a parent
that never reads stderr cannot block the server.
"""

import argparse
import http.server
import os
import re
import signal
import ssl
import sys
import threading
import urllib.parse

HASH = r"[ybndrfg8ejkmcpqxot1uwisza345h769]+"
WKD_ADVANCED = re.compile(r"^/\.well-known/openpgpkey/([A-Za-z0-9.-]+)/hu/(" + HASH + r")$")
WKD_DIRECT = re.compile(r"^/\.well-known/openpgpkey/hu/(" + HASH + r")$")
WKD_POLICY = re.compile(r"^/\.well-known/openpgpkey/(?:[A-Za-z0-9.-]+/)?policy$")
CONNECTION_TIMEOUT = 10  # seconds a client may take to handshake or send a request


def parse_listen(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_file(path):
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError:
        return None


class KeyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT

    def version_string(self):
        return "keyserver.py"

    def do_GET(self):
        config = self.server.config
        config.log_request(self.path)
        url = urllib.parse.urlsplit(self.path)
        if url.path in config.redirects:
            self.respond(302, b"", "text/plain", {"Location": config.redirects[url.path]})
            return
        if url.path == "/pks/lookup":
            self.hkp(urllib.parse.parse_qs(url.query))
            return
        match = WKD_ADVANCED.match(url.path)
        key_hash = match.group(2) if match else None
        match = WKD_DIRECT.match(url.path)
        key_hash = match.group(1) if match else key_hash
        if key_hash:
            self.respond_file(os.path.join(config.directory, "wkd", key_hash), "application/octet-stream")
        elif WKD_POLICY.match(url.path):
            self.respond(200, b"", "text/plain")
        else:
            self.respond(404, b"not found\n", "text/plain")

    def hkp(self, query):
        if query.get("op", [""])[0] != "get":
            self.respond(501, b"only op=get\n", "text/plain")
            return
        search = query.get("search", [""])[0].lower()
        if not search or "/" in search or search.startswith("."):
            self.respond(404, b"no such key\n", "text/plain")
            return
        self.respond_file(os.path.join(self.server.config.directory, "hkp", search + ".asc"),
                          "application/pgp-keys")

    def respond_file(self, path, content_type):
        body = read_file(path)
        if body is None:
            self.respond(404, b"no such key\n", "text/plain")
        else:
            self.respond(200, body, content_type)

    def respond(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.config.verbose:
            sys.stderr.write("keyserver.py: %s %s\n" % (self.address_string(), format % args))


class Config:
    def __init__(self, directory, redirects, verbose):
        self.directory = directory
        self.redirects = redirects
        self.verbose = verbose
        self.log_lock = threading.Lock()

    def log_request(self, path):
        with self.log_lock:
            with open(os.path.join(self.directory, "requests.log"), "a") as log:
                log.write(path + "\n")


class KeyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, config, tls_context):
        self.config = config
        self.tls_context = tls_context
        super().__init__(address, KeyHandler)

    def finish_request(self, request, client_address):
        # Runs on the connection's thread: the TLS handshake happens here, not in accept().
        request.settimeout(CONNECTION_TIMEOUT)
        if self.tls_context is not None:
            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as error:
                if self.config.verbose:
                    sys.stderr.write("keyserver.py: TLS handshake failed: %s\n" % error)
                return
            try:
                super().finish_request(request, client_address)
            finally:
                request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        if self.config.verbose:
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="holds hkp/<address>.asc and wkd/<hash>; gets requests.log")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 = any free port")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--redirect", action="append", default=[], metavar="FROM=TO",
                        help="answer path FROM with 302 to TO (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="log requests and errors on stderr")
    args = parser.parse_args()

    redirects = {}
    for entry in args.redirect:
        source, separator, target = entry.partition("=")
        if not separator or not source.startswith("/"):
            parser.error("--redirect wants FROM=TO with FROM a path: %s" % entry)
        redirects[source] = target

    tls_context = None
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    os.makedirs(args.dir, exist_ok=True)
    server = KeyServer(parse_listen(args.listen), Config(args.dir, redirects, args.verbose), tls_context)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, stop)
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    print("READY %d" % server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
