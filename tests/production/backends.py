#!/usr/bin/python3
"""Real servers for tests/production.rs that the Rust harness cannot play:
HTTPS with a self-signed certificate for another name, and UDP.

Usage: backends.py SPEC CERT KEY

SPEC is a JSON list of {"ip", "port", "proto": "tcp"|"udp", "status"}.
A tcp backend accepts connections; each one waits for its first byte
(an IdleConnection monitor sends none and is kept open until it closes),
then speaks TLS when the byte starts a TLS handshake, plain HTTP otherwise,
answers one request with `status` (a 30x carries a Location) and closes.
A udp backend reads and ignores datagrams (so no ICMP error is sent back).
Prints "ready" once every socket listens; runs until killed.
"""

import json
import socket
import ssl
import sys
import threading


def answer(conn, status):
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    reason = {200: "OK", 302: "Found"}.get(status, "Status")
    extra = "Location: https://example.org/\r\n" if 300 <= status < 400 else ""
    body = b"ok\n"
    conn.sendall(("HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % (status, reason, extra, len(body))).encode() + body)


def serve(conn, status, context):
    try:
        first = conn.recv(1, socket.MSG_PEEK)
        if not first:
            return
        if first[0] == 0x16:
            conn.settimeout(10)
            conn = context.wrap_socket(conn, server_side=True)
        answer(conn, status)
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def tcp(sock, status, context):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn, status, context), daemon=True).start()


def udp(sock):
    while True:
        sock.recvfrom(2048)


def main():
    spec, cert, key = sys.argv[1:4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    threads = []
    for b in json.load(open(spec)):
        family = socket.AF_INET6 if ":" in b["ip"] else socket.AF_INET
        kind = socket.SOCK_DGRAM if b["proto"] == "udp" else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((b["ip"], b["port"]))
        if b["proto"] == "udp":
            threads.append(threading.Thread(target=udp, args=(sock,), daemon=True))
        else:
            sock.listen(64)
            threads.append(threading.Thread(target=tcp, args=(sock, b["status"], context),
                                            daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
