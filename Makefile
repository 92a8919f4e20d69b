# Postern — build, run and test.
#
#   make run     build everything and start Postern on examples/postern.toml
#   make test    build everything and run every test (what CI runs)
#   make bench   benchmarks against Postfix and smtp-sink (not part of test)
#   make deb     the Debian package, target/debian/postern_*.deb (after make build)

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
VENV := $(TOOLS)/testenv
VPY := $(VENV)/bin/python
WASM_TARGET := wasm32-wasip2

# Rust components: every crate under plugins/, tests/plugins/ and
# examples/plugins/ built as a cdylib.
RUST_PLUGIN_TOMLS := $(shell grep -l 'cdylib' plugins/*/Cargo.toml tests/plugins/*/Cargo.toml \
                       examples/plugins/*/Cargo.toml 2>/dev/null)
RUST_PLUGINS := $(foreach t,$(RUST_PLUGIN_TOMLS),$(shell sed -n 's/^name = "\(.*\)"/\1/p' $(t) | head -1))
# The ones also built for contract 0.1 (a crate using 0.2-only stages says
# `postern: contract-0.2-only` in its Cargo.toml).
RUST_PLUGINS_V01 := $(foreach t,$(shell grep -L 'postern: contract-0.2-only' $(RUST_PLUGIN_TOMLS)),\
                      $(shell sed -n 's/^name = "\(.*\)"/\1/p' $(t) | head -1))
# Plugins in other languages: a folder with a build.sh (the shipped plugins
# first: the examples reuse their toolchains).
SCRIPT_PLUGINS := $(wildcard plugins/*/build.sh) $(wildcard examples/plugins/*/build.sh)

.PHONY: all build host plugins rust-plugins rust-plugins-v01 script-plugins run test test-rust test-e2e test-e2e-v01 \
        test-scripts test-deps venv wasm-target fmt lint clean bench bench-idle bench-deps \
        deb deb-package deb-tools

all: build

build: host plugins

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

host:
	$(CARGO) build --release -p postern

plugins: rust-plugins rust-plugins-v01 script-plugins

rust-plugins: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_PLUGINS))

# The same Rust plugins built for the frozen postern:policy@0.1.0 contract
# (the SDK's contract-0-1 feature), which the host still serves: the e2e
# plugin suites run against them too (test-e2e-v01).
rust-plugins-v01: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) --target-dir target/contract-0.1 \
	  --features postern-sdk/contract-0-1 $(addprefix -p ,$(RUST_PLUGINS_V01))

script-plugins:
	@set -e; for s in $(SCRIPT_PLUGINS); do echo "== $$s"; bash $$s; done

run: build
	./target/release/postern gen-cert --hostname mx.example.test --dir examples/data/tls
	./target/release/postern serve --config examples/postern.toml

venv: $(VENV)/.ready

$(VENV)/.ready: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r tests/requirements.txt
	touch $@

test: build venv test-deps deb-tools test-rust test-scripts test-e2e test-e2e-v01

test-rust:
	$(CARGO) test --release --workspace

test-scripts:
	@set -e; for d in plugins/*/ examples/plugins/*/; do \
	  if [ -f $$d/package.json ] && [ -n "$$(ls $$d/*.test.js $$d/*.test.mjs 2>/dev/null)" ]; then (cd $$d && node --test); fi; \
	  if ls $$d/test_*.py >/dev/null 2>&1; then (cd $$d && $(PYTHON) -m unittest discover -p 'test_*.py'); fi; \
	done

test-e2e: venv
	$(VPY) -m pytest -q -n 2 tests/e2e

# The plugin suites again with the 0.1 builds: a 0.1 component and its 0.2
# rebuild must give the same verdicts.
E2E_V01 := $(wildcard tests/e2e/test_plugin_*.py) tests/e2e/test_check.py tests/e2e/test_reload.py
test-e2e-v01: venv
	POSTERN_CONTRACT=0.1 $(VPY) -m pytest -q -n 2 $(E2E_V01)

# Throughput against Postfix and smtp-sink, plugin latency, memory (bench/README.md):
# the receive job (accept and store) and the relay job (accept and relay to
# one SMTP sink, timed until the sink has every message), with the ratios of both.
# BENCH_ARGS passes options to bench/run.py, e.g. BENCH_ARGS=--quick,
# BENCH_ARGS="--jobs relay" or BENCH_ARGS="--messages 50000 --rounds 5 --perf";
# BENCH_MESSAGES, BENCH_ROUNDS, BENCH_SESSIONS, BENCH_JOBS also work. The
# idle-connection check: `make bench-idle`.
BENCH_ARGS ?=

bench: build bench-deps
	$(PYTHON) bench/run.py $(BENCH_ARGS)

bench-idle: build
	$(PYTHON) bench/idle.py $(BENCH_IDLE_ARGS)

# Debian packages, installed with apt when a command (or Perl module) they
# provide is missing. Postfix is installed without configuring a mail system.
# $(call apt-install,PACKAGES): install them (as root, or through sudo).
define apt-install
SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections || true; \
$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1)
endef

# What the end-to-end tests run as real peers and probes: swaks (with TLS),
# Postfix's smtp-sink/smtp-source, nmap's SMTP scripts, openssl s_client;
# strace (the unit's system-call filter test); redis-server; the milters
# (opendkim, clamav-milter with clamd, rspamd), started by the tests with
# their own configurations and signature data (nothing is downloaded);
# unbound, the validating resolver of the DANE tests (run on a loopback port
# with the test zones' trust anchors only).
test-deps:
	@need=""; \
	command -v swaks >/dev/null || need="$$need swaks"; \
	perl -MNet::SSLeay -MIO::Socket::SSL -e1 2>/dev/null || need="$$need libnet-ssleay-perl libio-socket-ssl-perl"; \
	command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || need="$$need postfix"; \
	command -v nmap >/dev/null || need="$$need nmap"; \
	command -v openssl >/dev/null || need="$$need openssl"; \
	command -v strace >/dev/null || need="$$need strace"; \
	command -v opendkim-testmsg >/dev/null || [ -x /usr/sbin/opendkim-testmsg ] || need="$$need opendkim-tools"; \
	command -v redis-server >/dev/null || need="$$need redis-server"; \
	command -v opendkim >/dev/null || [ -x /usr/sbin/opendkim ] || need="$$need opendkim"; \
	command -v clamd >/dev/null || [ -x /usr/sbin/clamd ] || need="$$need clamav-daemon"; \
	command -v clamav-milter >/dev/null || [ -x /usr/sbin/clamav-milter ] || need="$$need clamav-milter"; \
	command -v rspamd >/dev/null || need="$$need rspamd"; \
	command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || need="$$need unbound"; \
	if [ -n "$$need" ]; then echo "== installing$$need"; $(call apt-install,$$need); fi

# Postfix (smtp-source, smtp-sink, and the instance we compare with), from Debian.
bench-deps:
	@if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then \
	  $(call apt-install,postfix); \
	fi
	@command -v redis-server >/dev/null || { $(call apt-install,redis-server); }
	@command -v clamd >/dev/null || [ -x /usr/sbin/clamd ] || { $(call apt-install,clamav-daemon); }

# The Debian package: the release build as it is (nothing is rebuilt), the
# components and /etc/postern/postern.toml staged by packaging/stage_deb.py,
# the unit and maintainer scripts from packaging/. DEB_FLAGS passes options to
# cargo-deb (the package test uses --fast: lighter compression).
CARGO_DEB_VERSION := 3.8.0
CARGO_DEB := $(TOOLS)/bin/cargo-deb
DEB_FLAGS ?=

deb: build deb-package

deb-package: deb-tools
	$(PYTHON) packaging/stage_deb.py
	$(CARGO_DEB) -p postern --no-build --strip $(DEB_FLAGS)

# cargo-deb (into .tools/, pinned) and the Debian tools the package build and
# its test use: dpkg-shlibdeps (dependencies), strip, adduser and
# deb-systemd-helper (maintainer scripts), setpriv and runuser (the test).
deb-tools:
	@$(CARGO_DEB) --version 2>/dev/null | grep -qF ' $(CARGO_DEB_VERSION)' || \
	  $(CARGO) install --locked --root $(TOOLS) cargo-deb --version $(CARGO_DEB_VERSION)
	@need=""; \
	command -v dpkg-shlibdeps >/dev/null || need="$$need dpkg-dev"; \
	command -v strip >/dev/null || need="$$need binutils"; \
	[ -x /usr/sbin/adduser ] || need="$$need adduser"; \
	command -v deb-systemd-helper >/dev/null || need="$$need init-system-helpers"; \
	command -v setpriv >/dev/null || need="$$need util-linux"; \
	if [ -n "$$need" ]; then echo "== installing$$need"; $(call apt-install,$$need); fi

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_PLUGINS)) -- -D warnings

clean:
	$(CARGO) clean
	rm -rf examples/data
