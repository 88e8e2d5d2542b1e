#!/usr/bin/python3
"""dns_server.py — a tiny authoritative DNS server for delivery tests (standard library only).

Usage:
  /usr/bin/python3 dns_server.py [--listen 127.0.0.1:0 | [::1]:0] [--zone RECORDS.json]
      [--record "NAME TYPE DATA"]... [--log QUERIES.txt]

Serves the given records over UDP and TCP on the same port and prints
"READY <port>" on stdout once it listens (port 0 picks a free one).
A record is "NAME TYPE DATA", one of:
  example.com MX 10 mx1.example.com      (preference and host)
  example.com MX 0 .                     (null MX, RFC 7505)
  mx1.example.com A 127.0.0.2
  mx1.example.com AAAA ::1
--zone reads a JSON array of such strings; --record may be repeated.
Names match case-insensitively, with or without the trailing dot.
Answers: the records of the asked type (authoritative, NOERROR); NODATA
(NOERROR, no answer) for a known name without that type; NXDOMAIN for an
unknown name. A UDP answer over 512 bytes is sent truncated (TC bit, no
records), so the client retries over TCP as resolvers do.
--log appends one line per query: "udp|tcp NAME TYPE".
SIGTERM or SIGINT stops it, and so does the death of its parent.
"""

import argparse
import ipaddress
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading

TYPES = {"A": 1, "MX": 15, "AAAA": 28}
TYPE_NAMES = {number: name for name, number in TYPES.items()}
CLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
UDP_LIMIT = 512  # RFC 1035 §4.2.1, without EDNS0
TTL = 60


def normalize(name):
    return name.lower().rstrip(".")


def encode_name(name):
    name = normalize(name)
    out = b""
    for label in name.split(".") if name else []:
        data = label.encode("ascii")
        if not 0 < len(data) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes([len(data)]) + data
    return out + b"\0"


def encode_rdata(record_type, data):
    if record_type == "A":
        return ipaddress.IPv4Address(data).packed
    if record_type == "AAAA":
        return ipaddress.IPv6Address(data).packed
    preference, host = data.split()
    return struct.pack("!H", int(preference)) + encode_name(host)


def parse_records(lines):
    """{name: {type number: [rdata bytes]}} from "NAME TYPE DATA" strings."""
    zone = {}
    for line in lines:
        name, record_type, data = line.split(None, 2)
        record_type = record_type.upper()
        if record_type not in TYPES:
            raise ValueError(f"unsupported record type in {line!r} (use A, AAAA or MX)")
        zone.setdefault(normalize(name), {}).setdefault(TYPES[record_type], []).append(
            encode_rdata(record_type, data.strip()))
    return zone


def parse_question(query):
    """(id, flags, name, type, class, end of question) or None when malformed."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    labels, offset = [], 12
    while True:
        if offset >= len(query):
            return None
        length = query[offset]
        offset += 1
        if length == 0:
            break
        if length >= 64 or offset + length > len(query):  # no compression in a question
            return None
        labels.append(query[offset:offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
    return ident, flags, ".".join(labels), qtype, qclass, offset + 4


def answer(zone, query, transport, log_path):
    question = parse_question(query)
    if question is None:
        if len(query) < 2:
            return None
        return query[:2] + struct.pack("!HHHHH", 0x8000 | FORMERR, 0, 0, 0, 0)
    ident, flags, name, qtype, qclass, end = question
    if log_path:
        with open(log_path, "a") as log:
            log.write(f"{transport} {normalize(name)} {TYPE_NAMES.get(qtype, qtype)}\n")
    opcode = (flags >> 11) & 0xF
    records = []
    if opcode != 0:
        rcode = NOTIMP
    elif qclass != CLASS_IN:
        rcode = FORMERR
    elif normalize(name) not in zone:
        rcode = NXDOMAIN
    else:
        rcode = NOERROR
        records = zone[normalize(name)].get(qtype, [])
    # QR, the query's opcode and RD, AA, RA.
    response_flags = 0x8000 | (opcode << 11) | (flags & 0x0100) | 0x0400 | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, response_flags, 1, len(records), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, TTL, len(rdata)) + rdata
                    for rdata in records)
    response = header + query[12:end] + body
    if transport == "udp" and len(response) > UDP_LIMIT:
        truncated = struct.pack("!HHHHHH", ident, response_flags | 0x0200, 1, 0, 0, 0)
        return truncated + query[12:end]
    return response


def read_exactly(stream, count):
    data = b""
    while len(data) < count:
        chunk = stream.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(host, port, zone, log_path):
    class UdpHandler(socketserver.BaseRequestHandler):
        def handle(self):
            query, sock = self.request
            response = answer(zone, query, "udp", log_path)
            if response:
                sock.sendto(response, self.client_address)

    class TcpHandler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                prefix = read_exactly(self.request, 2)
                if prefix is None:
                    return
                query = read_exactly(self.request, struct.unpack("!H", prefix)[0])
                if query is None:
                    return
                response = answer(zone, query, "tcp", log_path)
                if response:
                    self.request.sendall(struct.pack("!H", len(response)) + response)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class UdpServer(socketserver.ThreadingUDPServer):
        daemon_threads = True
        address_family = family

    class TcpServer(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = family

    for _ in range(20):  # port 0: find one free for both UDP and TCP
        udp = UdpServer((host, port), UdpHandler)
        try:
            tcp = TcpServer((host, udp.server_address[1]), TcpHandler)
            break
        except OSError:
            udp.server_close()
            if port != 0:
                raise
    else:
        raise OSError("no port free for both UDP and TCP")
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return udp.server_address[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 = any free port")
    parser.add_argument("--zone", help="JSON array of \"NAME TYPE DATA\" strings")
    parser.add_argument("--record", action="append", default=[], help="\"NAME TYPE DATA\" (repeatable)")
    parser.add_argument("--log", help="append \"udp|tcp NAME TYPE\" per query to this file")
    args = parser.parse_args()

    lines = list(args.record)
    if args.zone:
        with open(args.zone) as zone_file:
            lines += json.load(zone_file)
    zone = parse_records(lines)
    host, _, port = args.listen.rpartition(":")
    port = serve(host.strip("[]") or "127.0.0.1", int(port), zone, args.log)

    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    parent = os.getppid()
    print("READY %d" % port, flush=True)
    while not stopping.is_set() and os.getppid() == parent:
        stopping.wait(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
