"""The host's [::1] for published ports. IPv4 reaches 127.0.0.1:PORT through DNAT because the
bridge has route_localnet=1; IPv6 has nothing like it: a reply de-NATed to ::1 arriving on the
bridge is dropped (RFC 4291: a loopback address never on a wire), so a connection to
[::1]:PORT could never complete. As Docker does with its userland proxy, one small process of
the lab's listens on [::1] for every port published there and relays to the container."""
