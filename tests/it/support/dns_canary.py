#!/usr/bin/env python3
"""A DNS server that must never be asked: the canary of the network-isolation tests.

usage: dns_canary.py ADDRESS PORT RECORD_FILE READY_FILE

Listens on ADDRESS:PORT over UDP and TCP. Every query is appended to RECORD_FILE as one line
`PROTO PEER NAME`, and answered with the A record 203.0.113.7 (a documentation address), so a
query that got here would also resolve. READY_FILE is written once both sockets listen.
"""
import os
import socket
import struct
import sys
import threading

address, port, record, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()


def qname(packet):
    labels, i = [], 12
    while i < len(packet) and packet[i] != 0:
        n = packet[i]
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels), i + 5


def answer(query):
    name, end = qname(query)
    head = query[:2] + b"\x81\x80" + query[4:6] + b"\x00\x01\x00\x00\x00\x00"
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 7])
    return name, head + query[12:end] + rr


def note(proto, peer, name):
    with lock, open(record, "a") as f:
        f.write("%s %s %s\n" % (proto, peer, name))


def udp(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        if len(data) < 12:
            continue
        name, reply = answer(data)
        note("udp", peer[0], name)
        sock.sendto(reply, peer)


def tcp_client(conn, peer):
    with conn:
        head = conn.recv(2)
        if len(head) < 2:
            note("tcp", peer[0], "-")
            return
        (length,) = struct.unpack(">H", head)
        data = b""
        while len(data) < length:
            chunk = conn.recv(length - len(data))
            if not chunk:
                break
            data += chunk
        name, reply = answer(data) if len(data) >= 12 else ("-", b"")
        note("tcp", peer[0], name)
        conn.sendall(struct.pack(">H", len(reply)) + reply)


def tcp(sock):
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=tcp_client, args=(conn, peer), daemon=True).start()


u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind((address, port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((address, port))
t.listen(16)
threading.Thread(target=udp, args=(u,), daemon=True).start()
open(record, "a").close()
with open(ready + ".tmp", "w") as f:
    f.write("ready")
os.rename(ready + ".tmp", ready)
tcp(t)
