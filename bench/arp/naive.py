"""The naive baseline of bench/arp: the smallest Python ARP responder there is.

    python bench/arp/naive.py IFACE MAC TARGET

One blocking AF_PACKET socket (ETH_P_ARP), ``recv`` one frame, answer "who-has TARGET" with a reply
built by concatenation, ``send`` it. No event loop, no rings, no validation, no rate limit, no VIP set:
what a Python responder costs at the very least on this machine (its wake-up latency, one recv and
one send per frame). Only for the benchmark's namespaces (TEST-NET addresses); it runs until killed.
"""

from __future__ import annotations

import socket
import sys

ETH_P_ARP = 0x0806
SO_RCVBUFFORCE = 33


def main() -> None:
    ifname, mac_text, target = sys.argv[1], sys.argv[2], sys.argv[3]
    mac = bytes.fromhex(mac_text.replace(":", ""))
    tpa = socket.inet_aton(target)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((ifname, ETH_P_ARP))
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 2 << 20)
    head = b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x02" + mac + tpa
    while True:
        f = s.recv(2048)
        if f[20:22] == b"\x00\x01" and f[38:42] == tpa:
            sha = f[22:28]
            s.send(sha + mac + head + sha + f[28:32] + b"\x00" * 18)


if __name__ == "__main__":
    main()
