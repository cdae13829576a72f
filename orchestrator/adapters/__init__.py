"""The kernel edge, one adapter per subsystem: network namespaces (netns.py), rtnetlink through
pyroute2 (rtnl.py), nftables through libnftables (nft.py), foreign forward chains (forward.py),
sysctls (sysctl.py), the containers' processes (services.py)."""
