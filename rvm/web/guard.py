"""What our local servers (`rvm web --serve`, `rvm live --page`) accept from a browser.

A server on 127.0.0.1 is reachable from every web page the user visits: a page may POST to it cross-origin (a
"simple" request with `Content-Type: text/plain` needs no preflight), and through DNS rebinding a page whose host name
resolves to 127.0.0.1 is even same-origin with it. So:
- the `Host` header must name the address the server is bound to (for a loopback server: 127.0.0.1, localhost or
  [::1], with its port); a server bound to every address (`--host 0.0.0.0`) was opened to the network on purpose and
  accepts any host name;
- a state-changing request (anything but GET and HEAD) must come from the page's own origin: an `Origin` header,
  when the client sends one (browsers do), must be one of the server's own origins, and `Sec-Fetch-Site` must not
  say cross-site. Clients that are not browsers (curl, OBS's Browser Source loading the page) send neither.
"""
import ipaddress
from typing import Optional
from urllib.parse import urlparse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SAFE_METHODS = ("GET", "HEAD")


def _allowed_hosts(bound_host: str, port: int) -> Optional[set]:
    """The Host headers a server bound to `bound_host`:`port` answers, or None for any (a wildcard address)."""
    try:
        address = ipaddress.ip_address(bound_host)
    except ValueError:  # bound by name
        names = {bound_host}
    else:
        if address.is_unspecified:
            return None
        names = set(LOOPBACK_NAMES) if address.is_loopback else {bound_host if address.version == 4
                                                                  else f"[{bound_host}]"}
    return {f"{name}:{port}" for name in names} | ({name for name in names} if port == 80 else set())


def refusal(method: str, headers, bound_host: str, port: int) -> Optional[str]:
    """Why this request must be refused (403), or None to serve it."""
    allowed = _allowed_hosts(bound_host, port)
    host = (headers.get("Host") or "").lower()
    if allowed is not None and host not in allowed:
        return f"Host {host or '(none)'} is not this server's address ({', '.join(sorted(allowed))})"
    if method in SAFE_METHODS:
        return None
    origin = headers.get("Origin")
    if origin is not None:
        parsed = urlparse(origin)
        if parsed.scheme != "http" or (allowed is not None and parsed.netloc.lower() not in allowed) or (
                allowed is None and parsed.netloc.lower() != host):
            return f"cross-origin {method} from {origin} refused"
    if (headers.get("Sec-Fetch-Site") or "").lower() == "cross-site":
        return f"cross-site {method} refused"
    return None


class Guarded:
    """A request handler mixin (http.server): `refused()` answers 403 with the reason when `refusal` names one."""

    def refused(self) -> bool:
        host, port = self.server.server_address[:2]
        reason = refusal(self.command, self.headers, str(host), int(port))
        if reason is not None:
            self.send_error(403, reason)
        return reason is not None
