"""Clients for chapter 14's captures (see ch14.sh).

    capture-client.py hold ADDR N     N connections, one frame echoed on each,
                                      then held until stdin closes
    capture-client.py rounds ADDR N   100 connections, N rounds of one frame
                                      sent on each, then each echo read
"""

import resource
import socket
import struct
import sys

FRAME = struct.pack("<I", 64) + b"x" * 64


def read_exactly(conn, n):
    got = 0
    while got < n:
        chunk = conn.recv(n - got)
        if not chunk:
            sys.exit("the server closed a connection")
        got += len(chunk)


def connect(addr, n):
    host, port = addr.rsplit(":", 1)
    return [socket.create_connection((host, int(port))) for _ in range(n)]


def hold(addr, n):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = connect(addr, n)
    for i, conn in enumerate(conns):
        conn.sendall(struct.pack("<II", 4, i))
        read_exactly(conn, 8)
    print("holding", flush=True)
    sys.stdin.read()


def rounds(addr, n):
    conns = connect(addr, 100)
    for _ in range(n):
        for conn in conns:
            conn.sendall(FRAME)
        for conn in conns:
            read_exactly(conn, len(FRAME))


if __name__ == "__main__":
    what, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"hold": hold, "rounds": rounds}[what](addr, n)
