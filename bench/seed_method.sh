#!/usr/bin/env bash
# The seed's method scaled up: one `ip` process per step, N containers on one bridge.
# Everything lives in namespaces named bls-<tag>-*: the machine's own namespace is untouched.
#   seed_method.sh up TAG N   |   seed_method.sh down TAG N
set -euo pipefail
verb=$1 tag=$2 n=$3
H="bls-$tag-host"
if [ "$verb" = up ]; then
  ip netns add "$H"
  ip -n "$H" link add br0 type bridge
  ip -n "$H" link set br0 up
  ip -n "$H" addr add 10.88.0.1/16 dev br0
  for i in $(seq 1 "$n"); do
    c="bls-$tag-c$i"
    ip netns add "$c"
    ip -n "$H" link add "veth$i" type veth peer name "eth$i"
    ip -n "$H" link set "eth$i" netns "$c"
    ip -n "$c" addr add "10.88.$((i / 250)).$((i % 250 + 2))/16" dev "eth$i"
    ip -n "$c" link set "eth$i" up
    ip -n "$H" link set "veth$i" up
    ip -n "$c" link set lo up
    ip -n "$H" link set "veth$i" master br0
    ip -n "$c" route add default via 10.88.0.1
  done
else
  for i in $(seq 1 "$n"); do ip netns del "bls-$tag-c$i"; done
  ip netns del "$H"
fi
