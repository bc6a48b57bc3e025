#!/usr/bin/python3
"""policy_connect.py SOCKET — what socat - UNIX-CONNECT:SOCKET does, for the policy tests:
stdin goes to the socket (its EOF becomes a half close), the socket's bytes go to stdout;
exits when the server closes. SOCKET is a path or HOST:PORT."""
import os
import socket
import sys
import threading


def main():
    where = sys.argv[1]
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(where)
    else:
        host, port = where.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))

    def upstream():
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True).start()
    while True:
        try:
            data = s.recv(65536)
        except OSError:
            break
        if not data:
            break
        os.write(1, data)
        sys.stdout.flush()


main()
