#!/usr/bin/python3
"""smtp_session.py PORT SRC STEP... -- one SMTP connection from source address SRC to
127.0.0.1:PORT that sends several messages, for the tests of what a gate decides between
two messages of one connection (swaks sends one message per connection).

After the greeting it sends "EHLO client.example", then one step per argument:
  an SMTP command ("MAIL FROM:<a@b>", "RCPT TO:<c@d>", "RSET"), sent as written;
  "DATA", which, answered 354, sends a short message and its end (".");
  "!SHELL COMMAND", run with sh -c between two commands (its output goes to stderr),
    e.g. popbsmtpctl suspend USER while the connection stays open.
QUIT ends the session. Prints one line per reply, in the words of postfix.sh's
pbs_smtp_transcript: "CMD CODE TEXT" with CMD = CONNECT, EHLO, MAIL, RCPT:<addr>, DATA,
DOT, RSET or QUIT; a multi-line reply is reduced to its last line. Exits 0 once QUIT is
answered, 1 if the connection fails or the server closes it early.
"""
import socket
import subprocess
import sys


class Session:
    """One SMTP connection from a chosen source address."""

    def __init__(self, port, src):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(src, 0))
        self.buf = b""

    def reply(self):
        """The last line of the next (possibly multi-line) reply, CR LF removed."""
        while True:
            while b"\r\n" not in self.buf:
                data = self.sock.recv(4096)
                if not data:
                    raise ConnectionError("connection closed by the server")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            if len(text) < 4 or text[3] != "-":
                return text

    def send(self, line):
        self.sock.sendall(line.encode("utf-8") + b"\r\n")


def name_of(command):
    """The transcript's name for COMMAND: RCPT:<addr> for a recipient, else its verb."""
    verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
    if verb == "RCPT":
        addr = command.split("<", 1)[-1].split(">", 1)[0]
        return "RCPT:" + addr
    return verb


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    port, src, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    try:
        s = Session(port, src)
        print("CONNECT", s.reply(), flush=True)
        s.send("EHLO client.example")
        print("EHLO", s.reply(), flush=True)
        for step in steps + ["QUIT"]:
            if step.startswith("!"):
                subprocess.run(step[1:], shell=True, stdout=sys.stderr, check=False)
                continue
            s.send(step)
            answer = s.reply()
            print(name_of(step), answer, flush=True)
            if step.upper() == "DATA" and answer.startswith("354"):
                s.send("Subject: smtp_session.py\r\n\r\none of several messages\r\n.")
                print("DOT", s.reply(), flush=True)
    except (OSError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
