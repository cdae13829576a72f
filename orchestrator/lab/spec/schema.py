"""The keys each part of a topology file takes (1: required, 0: optional). The topology keys the
issues spell out are the user-facing contract: renaming one breaks every file that uses it."""

SCHEMA: dict[str, dict[str, int]] = {
    "": {"lab": 1, "bridge": 0, "networks": 0, "uplink": 1, "containers": 1, "links": 0, "ports": 0,
         "sandbox": 0, "expect": 0, "hosts": 0},
    "bridge": {"name": 0, "subnet": 1, "gateway": 0, "subnet6": 0, "gateway6": 0, "nat6": 0, "mtu": 0},
    "networks[]": {"name": 1, "bridge": 0, "subnet": 0, "gateway": 0, "internal": 0, "mtu": 0, "subnet6": 0,
                   "gateway6": 0, "nat6": 0, "vni": 0},
    "uplink": {"name": 1, "address": 0, "gateway": 0, "address6": 0, "gateway6": 0},   # address: 1 unless hosts:
    "hosts[]": {"name": 1, "address": 1, "address6": 0},
    "containers[]": {"name": 1, "address": 0, "address6": 0, "interface": 0, "host_interface": 0, "networks": 0,
                     "services": 0, "forwarding": 0, "routes": 0, "netem": 0, "host": 0},
    "attachments[]": {"network": 1, "address": 0, "address6": 0, "interface": 0, "host_interface": 0, "netem": 0},
    "routes[]": {"dst": 1, "via": 1},
    "services[]": {"kind": 1, "port": 0, "argv": 0, "protocol": 0, "name": 0},
    "links[]": {"endpoints": 1, "addresses": 0, "addresses6": 0, "netem": 0, "mtu": 0},
    "netem": {"delay": 0, "jitter": 0, "loss": 0, "rate": 0, "corrupt": 0, "duplicate": 0, "at": 0},
    "ports[]": {"host_port": 1, "to": 1, "protocol": 0, "host_ip": 0},
    "expect[]": {"name": 0, "from": 1, "to": 1, "proto": 0, "result": 0},
    "sandbox": {"client": 0, "internet": 0, "upstream": 0, "client6": 0, "internet6": 0, "upstream6": 0},
}
