#!/usr/bin/env python3
"""Joins the loopback of two network namespaces, port by port, without any other address:
listens on 127.0.0.1:PORT inside network namespace NETNS and relays each connection to
127.0.0.1:PORT in the namespace this process started in.

    ns-relay.py NETNS_PATH PORT [PORT ...]

A second e2e node lives in a network namespace of its own (e2e/cluster.sh up --node), so its
hostNetwork Pods have their own ports; this relay lets them reach the API server and the KSM
test server on 127.0.0.1, as the first node's Pods do. Runs until killed.
"""

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, port):
    while True:
        client, _ = listener.accept()
        # A socket stays in the namespace it was created in; this thread is at home.
        upstream = socket.socket()
        try:
            upstream.connect(("127.0.0.1", port))
        except OSError:
            client.close()
            upstream.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    home_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    target_fd = os.open(sys.argv[1], os.O_RDONLY)
    ports = [int(p) for p in sys.argv[2:]]
    # setns applies to the calling thread only: make the listeners there, then come home.
    setns(target_fd)
    listeners = []
    for port in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        listeners.append((s, port))
    # Threads start in the namespace of the thread that makes them: home again.
    setns(home_fd)
    threads = [threading.Thread(target=serve, args=(s, port), daemon=True) for s, port in listeners]
    for t in threads:
        t.start()
    print("relaying", " ".join(map(str, ports)), flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
