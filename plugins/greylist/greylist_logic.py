"""Greylisting policy logic (RFC 6647), free of any WebAssembly binding.

The component entry point (`app.py`) adapts the host's `kv`, `clock` and
`log` imports to the small interfaces used here, so this module can be
unit-tested with plain CPython (`python3 -m unittest`). Input: the operator's
configuration (trusted, but validated precisely) and the session facts the
host reports (client address, envelope addresses; untrusted text).
"""

import ipaddress
import json
import math

DEFAULTS = {
    "delay": 300,
    "retry_window": 86400,
    "pass_ttl": 36 * 86400,
    "whitelist_networks": ["127.0.0.0/8", "::1/128"],
    "skip_authenticated": True,
    # What a failed kv call does: "tempfail" defers the recipient, "allow"
    # passes it without greylisting (the spelling every shipped plugin uses).
    "on_kv_error": "tempfail",
}

ON_KV_ERROR = ("tempfail", "allow")

DEFER_CODE = 451
DEFER_ENHANCED = "4.7.1"
UNAVAILABLE_TEXT = "Greylisting temporarily unavailable"


class ConfigError(ValueError):
    """The configuration is refused; the message names the offending keys."""


class KvFailure(Exception):
    """The key-value store refused or failed (denied, unavailable, invalid)."""


def kv_failure(kind, detail=None):
    """The KvFailure for a host kv-error: `kind` is "denied", "unavailable" or
    "invalid". `denied` tells the operator what to grant."""
    if kind == "denied":
        return KvFailure('kv denied: capability not granted (add capabilities = ["kv"])')
    return KvFailure(f"kv {kind}: {detail}" if detail else f"kv {kind}")


class Config:
    def __init__(self, delay, retry_window, pass_ttl, whitelist, skip_authenticated,
                 on_kv_error="tempfail"):
        self.delay = delay
        self.retry_window = retry_window
        self.pass_ttl = pass_ttl
        self.whitelist = whitelist
        self.skip_authenticated = skip_authenticated
        self.on_kv_error = on_kv_error


def _seconds(name, value, minimum):
    # bool is an int subclass in Python: `delay = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number of seconds, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_config(text):
    """Parse the `[plugin.config]` table (a JSON object) into a Config."""
    try:
        raw = json.loads(text) if text and text.strip() else {}
    except ValueError as e:
        raise ConfigError(f"configuration is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("configuration must be a table")
    unknown = sorted(k for k in raw if k not in DEFAULTS)
    if unknown:
        raise ConfigError(
            "unknown configuration key(s): "
            + ", ".join(unknown)
            + " (known: "
            + ", ".join(sorted(DEFAULTS))
            + ")"
        )
    merged = dict(DEFAULTS)
    merged.update(raw)
    delay = _seconds("delay", merged["delay"], 0)
    retry_window = _seconds("retry_window", merged["retry_window"], 1)
    pass_ttl = _seconds("pass_ttl", merged["pass_ttl"], 1)
    if retry_window <= delay:
        raise ConfigError(
            f"retry_window ({retry_window}) must be longer than delay ({delay}), "
            "or no retry could ever pass"
        )
    nets = merged["whitelist_networks"]
    if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
        raise ConfigError("whitelist_networks must be a list of CIDR strings")
    whitelist = []
    for n in nets:
        try:
            whitelist.append(ipaddress.ip_network(n.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"whitelist_networks: {n!r} is not a CIDR network") from None
    skip = merged["skip_authenticated"]
    if not isinstance(skip, bool):
        raise ConfigError(f"skip_authenticated must be true or false, got {skip!r}")
    on_kv_error = merged["on_kv_error"]
    if not isinstance(on_kv_error, str) or on_kv_error not in ON_KV_ERROR:
        raise ConfigError(
            'on_kv_error must be "tempfail" or "allow", got ' + json.dumps(on_kv_error)
        )
    return Config(delay, retry_window, pass_ttl, whitelist, skip, on_kv_error)


def _address(text):
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket is still an IPv4 client.
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_network(ip_text):
    """The client's network as greylisting sees it: the /24 of an IPv4
    address, the /64 of an IPv6 one. Unparseable text is used as is."""
    ip = _address(ip_text)
    if ip is None:
        return ip_text.strip().lower()
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def is_whitelisted(ip_text, networks):
    ip = _address(ip_text)
    if ip is None:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


def triplet_key(network, sender, recipient):
    """kv key of a triplet; the null sender `<>` is the empty string."""
    return f"triplet:{network}|{sender.lower()}|{recipient.lower()}"


# Verdicts, as plain tuples the entry point maps onto the WIT variant.
PASS = ("pass",)


def defer(text):
    return ("defer", DEFER_CODE, DEFER_ENHANCED, text)


def greylisted(seconds):
    return defer(f"Greylisted, please try again in {seconds} seconds")


class Greylist:
    """Decides one RCPT TO. `kv` offers get(key) -> str|None,
    set(key, value, ttl_ms) and set_if_absent(key, value, ttl_ms) -> bool,
    each raising KvFailure; `log(level, message, fields)` writes a log line."""

    def __init__(self, config, kv, log):
        self.config = config
        self.kv = kv
        self.log = log

    def check(self, client_ip, auth_user, sender, recipient, now_ms):
        c = self.config
        if c.skip_authenticated and auth_user:
            return PASS
        if is_whitelisted(client_ip, c.whitelist):
            return PASS
        key = triplet_key(client_network(client_ip), sender, recipient)
        try:
            return self._decide(key, now_ms)
        except KvFailure as e:
            if c.on_kv_error == "allow":
                self.log("warn", 'greylisting unavailable, passing (on_kv_error = "allow")',
                         [("error", str(e)), ("key", key)])
                return PASS
            self.log("warn", "greylisting unavailable, deferring", [("error", str(e)), ("key", key)])
            return defer(UNAVAILABLE_TEXT)

    def _decide(self, key, now_ms):
        c = self.config
        delay_ms = c.delay * 1000
        seen = self.kv.get(key)
        first = _parse_ms(seen)
        if first is None:
            if self.kv.set_if_absent(key, str(now_ms), c.retry_window * 1000):
                if c.delay == 0:
                    return self._known(key, now_ms, now_ms)
                self.log("info", "greylisted new triplet", [("key", key)])
                return greylisted(c.delay)
            # Another session stored it first (or an unreadable value sits
            # there): that first sight wins.
            first = _parse_ms(self.kv.get(key))
            if first is None:
                self.kv.set(key, str(now_ms), c.retry_window * 1000)
                first = now_ms
        waited = now_ms - first
        if waited < delay_ms:
            remaining = max(1, math.ceil((delay_ms - waited) / 1000))
            self.log("info", "greylisted early retry", [("key", key), ("retry_in", str(remaining))])
            return greylisted(remaining)
        return self._known(key, first, now_ms)

    def _known(self, key, first, now_ms):
        # A retry after the delay: remember the triplet for pass_ttl so it
        # passes at once from now on. `pass`, never `accept`: relay control
        # and mailbox checks further down the chain must still apply.
        self.kv.set(key, str(first), self.config.pass_ttl * 1000)
        return PASS


def _parse_ms(value):
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None
