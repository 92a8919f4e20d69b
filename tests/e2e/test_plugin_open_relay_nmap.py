"""An outside opinion on relaying: nmap's smtp-open-relay script against the
reference configuration (examples/postern.toml, started by test_example.py's
helper on ephemeral ports), through a small TCP relay that records what nmap
asked and what the server answered.

The script tries 16 MAIL FROM / RCPT TO combinations aimed at
`relaytest@<domain>`, with the usual tricks (`%`, `!`, quoted local parts,
source routes, address literals). `<domain>` must be a domain the server
does not deliver itself: with the server's own local domain (example.test)
the script counts plain local deliveries as "relayed" and reports an open
relay that is none. So the target is elsewhere.example, and every one of the
16 attempts must be refused with a 5xx, none answered 250."""

import shutil
import socket
import subprocess
import threading

import pytest
from example import start_example

FOREIGN = "elsewhere.example"
NOT_OPEN = "Server doesn't seem to be an open relay, all tests failed"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The reference server, without the per-session limit of refused
    recipients: the script asks its 16 questions in one session, and with
    the default limit the eighth refusal would end it with 421 (as it
    should: test_enumeration.py covers that)."""
    yield from start_example(tmp_path_factory.mktemp("example"), server="max_unknown_recipients = 0\n")


class Recorder:
    """A TCP relay in front of the server that records every command line a
    client sends and the code of the reply it gets (the client, like nmap's
    smtp library, must wait for each reply: no pipelining)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.exchanges: list[tuple[str, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    @staticmethod
    def _reply(up, client) -> int:
        """Pass one (multi-line) reply on in one piece, as the server sent
        it (nmap's smtp library takes whatever one read returns for the
        whole reply); its code."""
        lines = []
        while not lines or lines[-1][3:4] == b"-":
            lines.append(up.readline())
            if not lines[-1].endswith(b"\n"):
                raise EOFError
        client.sendall(b"".join(lines))
        return int(lines[-1][:3])

    def _relay(self, client):
        with client, socket.create_connection(("127.0.0.1", self.target), timeout=30) as server:
            up, down = server.makefile("rb"), client.makefile("rb")
            try:
                self._reply(up, client)
                while line := down.readline():
                    server.sendall(line)
                    self.exchanges.append((line.decode("utf-8", "replace").rstrip("\r\n"), self._reply(up, client)))
            except (EOFError, OSError, ValueError):
                pass

    def commands(self, verb: str) -> list[tuple[str, int]]:
        return [(c, code) for c, code in self.exchanges if c.upper().startswith(verb)]

    def close(self):
        self.listener.close()


def test_nmap_finds_no_open_relay(example):
    if not shutil.which("nmap"):
        pytest.fail("nmap is missing: install it (`apt-get install nmap`; .ci/run does)", pytrace=False)
    rec = Recorder(example.listening["smtp"])
    try:
        # "+" runs the script although the port is not a well-known SMTP port.
        run = subprocess.run(
            ["nmap", "-Pn", "-sT", "-v", "-p", str(rec.port), "--script", "+smtp-open-relay", "--script-args",
             f"smtp-open-relay.domain={FOREIGN},smtp-open-relay.ip=127.0.0.1", "127.0.0.1"],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        rec.close()
    out = run.stdout + run.stderr
    print(out, *(f"{c} -> {code}" for c, code in rec.exchanges), sep="\n")  # shown with -s or on failure
    assert run.returncode == 0, out
    assert f"smtp-open-relay: {NOT_OPEN}" in out, out
    # Every attempt got as far as RCPT TO (the senders were accepted) and
    # every recipient was refused for good.
    mails, rcpts = rec.commands("MAIL FROM:"), rec.commands("RCPT TO:")
    assert len(mails) == 16 and all(code == 250 for _, code in mails), mails
    assert len(rcpts) == 16, rcpts
    assert [r for r in rcpts if not 500 <= r[1] < 600] == [], rcpts
    assert all(FOREIGN in c for c, _ in rcpts), rcpts
    # What reached the plugin chain was refused by relay-control.
    with example.lock:
        outcomes = [r.get("fields", "") for r in example.records if r.get("plugin") == "access-log"]
    decided = [f for f in outcomes if "stage=rcpt-to" in f]
    assert decided and all("code=554" in f and "decided_by=relay-control" in f for f in decided), decided
