"""Fake Postern host for unit-testing Python plugins with plain CPython.

What it is: importing this module installs stand-ins for the modules
componentize-py 0.25.1 generates for a plugin world that includes
`postern:policy/imports@0.2.0` and exports hooks (`componentize_py_types`,
`wit_world`, `wit_world.exports`, `wit_world.imports.{types,log,clock,dns,
kv,message,mail_auth}`) into `sys.modules`, with the generated names (e.g.
`Verdict_Reject`, `Reply`, `log.Level.INFO`, `kv.KvError_Unavailable`,
`dns.Mx`). The import functions answer from one in-process fake host.

How to use it: import it BEFORE the plugin module, then drive the plugin's
hook classes directly:

    import postern_testing as pt            # first: installs `wit_world`
    import app                              # the plugin, unchanged

    class T(unittest.TestCase):
        def setUp(self):
            pt.host.reset()                 # fresh logs, kv, dns, clock, grants
        def test_refuses(self):
            v = app.MailFromHook().on_mail_from(pt.session(), pt.address("a@spam.example"))
            self.assertEqual(pt.verdict(v), ("reject", 550, "5.7.1", "..."))

`host` holds the state: `logs`/`logged()`, a settable clock (`now_ms`,
`advance()`), the kv store (TTLs and `increment`'s fixed window as the WIT
documents them), scripted DNS (`host.dns.a(...)`; unscripted names answer
nx-domain; `dns_queries` records every look-up), failure injection
(`kv_fail`, `dns_fail`, `mail_auth_fail`) and capability grants (`grant()`).
`session()`, `address()`, `message()` build stage arguments; `verdict()`
flattens a verdict. `load_plugin(path)` imports a fresh copy of a plugin
module (the host gives every session a fresh instance).

What it trusts: wit/*.wit (postern:policy@0.2.0) and the Postern host's
behaviour as of this writing (kv memory store, header parsing, address
split); the names were taken from `componentize-py bindings` output and are
checked by test_postern_testing.py against a fresh generation whenever
componentize-py is installed. Standard library only: this file is copied
verbatim next to plugin sources.
"""

import dataclasses
import importlib.util
import ipaddress
import sys
import types as _pytypes
from abc import abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Generic, List, Optional, Protocol, Tuple, TypeVar, Union

__all__ = ["host", "session", "address", "message", "verdict", "load_plugin", "Host"]

# Defaults of the builders and the clock (RFC 5737 documentation addresses).
DEFAULT_NOW_MS = 1_700_000_000_000
MAX_KEY = 1024  # bytes, as the host's kv checks them
MAX_VALUE = 64 * 1024
MAX_READ = 1 << 20  # message reads are capped at 1 MiB per call


# --------------------------------------------------------------------------
# Installing the stand-in modules

def _install(name, members, doc=None, package=False):
    """Create module `name` from `members` (a scope's locals) and register it
    in sys.modules and on its parent package. Classes and functions are
    renamed into the module so reprs read like the generated ones."""
    module = _pytypes.ModuleType(name, doc)
    if package:
        module.__path__ = []
    for key, value in members.items():
        if key.startswith("_"):
            continue
        if isinstance(value, (type, _pytypes.FunctionType)) and value.__module__ == __name__:
            value.__module__ = name
            value.__qualname__ = key
        setattr(module, key, value)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _types_runtime():
    """componentize_py_types, as generated (verbatim apart from layout)."""
    S = TypeVar("S")

    @dataclass
    class Some(Generic[S]):
        """Represents the "present" (i.e. non-absent) case of an optional value."""
        value: S

    T = TypeVar("T")

    @dataclass
    class Ok(Generic[T]):
        """Represents the success case of a Component Model `result` value."""
        value: T

    E = TypeVar("E")

    @dataclass(frozen=True)
    class Err(Generic[E], Exception):
        """Represents the failure case of a Component Model `result` value."""
        value: E

    Result = Union[Ok[T], Err[E]]
    return locals()


_cpt = _install("componentize_py_types", _types_runtime())
Err = _cpt.Err
Ok = _cpt.Ok


def _world():
    class WitWorld(Protocol):
        pass

    return locals()


_install("wit_world", _world(), package=True)
_install("wit_world.imports", {}, package=True)


def _types():
    @dataclass
    class Reply:
        code: int
        enhanced: Optional[str]
        text: str

    @dataclass
    class Verdict_Pass:
        pass

    @dataclass
    class Verdict_Accept:
        pass

    @dataclass
    class Verdict_AcceptWith:
        value: Reply

    @dataclass
    class Verdict_Reject:
        value: Reply

    @dataclass
    class Verdict_Defer:
        value: Reply

    @dataclass
    class Verdict_Disconnect:
        value: Reply

    Verdict = Union[Verdict_Pass, Verdict_Accept, Verdict_AcceptWith, Verdict_Reject,
                    Verdict_Defer, Verdict_Disconnect]

    @dataclass
    class EsmtpParam:
        keyword: str
        value: Optional[str]

    @dataclass
    class EnvelopeAddress:
        address: str
        local_part: str
        domain: str
        params: List[EsmtpParam]
        is_local: bool

    @dataclass
    class TlsInfo:
        protocol: str
        cipher: str
        client_certificate: bool
        server_name: Optional[str]

    class Session:
        """The `session` resource. Build one with `postern_testing.session()`;
        each getter answers the value given there."""

        def __init__(self, **fields):
            self._fields = fields

        def id(self) -> str:
            return self._fields["id"]

        def client_ip(self) -> str:
            return self._fields["client_ip"]

        def client_port(self) -> int:
            return self._fields["client_port"]

        def client_name(self) -> Optional[str]:
            return self._fields["client_name"]

        def local_ip(self) -> str:
            return self._fields["local_ip"]

        def local_port(self) -> int:
            return self._fields["local_port"]

        def listener(self) -> str:
            return self._fields["listener"]

        def server_name(self) -> str:
            return self._fields["server_name"]

        def helo(self) -> Optional[str]:
            return self._fields["helo"]

        def esmtp(self) -> bool:
            return self._fields["esmtp"]

        def tls(self) -> Optional[TlsInfo]:
            return self._fields["tls"]

        def auth_user(self) -> Optional[str]:
            return self._fields["auth_user"]

        def mail_from(self) -> Optional[EnvelopeAddress]:
            return self._fields["mail_from"]

        def recipients(self) -> List[EnvelopeAddress]:
            return list(self._fields["recipients"])

        def recipient_count(self) -> int:
            return self._fields["recipient_count"]

        def messages_accepted(self) -> int:
            return self._fields["messages_accepted"]

        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc_value, traceback):
            return None  # a borrowed handle: nothing to release

        def __repr__(self):
            return f"Session({self._fields['id']!r}, client_ip={self._fields['client_ip']!r})"

    @dataclass
    class Header:
        name: str
        value: str

    class Stage(Enum):
        CONNECT = 0
        HELO = 1
        AUTH = 2
        MAIL_FROM = 3
        RCPT_TO = 4
        DATA = 5
        VRFY = 6
        EXPN = 7
        DISCONNECT = 8

    @dataclass
    class Credentials:
        mechanism: str
        authzid: Optional[str]
        username: str
        password: str

    @dataclass
    class HeaderChange_Remove:
        value: str

    @dataclass
    class HeaderChange_Replace:
        value: Header

    HeaderChange = Union[HeaderChange_Remove, HeaderChange_Replace]

    @dataclass
    class EnvelopeChange_SetSender:
        value: str

    @dataclass
    class EnvelopeChange_AddRecipient:
        value: str

    @dataclass
    class EnvelopeChange_RemoveRecipient:
        value: str

    EnvelopeChange = Union[EnvelopeChange_SetSender, EnvelopeChange_AddRecipient,
                           EnvelopeChange_RemoveRecipient]

    @dataclass
    class DataResult:
        verdict: Verdict
        add_headers: List[Header]
        header_changes: List[HeaderChange]
        envelope_changes: List[EnvelopeChange]
        quarantine: Optional[str]

    @dataclass
    class Outcome:
        stage: Stage
        argument: str
        code: int
        enhanced: Optional[str]
        text: str
        decided_by: Optional[str]
        helo: Optional[str]
        tls: Optional[TlsInfo]
        auth_user: Optional[str]
        mail_from: Optional[str]
        recipient_count: int

    return locals()


_t = _install("wit_world.imports.types", _types())


def _log():
    class Level(Enum):
        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4

    def log(level: Level, message: str, fields: List[Tuple[str, str]]) -> None:
        host._log(level, message, fields)

    return locals()


_install("wit_world.imports.log", _log())


def _clock():
    def now_ms() -> int:
        return host.now_ms

    return locals()


_install("wit_world.imports.clock", _clock())


def _dns():
    @dataclass
    class DnsError_NxDomain:
        pass

    @dataclass
    class DnsError_NoRecords:
        pass

    @dataclass
    class DnsError_Temporary:
        value: str

    @dataclass
    class DnsError_Invalid:
        value: str

    @dataclass
    class DnsError_Denied:
        pass

    DnsError = Union[DnsError_NxDomain, DnsError_NoRecords, DnsError_Temporary,
                     DnsError_Invalid, DnsError_Denied]

    @dataclass
    class Mx:
        preference: int
        exchange: str

    def lookup_a(name: str) -> List[str]:
        return host._dns_lookup("a", name)

    def lookup_aaaa(name: str) -> List[str]:
        return host._dns_lookup("aaaa", name)

    def lookup_mx(name: str) -> List[Mx]:
        return host._dns_lookup("mx", name)

    def lookup_txt(name: str) -> List[str]:
        return host._dns_lookup("txt", name)

    def lookup_ptr(ip: str) -> List[str]:
        return host._dns_lookup("ptr", ip)

    return locals()


_dns_mod = _install("wit_world.imports.dns", _dns())


def _kv():
    @dataclass
    class KvError_Denied:
        pass

    @dataclass
    class KvError_Unavailable:
        value: str

    @dataclass
    class KvError_Invalid:
        value: str

    KvError = Union[KvError_Denied, KvError_Unavailable, KvError_Invalid]

    def get(key: str) -> Optional[str]:
        return host._kv_get(key)

    def set(key: str, value: str, ttl_ms: Optional[int]) -> None:
        host._kv_set(key, value, ttl_ms)

    def set_if_absent(key: str, value: str, ttl_ms: Optional[int]) -> bool:
        return host._kv_set_if_absent(key, value, ttl_ms)

    def delete(key: str) -> bool:
        return host._kv_delete(key)

    def increment(key: str, delta: int, window_ms: int) -> int:
        return host._kv_increment(key, delta, window_ms)

    return locals()


_kv_mod = _install("wit_world.imports.kv", _kv())


def _message():
    class Message:
        """The `message` resource over an in-memory message. Build one with
        `postern_testing.message(raw)`."""

        def __init__(self, raw: bytes):
            self._raw = bytes(raw)
            self._body_start, self._fields = _parse_headers(self._raw)

        def size(self) -> int:
            return len(self._raw)

        def header(self, name: str) -> Optional[str]:
            wanted = name.lower()
            return next((v for n, v in self._fields if n.lower() == wanted), None)

        def header_all(self, name: str) -> List[str]:
            wanted = name.lower()
            return [v for n, v in self._fields if n.lower() == wanted]

        def headers(self) -> List[_t.Header]:
            return [_t.Header(name=n, value=v) for n, v in self._fields]

        def body_size(self) -> int:
            return len(self._raw) - self._body_start

        def read_body(self, offset: int, len: int) -> bytes:
            return self.read(self._body_start + offset, len)

        def read(self, offset: int, len: int) -> bytes:
            _check_uint(offset, 64, "offset")
            _check_uint(len, 32, "len")
            return self._raw[offset:offset + min(len, MAX_READ)]

        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc_value, traceback):
            return None  # a borrowed handle: nothing to release

        def __repr__(self):
            return f"Message({self.size()} bytes)"

    return locals()


_msg = _install("wit_world.imports.message", _message())


def _mail_auth():
    class AuthResult(Enum):
        NONE = 0
        PASS = 1
        FAIL = 2
        SOFTFAIL = 3
        NEUTRAL = 4
        TEMPERROR = 5
        PERMERROR = 6

    @dataclass
    class MailAuthError_Denied:
        pass

    @dataclass
    class MailAuthError_Invalid:
        value: str

    MailAuthError = Union[MailAuthError_Denied, MailAuthError_Invalid]

    @dataclass
    class SpfCheck:
        result: AuthResult
        domain: str
        explanation: Optional[str]

    @dataclass
    class SpfOutcome:
        helo: SpfCheck
        mail_from: SpfCheck

    @dataclass
    class DkimSignature:
        domain: str
        selector: str
        algorithm: str
        result: AuthResult
        error: Optional[str]

    @dataclass
    class ArcOutcome:
        result: AuthResult
        instances: int
        error: Optional[str]

    class DmarcPolicy(Enum):
        NONE = 0
        QUARANTINE = 1
        REJECT = 2
        UNSPECIFIED = 3

    @dataclass
    class DmarcOutcome:
        from_domain: str
        result: AuthResult
        spf_aligned: bool
        dkim_aligned: bool
        record_found: bool
        policy: DmarcPolicy
        published_p: DmarcPolicy
        published_sp: DmarcPolicy
        pct: int

    @dataclass
    class AuthOutcome:
        spf: SpfOutcome
        dkim: List[DkimSignature]
        arc: ArcOutcome
        dmarc: DmarcOutcome

    def check_spf(client_ip: str, helo: str, mail_from: str) -> SpfOutcome:
        return host._mail_auth("check_spf", (client_ip, helo, mail_from))

    def authenticate(message, client_ip: str, helo: str, mail_from: str) -> AuthOutcome:
        return host._mail_auth("authenticate", (message, client_ip, helo, mail_from))

    def dkim_sign(message, domain: str, selector: str, algorithm: str,
                  private_key_pem: str, headers: List[str]) -> str:
        return host._mail_auth("dkim_sign", (message, domain, selector, algorithm,
                                             private_key_pem, headers))

    return locals()


_ma = _install("wit_world.imports.mail_auth", _mail_auth())


def _av_scan():
    @dataclass
    class ScanResult_Clean:
        pass

    @dataclass
    class ScanResult_Infected:
        value: str

    ScanResult = Union[ScanResult_Clean, ScanResult_Infected]

    @dataclass
    class ScanError_Denied:
        pass

    @dataclass
    class ScanError_Unavailable:
        value: str

    @dataclass
    class ScanError_TooLarge:
        pass

    ScanError = Union[ScanError_Denied, ScanError_Unavailable, ScanError_TooLarge]

    def scan_message(message) -> ScanResult:
        return host._av_scan(message)

    return locals()


_av = _install("wit_world.imports.av_scan", _av_scan())


def _delivery():
    """`delivery` (types only): what the delivery-side hooks are told and answer."""
    types = _t

    @dataclass
    class QueuedMessage:
        queue_id: str
        sender: str
        size: int
        received_ms: int
        attempts: int
        client_ip: str
        auth_user: Optional[str]

    @dataclass
    class Route_Default:
        pass

    @dataclass
    class Route_Local:
        pass

    @dataclass
    class Route_Relayhost:
        pass

    @dataclass
    class Route_Relay:
        value: str

    @dataclass
    class Route_Mx:
        value: str

    @dataclass
    class Route_Refuse:
        value: types.Reply

    @dataclass
    class Route_Defer:
        value: types.Reply

    Route = Union[Route_Default, Route_Local, Route_Relayhost, Route_Relay, Route_Mx,
                  Route_Refuse, Route_Defer]

    @dataclass
    class Attempt:
        recipient: str
        permanent: bool
        status: str
        text: str
        remote_host: Optional[str]

    class Decision(Enum):
        DEFAULT = 0
        RETRY = 1
        GIVE_UP = 2
        SUPPRESS_BOUNCE = 3

    @dataclass
    class Bounce:
        queue_id: str
        recipient: str
        failed: List[str]
        delayed: List[str]
        delivered: List[str]

    del types
    return locals()


_delivery_types = _install("wit_world.imports.delivery", _delivery())


def _exports():
    """Base classes of the hook interfaces (wit/hooks.wit), as generated."""
    types, message, delivery = _t, _msg, _delivery_types

    class Init(Protocol):
        @abstractmethod
        def init(self, config: str) -> None:
            """Raises: `componentize_py_types.Err(str)` to refuse the configuration."""
            raise NotImplementedError

    class Recycle(Protocol):
        @abstractmethod
        def recycle(self) -> bool:
            raise NotImplementedError

    class ConnectHook(Protocol):
        @abstractmethod
        def on_connect(self, session: types.Session) -> types.Verdict:
            raise NotImplementedError

    class HeloHook(Protocol):
        @abstractmethod
        def on_helo(self, session: types.Session, name: str, extended: bool) -> types.Verdict:
            raise NotImplementedError

    class AuthHook(Protocol):
        @abstractmethod
        def on_auth(self, session: types.Session, credentials: types.Credentials) -> types.Verdict:
            raise NotImplementedError

    class MailFromHook(Protocol):
        @abstractmethod
        def on_mail_from(self, session: types.Session, sender: types.EnvelopeAddress) -> types.Verdict:
            raise NotImplementedError

    class RcptToHook(Protocol):
        @abstractmethod
        def on_rcpt_to(self, session: types.Session, recipient: types.EnvelopeAddress) -> types.Verdict:
            raise NotImplementedError

    class DataHook(Protocol):
        @abstractmethod
        def on_data(self, session: types.Session, message: message.Message) -> types.DataResult:
            raise NotImplementedError

    class VrfyHook(Protocol):
        @abstractmethod
        def on_vrfy(self, session: types.Session, argument: str) -> types.Verdict:
            raise NotImplementedError

    class ExpnHook(Protocol):
        @abstractmethod
        def on_expn(self, session: types.Session, argument: str) -> types.Verdict:
            raise NotImplementedError

    class OutcomeHook(Protocol):
        @abstractmethod
        def on_outcomes(self, session: types.Session, outcomes: List[types.Outcome]) -> None:
            raise NotImplementedError

    class RouteHook(Protocol):
        @abstractmethod
        def on_route(self, message: delivery.QueuedMessage, recipient: str) -> delivery.Route:
            raise NotImplementedError

    class DeliveryHook(Protocol):
        @abstractmethod
        def on_delivery_result(self, message: delivery.QueuedMessage,
                               attempt: delivery.Attempt) -> delivery.Decision:
            raise NotImplementedError

    class BounceHook(Protocol):
        @abstractmethod
        def on_bounce(self, bounce: delivery.Bounce, report: message.Message) -> types.Verdict:
            raise NotImplementedError

    return locals()


_install("wit_world.exports", _exports(), package=True)
# One (empty) module per exported interface, as generated.
for _iface in ("init", "connect_hook", "helo_hook", "auth_hook", "mail_from_hook",
               "rcpt_to_hook", "data_hook", "vrfy_hook", "expn_hook", "outcome_hook",
               "route_hook", "delivery_hook", "bounce_hook", "recycle"):
    _install("wit_world.exports." + _iface, {})


# --------------------------------------------------------------------------
# Helpers shared by the stand-ins

def _check_uint(value, bits, what):
    """Lowering a WIT integer fails for a value out of its range."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise OverflowError(f"{what}: {value!r} is not a u{bits}")


def _parse_headers(raw: bytes):
    """(body start, [(name, value)]) as the host indexes a message: header
    fields up to the empty line; the section also ends at the first line that
    is neither a field nor a continuation (which then starts the body).
    Continuation lines are appended with their leading white space."""
    fields = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n", pos)
        if end < 0:
            end = len(raw)
        line = raw[pos:end]
        following = min(end + 2, len(raw))
        if not line:
            return following, fields
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return pos, fields
            name, value = fields[-1]
            fields[-1] = (name, value + line.decode("utf-8", "replace"))
        else:
            colon = line.find(b":")
            name = line[:colon]
            if colon <= 0 or not all(33 <= b <= 126 for b in name):
                return pos, fields
            value = line[colon + 1:]
            if value[:1] in (b" ", b"\t"):
                value = value[1:]
            fields.append((name.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
        pos = following
    return len(raw), fields


def _error(variants, spec, default_text):
    """A variant value from a short spec: "tag" or ("tag", payload); the tag
    is the WIT case name ("nx-domain", "unavailable"...)."""
    tag, payload = (spec, None) if isinstance(spec, str) else spec
    cls = variants.get(tag)
    if cls is None:
        raise ValueError(f"unknown error case {tag!r}; one of {sorted(variants)}")
    if dataclasses.fields(cls):
        return cls(default_text if payload is None else payload)
    return cls()


_KV_ERRORS = {"denied": _kv_mod.KvError_Denied, "unavailable": _kv_mod.KvError_Unavailable,
              "invalid": _kv_mod.KvError_Invalid}
_DNS_ERRORS = {"nx-domain": _dns_mod.DnsError_NxDomain, "no-records": _dns_mod.DnsError_NoRecords,
               "temporary": _dns_mod.DnsError_Temporary, "invalid": _dns_mod.DnsError_Invalid,
               "denied": _dns_mod.DnsError_Denied}
_MAIL_AUTH_ERRORS = {"denied": _ma.MailAuthError_Denied, "invalid": _ma.MailAuthError_Invalid}
CAPABILITIES = frozenset({"kv", "dns", "mail-auth", "av-scan"})
_AV_SCAN_ERRORS = {"denied": _av.ScanError_Denied, "unavailable": _av.ScanError_Unavailable,
                   "too-large": _av.ScanError_TooLarge}


def _dns_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _ptr_key(ip: str) -> str:
    return str(ipaddress.ip_address(ip.strip()))


# --------------------------------------------------------------------------
# The fake host

class _Dns:
    """Scripted DNS answers: `host.dns.a("mx.example", ["192.0.2.1"])`. A
    name with answers of some type answers no-records for the other types;
    an unscripted name answers nx-domain."""

    def __init__(self):
        self.answers = {}  # (type, name) -> list, or a DnsError for that type
        self.errors = {}   # name -> DnsError for every type

    def _put(self, rtype, name, value):
        key = _ptr_key(name) if rtype == "ptr" else _dns_name(name)
        self.answers[(rtype, key)] = value
        return self

    def a(self, name, addresses):
        return self._put("a", name, list(addresses))

    def aaaa(self, name, addresses):
        return self._put("aaaa", name, list(addresses))

    def mx(self, name, records):
        """`records`: Mx values or (preference, exchange) pairs; answered
        sorted by preference, as the host does."""
        mxs = [r if isinstance(r, _dns_mod.Mx) else _dns_mod.Mx(preference=r[0], exchange=r[1])
               for r in records]
        return self._put("mx", name, sorted(mxs, key=lambda m: m.preference))

    def txt(self, name, strings):
        return self._put("txt", name, list(strings))

    def ptr(self, ip, names):
        return self._put("ptr", ip, list(names))

    def error(self, name, spec, rtype=None):
        """Answer `spec` ("nx-domain", "no-records", ("temporary", "why"),
        ("invalid", "why")...) for `name`, for one type or all of them."""
        err = _error(_DNS_ERRORS, spec, "scripted failure")
        if rtype is None:
            self.errors[_dns_name(name)] = err
            return self
        return self._put(rtype, name, err)

    def answer(self, rtype, name):
        key = _ptr_key(name) if rtype == "ptr" else _dns_name(name)
        found = self.answers.get((rtype, key))
        if found is None and rtype != "ptr":
            found = self.errors.get(key)
            if found is None and any(n == key for (_, n) in self.answers):
                found = _dns_mod.DnsError_NoRecords()
        if found is None:
            found = _dns_mod.DnsError_NxDomain()
        if isinstance(found, list):
            return list(found)
        raise Err(found)


class Host:
    """The state behind the stand-in import functions. Use the module's
    `host` (one per process) and call `reset()` between tests."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Back to the start: no logs, empty kv, no DNS answers, every
        capability granted, no injected failure, clock at DEFAULT_NOW_MS."""
        self.logs = []           # (log.Level, message, [(key, value)])
        self.now_ms = DEFAULT_NOW_MS
        self.kv = {}             # key -> (value, expires_at_ms or None)
        self.kv_fail = None      # None, "unavailable", "denied", "invalid" or (case, text)
        self.dns = _Dns()
        self.dns_fail = None     # None, "temporary", "denied", ... or (case, text)
        self.dns_queries = []    # (type, name) of every look-up, in order
        self.mail_auth_fail = None
        self.mail_auth = {}      # "check_spf"/"authenticate"/"dkim_sign" -> answer or callable
        self.mail_auth_calls = []
        self.grants = set(CAPABILITIES)
        self.av_scan = None      # scan_message's answer (ScanResult_Clean() by default) or a function
        self.av_scan_fail = None  # "unavailable", "too-large", "denied" or (case, text)
        self.av_scan_calls = 0

    # -- capabilities, clock, logs --

    def grant(self, *capabilities):
        """Grant exactly these capabilities ("kv", "dns", "mail-auth");
        `grant()` grants none. Ungranted calls answer `denied`."""
        unknown = set(capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}")
        self.grants = set(capabilities)

    def advance(self, ms):
        self.now_ms += ms

    def _log(self, level, message, fields):
        self.logs.append((level, message, [tuple(f) for f in fields]))

    def logged(self, substring, level=None):
        """True when a logged message contains `substring` (at `level`, a
        log.Level, when given)."""
        return any(substring in m and (level is None or lv == level) for lv, m, _ in self.logs)

    def messages(self):
        return [m for _, m, _ in self.logs]

    # -- kv (the host's memory store: an entry lives while expiry > now) --

    def _kv_guard(self, key, value=None):
        if "kv" not in self.grants:
            raise Err(_kv_mod.KvError_Denied())
        size = len(key.encode())
        if not 1 <= size <= MAX_KEY:
            raise Err(_kv_mod.KvError_Invalid(f"key length {size} not in 1..={MAX_KEY}"))
        if value is not None and len(value.encode()) > MAX_VALUE:
            raise Err(_kv_mod.KvError_Invalid(
                f"value length {len(value.encode())} exceeds {MAX_VALUE}"))
        if self.kv_fail is not None:
            raise Err(_error(_KV_ERRORS, self.kv_fail, "injected failure"))

    def _live(self, key):
        entry = self.kv.get(key)
        if entry is not None and (entry[1] is None or entry[1] > self.now_ms):
            return entry
        return None

    def _deadline(self, ttl_ms):
        if ttl_ms is None:
            return None
        _check_uint(ttl_ms, 64, "ttl_ms")
        return self.now_ms + max(ttl_ms, 1)  # a zero TTL counts as 1 ms

    def _kv_get(self, key):
        self._kv_guard(key)
        entry = self._live(key)
        return None if entry is None else entry[0]

    def _kv_set(self, key, value, ttl_ms):
        self._kv_guard(key, value)
        self.kv[key] = (value, self._deadline(ttl_ms))

    def _kv_set_if_absent(self, key, value, ttl_ms):
        self._kv_guard(key, value)
        if self._live(key) is not None:
            return False
        self.kv[key] = (value, self._deadline(ttl_ms))
        return True

    def _kv_delete(self, key):
        self._kv_guard(key)
        existed = self._live(key) is not None
        self.kv.pop(key, None)
        return existed

    def _kv_increment(self, key, delta, window_ms):
        """A live counter keeps its expiry; a missing or expired one starts
        at `delta` and lives `window_ms` from now. A non-numeric value counts
        as 0; the sum saturates at the s64 bounds."""
        self._kv_guard(key)
        _check_uint(window_ms, 64, "window_ms")
        if not -(1 << 63) <= delta < 1 << 63:
            raise OverflowError(f"delta: {delta!r} is not an s64")
        entry = self._live(key)
        if entry is None:
            value, expires = delta, self._deadline(window_ms)
        else:
            try:
                current = int(entry[0])
            except ValueError:
                current = 0
            value = max(-(1 << 63), min((1 << 63) - 1, current + delta))
            expires = entry[1]
        self.kv[key] = (str(value), expires)
        return value

    # -- dns --

    def _dns_lookup(self, rtype, name):
        self.dns_queries.append((rtype, name))
        if rtype == "ptr":
            try:
                _ptr_key(name)
            except ValueError:
                raise Err(_dns_mod.DnsError_Invalid(f"{name!r} is not an IP address")) from None
        if "dns" not in self.grants:
            raise Err(_dns_mod.DnsError_Denied())
        if rtype != "ptr" and not 1 <= len(name) <= 254:
            raise Err(_dns_mod.DnsError_Invalid(f"bad name length {len(name)}"))
        if self.dns_fail is not None:
            raise Err(_error(_DNS_ERRORS, self.dns_fail, "injected failure"))
        return self.dns.answer(rtype, name)

    # -- mail-auth (answers are scripted: nothing is verified) --

    def _av_scan(self, message):
        self.av_scan_calls += 1
        if "av-scan" not in self.grants:
            raise Err(_av.ScanError_Denied())
        if self.av_scan_fail is not None:
            raise Err(_error(_AV_SCAN_ERRORS, self.av_scan_fail, "injected failure"))
        if callable(self.av_scan):
            return self.av_scan(message)
        return self.av_scan if self.av_scan is not None else _av.ScanResult_Clean()

    def _mail_auth(self, function, args):
        self.mail_auth_calls.append((function, args))
        if "mail-auth" not in self.grants:
            raise Err(_ma.MailAuthError_Denied())
        if self.mail_auth_fail is not None:
            raise Err(_error(_MAIL_AUTH_ERRORS, self.mail_auth_fail, "injected failure"))
        answer = self.mail_auth.get(function)
        if callable(answer):
            return answer(*args)
        if answer is not None:
            return answer
        return _MAIL_AUTH_DEFAULTS[function](*args)


def _spf_none(domain):
    return _ma.SpfCheck(result=_ma.AuthResult.NONE, domain=domain, explanation=None)


def _default_spf(client_ip, helo, mail_from):
    return _ma.SpfOutcome(helo=_spf_none(helo),
                          mail_from=_spf_none(mail_from.rpartition("@")[2] or helo))


def _default_authenticate(message, client_ip, helo, mail_from):
    none = _ma.DmarcPolicy.NONE
    return _ma.AuthOutcome(
        spf=_default_spf(client_ip, helo, mail_from),
        dkim=[],
        arc=_ma.ArcOutcome(result=_ma.AuthResult.NONE, instances=0, error=None),
        dmarc=_ma.DmarcOutcome(from_domain="", result=_ma.AuthResult.NONE, spf_aligned=False,
                               dkim_aligned=False, record_found=False, policy=none,
                               published_p=none, published_sp=none, pct=100))


_MAIL_AUTH_DEFAULTS = {
    "check_spf": _default_spf,
    "authenticate": _default_authenticate,
    "dkim_sign": lambda message, domain, selector, *rest:
        f"v=1; a=fake; d={domain}; s={selector}; b=fake",
}

host = Host()


# --------------------------------------------------------------------------
# Builders of stage arguments

def address(text: str, local: bool = False, params=()):
    """An EnvelopeAddress as the host hands it over: `text` is the mailbox
    (angle brackets optional), split at its last '@'. "" (or "<>") is the
    null sender; a bare "postmaster" has no domain and is local. `params`:
    EsmtpParam values, "KEYWORD=value"/"KEYWORD" strings, or a dict."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local_part, at, domain = text.rpartition("@")
    if not at:
        local_part, domain = text, ""
    if text.lower() == "postmaster":
        local = True
    return _t.EnvelopeAddress(address=text, local_part=local_part, domain=domain,
                              params=_params(params), is_local=local)


def _params(params):
    if isinstance(params, dict):
        params = [f"{k}={v}" if v is not None else k for k, v in params.items()]
    out = []
    for p in params:
        if isinstance(p, _t.EsmtpParam):
            out.append(p)
        else:
            keyword, eq, value = p.partition("=")
            out.append(_t.EsmtpParam(keyword=keyword.upper(), value=value if eq else None))
    return out


def _as_address(a):
    return address(a) if isinstance(a, str) else a


def session(id="s1", client_ip="192.0.2.1", client_port=40000, client_name=None,
            local_ip="192.0.2.25", local_port=25, listener="smtp",
            server_name="mx.example.org", helo=None, esmtp=None, tls=None, auth_user=None,
            mail_from=None, recipients=(), recipient_count=None, messages_accepted=0):
    """A `Session` whose getters answer these values. `esmtp` defaults to
    whether a `helo` is given; `tls=True` stands for a TLSv1.3 session;
    `mail_from` and `recipients` take address strings or EnvelopeAddress;
    `recipient_count` defaults to len(recipients)."""
    if tls is True:
        tls = _t.TlsInfo(protocol="TLSv1.3", cipher="TLS13_AES_256_GCM_SHA384",
                         client_certificate=False, server_name=None)
    recipients = [_as_address(r) for r in recipients]
    return _t.Session(
        id=id, client_ip=client_ip, client_port=client_port, client_name=client_name,
        local_ip=local_ip, local_port=local_port, listener=listener, server_name=server_name,
        helo=helo, esmtp=helo is not None if esmtp is None else esmtp, tls=tls or None,
        auth_user=auth_user,
        mail_from=None if mail_from is None else _as_address(mail_from),
        recipients=recipients,
        recipient_count=len(recipients) if recipient_count is None else recipient_count,
        messages_accepted=messages_accepted)


def message(raw, crlf=True):
    """A `Message` over an RFC 5322 message (str or bytes). With `crlf`
    (the default) line ends become CRLF, as the host stores what it
    received over SMTP; pass crlf=False to keep the bytes as they are."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _msg.Message(data)


_VERDICT_TAGS = {
    _t.Verdict_Pass: "pass", _t.Verdict_Accept: "accept", _t.Verdict_AcceptWith: "accept-with",
    _t.Verdict_Reject: "reject", _t.Verdict_Defer: "defer", _t.Verdict_Disconnect: "disconnect",
}


def verdict(v):
    """(case, code, enhanced, text) of a Verdict (or of a DataResult's
    verdict); code, enhanced and text are None for pass and accept."""
    if isinstance(v, _t.DataResult):
        v = v.verdict
    tag = _VERDICT_TAGS.get(type(v))
    if tag is None:
        raise TypeError(f"not a verdict: {v!r}")
    reply = getattr(v, "value", None)
    if reply is None:
        return (tag, None, None, None)
    return (tag, reply.code, reply.enhanced, reply.text)


def load_plugin(path, name=None):
    """Import the plugin module at `path` afresh (a new module object each
    call, like the fresh instance the host gives every session)."""
    load_plugin.count = getattr(load_plugin, "count", 0) + 1
    name = name or f"postern_plugin_{load_plugin.count}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
