"""Component entry point of the greylist plugin: adapts the Postern host
imports (kv, clock, log) and WIT types to `greylist_logic`. Built with
componentize-py against `wit/world.wit` (world `greylist`). Input: the
session (a host resource) and recipient from the host, the operator's configuration.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clock, kv, log
from wit_world.imports.types import Reply, Verdict_Defer, Verdict_Pass

import greylist_logic as logic

_LEVELS = {
    "debug": log.Level.DEBUG,
    "info": log.Level.INFO,
    "warn": log.Level.WARN,
    "error": log.Level.ERROR,
}

# Per instance; set by `init`. It is all the module keeps, and it is the
# same for every session: `Recycle` lets the host reuse the instance.
_config = None


def _log(level, message, fields):
    log.log(_LEVELS.get(level, log.Level.INFO), message, list(fields))


def _kv_error(e):
    v = e.value
    name = type(v).__name__.split("_", 1)[-1].lower()
    return logic.kv_failure(name, getattr(v, "value", None))


class _HostKv:
    """The host's kv import, with WIT errors turned into KvFailure."""

    def get(self, key):
        try:
            return kv.get(key)
        except Err as e:
            raise _kv_error(e) from None

    def set(self, key, value, ttl_ms):
        try:
            kv.set(key, value, ttl_ms)
        except Err as e:
            raise _kv_error(e) from None

    def set_if_absent(self, key, value, ttl_ms):
        try:
            return kv.set_if_absent(key, value, ttl_ms)
        except Err as e:
            raise _kv_error(e) from None


def _verdict(v):
    if v[0] == "defer":
        _, code, enhanced, text = v
        return Verdict_Defer(Reply(code=code, enhanced=enhanced, text=text))
    return Verdict_Pass()


class Init(exports.Init):
    def init(self, config: str) -> None:
        global _config
        try:
            _config = logic.parse_config(config)
        except logic.ConfigError as e:
            raise Err(str(e)) from None


class RcptToHook(exports.RcptToHook):
    def on_rcpt_to(self, session, recipient):
        global _config
        if _config is None:
            _config = logic.parse_config("{}")
        # The session is a host resource (postern:policy@0.2.0): each fact is
        # a call, made only for what the decision needs.
        mail_from = session.mail_from()
        sender = mail_from.address if mail_from is not None else ""
        greylist = logic.Greylist(_config, _HostKv(), _log)
        v = greylist.check(
            session.client_ip(),
            session.auth_user(),
            sender,
            recipient.address,
            clock.now_ms(),
        )
        return _verdict(v)


class Recycle(exports.Recycle):
    def recycle(self) -> bool:
        # Nothing of a session is kept between calls (state lives in kv), so
        # the instance may serve the next session: this spares it the Python
        # interpreter's start-up and `init`.
        return _config is not None
