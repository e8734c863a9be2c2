"""``convolab serve``: the explorer -- a local web app over runs, zoo models and spec networks (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from convolab.cli._common import HelpFormatter, positive_float, positive_int

HELP = "the explorer: runs, feature maps, receptive fields, attributions and graphs in the browser"

__all__ = ["register", "run", "bind_socket"]


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", help=HELP, formatter_class=HelpFormatter,
        description="Start the explorer, a local web app: the runs under each RUN folder (live curves while one "
                    "trains), any image through a model (class probabilities, every layer's feature maps, the "
                    "receptive field of a unit, the convolution's arithmetic), attributions, kernels and the "
                    "architecture as a graph. Zoo models (zoo:NAME) and spec networks (spec:...) are served with "
                    "fresh weights, so nothing has to be trained first. Listens on 127.0.0.1 unless --host says "
                    "otherwise; Ctrl-C stops it.",
        epilog="examples:\n  convolab serve runs/            # every run below runs/ (4 levels deep)\n"
               "  convolab serve runs/demo --open  # one run, and open the browser\n"
               "  convolab serve                   # zoo and spec models only\n"
               "  convolab serve runs/ --port 0    # any free port (the printed line says which)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="a run directory, or a folder holding runs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the explorer, and the runs, to the network)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--open", action="store_true", help="open the explorer in the web browser")
    p.add_argument("--max-upload-mb", type=positive_float, default=16.0, metavar="MB",
                   help="largest request body (an uploaded image) accepted; larger ones get 413")
    p.add_argument("--workers", type=positive_int, default=2, metavar="N",
                   help="model computations at a time (more wait briefly, then get 503 'busy, retry')")
    p.set_defaults(func=run)
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ValueError: the port is taken, not allowed, or the host is not an address of this machine (one line).
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: expected 0..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: not an address this machine can listen on ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # a restarted server may reuse a port in TIME_WAIT; never one that is listening
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use; pick another with --port (or --port 0 for any free "
                             "one)") from None
        if e.errno == errno.EACCES:
            raise ValueError(f"port {port} on {host}: not allowed for this user; use a port above 1023") from None
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Check the folders, bind the port, print the address and serve until Ctrl-C."""
    from pathlib import Path

    import uvicorn

    from convolab.serve.app import create_app
    from convolab.serve.sources import discover_runs

    folders = [Path(r) for r in args.runs]
    app = create_app(folders, max_upload_mb=args.max_upload_mb, workers=args.workers)
    n = len(discover_runs(folders))
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}"
    print(f"convolab explorer: {url}  ({n} run{'s' if n != 1 else ''}; Ctrl-C to stop)", flush=True)
    if not _loopback(args.host):
        print(f"convolab serve: note: listening on {args.host}, so other machines can reach the explorer and read "
              "the served runs' logs and models (no login); --host 127.0.0.1 keeps it local", file=sys.stderr)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                            ws="none", lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then passes Ctrl-C on: stopping is the normal end
        pass
    finally:
        sock.close()
    return 0
