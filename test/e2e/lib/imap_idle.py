#!/usr/bin/python3
"""imap_idle.py PORT USER PASS SRC... -- hold one IMAP session per source address SRC open
in IDLE on 127.0.0.1:PORT, for the Dovecot plugin's tests (a client that stays connected).

Prints "ready N" once all N sessions are logged in and idling. Then reads commands on stdin,
one per line, and answers each with one line on stdout:
  noop    leave IDLE, NOOP, IDLE again in every session: "noop ok N" (N sessions answered OK)
  logout  leave IDLE and LOGOUT every session: "logout ok N"
End of input logs out too. A session that fails is reported as "error SRC: why" on stderr.
"""
import socket
import sys


class Session:
    """One IMAP connection from a chosen source address."""

    def __init__(self, port, src, user, password):
        self.src = src
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                             source_address=(src, 0))
        self.buf = b""
        self.tag = 0
        self.line()  # the greeting
        self.command(f"LOGIN {user} {password}")
        self.idle()

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def command(self, text):
        """Send a tagged command; wait for its tagged reply, which must be OK."""
        self.tag += 1
        tag = f"a{self.tag}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        while True:
            line = self.line()
            if line.startswith(tag + " "):
                if not line.startswith(tag + " OK"):
                    raise RuntimeError(line)
                return

    def idle(self):
        self.tag += 1
        self.idle_tag = f"a{self.tag}"
        self.sock.sendall(f"{self.idle_tag} IDLE\r\n".encode())
        while not self.line().startswith("+"):
            pass

    def done(self):
        """Leave IDLE: DONE, then the IDLE command's tagged OK."""
        self.sock.sendall(b"DONE\r\n")
        while True:
            line = self.line()
            if line.startswith(self.idle_tag + " "):
                if not line.startswith(self.idle_tag + " OK"):
                    raise RuntimeError(line)
                return


def each(sessions, action):
    """Run ACTION on every session; return how many succeeded."""
    ok = 0
    for s in sessions:
        try:
            action(s)
            ok += 1
        except (OSError, EOFError, RuntimeError) as e:
            print(f"error {s.src}: {e}", file=sys.stderr, flush=True)
    return ok


def main():
    port, user, password, sources = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    sessions = []
    for src in sources:
        try:
            sessions.append(Session(port, src, user, password))
        except (OSError, EOFError, RuntimeError) as e:
            print(f"error {src}: {e}", file=sys.stderr, flush=True)
    print(f"ready {len(sessions)}", flush=True)
    for cmd in sys.stdin:
        cmd = cmd.strip()
        if cmd == "noop":
            n = each(sessions, lambda s: (s.done(), s.command("NOOP"), s.idle()))
            print(f"noop ok {n}", flush=True)
        elif cmd == "logout":
            break
    n = each(sessions, lambda s: (s.done(), s.command("LOGOUT")))
    print(f"logout ok {n}", flush=True)


if __name__ == "__main__":
    main()
