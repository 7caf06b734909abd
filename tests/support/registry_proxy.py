"""A forward proxy that gives a network namespace a way to the package registries and nowhere
else, without changing the root network namespace (for tests/fresh-machine.sh).

It listens on 127.0.0.1:PORT *inside* the namespace (the listening socket is made by a thread
that entered it) and connects out from this process's own namespace. It serves `CONNECT host:443`
(pip's HTTPS) and plain `GET http://host/...` (apt), for the hosts named by --allow only, one
request per connection.

    python3 tests/support/registry_proxy.py --netns /run/netns/NAME --port 3128 \\
        --allow deb.debian.org pypi.org files.pythonhosted.org
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def listen_inside(netns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port of the namespace at path netns."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:  # setns moves only this thread, which ends right after
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            server = socket.create_server(("127.0.0.1", port), backlog=64)
            made.append(server)
        except BaseException as exc:  # handed to the caller
            made.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def read_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk or len(head) > 65536:
            raise ConnectionError("incomplete request")
        head += chunk
    return head


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def serve(client: socket.socket, allowed: set[str]) -> None:
    with client:
        try:
            head = read_head(client)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
            elif target.startswith("http://"):
                host, port = target[len("http://"):].split("/", 1)[0], "80"
                if ":" in host:
                    host, port = host.rsplit(":", 1)
            else:
                raise ConnectionError(f"unsupported request {method} {target}")
            if host not in allowed:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                print(f"registry-proxy: refused {method} {target}", file=sys.stderr)
                return
            upstream = socket.create_connection((host, int(port)), timeout=60)
        except (OSError, ValueError) as exc:
            print(f"registry-proxy: {exc}", file=sys.stderr)
            return
        with upstream:
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
            else:  # one request per connection: the server closes after its answer
                lines = [line for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                         if not line.lower().startswith((b"connection:", b"proxy-connection:",
                                                         b"keep-alive:"))]
                rest = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"
            upstream.sendall(rest)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            if method == "CONNECT":
                pump(client, upstream)
            back.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="path of the namespace, /run/netns/NAME")
    parser.add_argument("--port", type=int, default=3128)
    parser.add_argument("--allow", nargs="+", required=True, help="host names it may reach")
    args = parser.parse_args()
    server = listen_inside(args.netns, args.port)
    allowed = set(args.allow)
    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client, allowed), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
