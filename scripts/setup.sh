#!/usr/bin/env bash
# Bootstrap a fresh Debian 12 machine (as root) for bridgelab; idempotent, quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PKGS=(python3 python3-venv python3-bpfcc python3-nftables bpftool nftables iptables conntrack
          tcpdump iputils-ping iproute2 iperf3 curl procps linux-headers-amd64 prometheus graphviz chromium
          traceroute containernetworking-plugins)   # CNI: a peer in bench/build_teardown.py

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  # prometheus is for the tests' own throwaway server: its Debian service must not start (or
  # listen on :9090) because we installed it; policy-rc.d says so to invoke-rc.d, then goes
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
fi

# The venv uses Debian's python3, the one python3-bpfcc and python3-nftables are built for.
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for mod in bcc nftables; do   # just these two from Debian, not all of dist-packages
  [ -e "$site/$mod" ] || ln -s "/usr/lib/python3/dist-packages/$mod" "$site/$mod"
done
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# bcc reads tracepoint formats from tracefs; this kernel does not mount it at boot.
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi
# `bridgelab doctor` reports the lockdown mode from securityfs.
if [ ! -e /sys/kernel/security/lockdown ] && grep -qw securityfs /proc/filesystems; then
  mount -t securityfs none /sys/kernel/security 2>/dev/null || true
fi
# bcc wants a kernel headers tree; there is none for this kernel, Debian's 6.1 headers serve for
# uapi headers only (our probes never use kernel-internal struct layouts from them).
build="/lib/modules/$(uname -r)/build"
if [ ! -e "$build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  if [ -n "$hdr" ]; then
    mkdir -p "/lib/modules/$(uname -r)"
    ln -sfn "$hdr" "$build"
    [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$(uname -r)/source"
  fi
fi
# `ip route` names our routes' protocol (177) "bridgelab" instead of a number
if [ -d /etc/iproute2 ] && ! cmp -s orchestrator/data/rt_protos.d/bridgelab.conf /etc/iproute2/rt_protos.d/bridgelab.conf; then
  install -D -m 0644 orchestrator/data/rt_protos.d/bridgelab.conf /etc/iproute2/rt_protos.d/bridgelab.conf
fi
