"""Example Postern plugin in Python (see README.md): refuses senders whose
domain is listed in `blocked_domains` at MAIL FROM. Built with
componentize-py against wit/world.wit (world `sender-blocklist`); the
`wit_world` module is generated from that world at build time.
Input: the proposed sender from the host; the operator's configuration.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import Reply, Verdict_Pass, Verdict_Reject

# Per instance (every SMTP session gets a fresh one); set by `init`.
_blocked = set()


class Init(exports.Init):
    def init(self, config: str) -> None:
        """Check `[plugin.config]` (JSON); raising Err refuses it."""
        global _blocked
        settings = json.loads(config)
        unknown = set(settings) - {"blocked_domains"}
        if unknown:
            raise Err(f"unknown key(s): {', '.join(sorted(unknown))}")
        domains = settings.get("blocked_domains", [])
        if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
            raise Err("blocked_domains: a list of domain names")
        _blocked = {d.lower().rstrip(".") for d in domains}


class MailFromHook(exports.MailFromHook):
    def on_mail_from(self, session, sender):
        """`sender.domain` is empty for the null sender <>, which passes."""
        domain = sender.domain.lower().rstrip(".")
        if domain in _blocked:
            log.log(log.Level.INFO, "sender refused", [("sender", sender.address)])
            # Replies must be printable: replace anything else (SMTPUTF8).
            shown = "".join(c if " " <= c <= "~" else "?" for c in sender.address)
            text = f"<{shown}>: Sender domain refused by policy"
            return Verdict_Reject(Reply(code=550, enhanced="5.7.1", text=text))
        return Verdict_Pass()
