"""A WebDAV server on 127.0.0.1 (wsgidav on cheroot) serving a directory: the DVC remote of the distributed sweep's
test. `python webdav_server.py ROOT PORT_FILE` writes the port it bound to PORT_FILE, then serves until killed.

wsgidav's file provider writes a PUT's body to its final path as it arrives, so an uploader killed mid-file would
leave a truncated object under its content address, which DVC then trusts. A WebDAV server fit for a DVC remote
writes an object only once its whole body arrived (nginx's and Apache's DAV modules write a temporary file and rename
it); `whole_bodies` gives this one that behaviour: it reads each PUT's body first and refuses an incomplete one.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp


def whole_bodies(app: Callable) -> Callable:
    """WSGI middleware: hand a PUT to the app only with its complete body (Content-Length bytes, or a chunked body
    the server parsed to its end); answer 400 otherwise, having written nothing."""

    def wrapped(environ, start_response):
        if environ["REQUEST_METHOD"] == "PUT":
            length = environ.get("CONTENT_LENGTH") or ""
            try:
                body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
            except Exception:  # the client went away mid-body (cheroot raises on a cut chunked stream)
                body = None
            if body is None or (length and len(body) != int(length)):
                start_response("400 Bad Request", [("Content-Length", "0")])
                return [b""]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return app(environ, start_response)

    return wrapped


def main() -> None:
    root, port_file = Path(sys.argv[1]), Path(sys.argv[2])
    root.mkdir(parents=True, exist_ok=True)
    app = WsgiDAVApp({
        "provider_mapping": {"/": str(root)},
        "simple_dc": {"user_mapping": {"*": True}},  # anonymous read and write: a test server on 127.0.0.1
        "verbose": 0, "logging": {"enable": False},
    })
    server = wsgi.Server(("127.0.0.1", 0), whole_bodies(app), numthreads=8)
    server.prepare()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.bind_addr[1]))
    tmp.replace(port_file)  # whoever waits for the file sees a whole port number
    server.serve()


if __name__ == "__main__":
    main()
