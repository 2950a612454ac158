"""The HTTP layer under python-telegram-bot: aiohttp instead of the default httpx.

Why: a Bot API request cost about 1.2 ms of CPU through httpx (httpcore re-checks every pooled
connection on each request) and about 0.2 ms through aiohttp, whose HTTP parser is compiled. The bot's
sends share one interpreter lock with everything else it does, so that difference is most of a message's
cost in a burst of reminders.

The sender must know whether a failed request may have reached Telegram (a lost answer means the
message may be delivered; a refused connection means it was not): the error raised carries it, and
`reached_telegram` reads it. aiohttp's error messages contain the request URL, and the URL contains the
bot's token: the errors raised here say what happened without it.

Where httpx and aiohttp behave differently by default, this keeps httpx's behaviour, which
python-telegram-bot was built on: proxies from the environment, certifi's certificates, no redirects.
"""

from __future__ import annotations

import re
import ssl
import urllib.request
from typing import Any

import aiohttp
import certifi
from telegram._utils.defaultvalue import DefaultValue  # the sentinel type of DEFAULT_NONE (as HTTPXRequest)
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

USER_AGENT = BaseRequest.USER_AGENT

# Errors raised before the request left: it was not sent. (ClientConnectorError is a ClientOSError and
# ConnectionTimeoutError a TimeoutError: these are checked first.)
_NOT_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_TOKEN_IN_URL = re.compile(r"/bot[^/\s'\"]+")
REACHED = "aftercare_reached_telegram"  # the attribute of a raised error that says whether the request may have arrived


def reached_telegram(exc: BaseException) -> bool | None:
    """True if the failed request may have been received, False if it certainly was not, None if not known."""
    reached = getattr(exc, REACHED, None)
    return reached if isinstance(reached, bool) else None


def _stale_connection(err: aiohttp.ClientError) -> bool:
    """A pooled keep-alive connection the server had closed: writing the request failed, nothing left."""
    return isinstance(err, aiohttp.ClientOSError) and isinstance(
        err.__cause__ or err.__context__, aiohttp.ClientConnectionResetError
    )


def _without_token(text: str) -> str:
    return _TOKEN_IN_URL.sub("/bot<token>", text)


class AiohttpRequest(BaseRequest):
    """`BaseRequest` over one aiohttp session (a pool of keep-alive connections)."""

    def __init__(
        self,
        *,
        connection_pool_size: int = 1,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._timeouts = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
        }
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            certificates = ssl.create_default_context(cafile=certifi.where())
            connector = aiohttp.TCPConnector(limit=self._pool_size, enable_cleanup_closed=True, ssl=certificates)
            # Proxies from the environment, as httpx reads them; looking them up costs on every request, so
            # only when one is set.
            proxied = bool(urllib.request.getproxies())
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=proxied
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        read = self._pick(read_timeout, "read")
        write = self._pick(write_timeout, "write")
        connect = self._pick(connect_timeout, "connect")
        pool = self._pick(pool_timeout, "pool")
        # aiohttp has no write timeout of its own: the socket read timeout covers waiting for the answer
        # after the body went out, so the longer of the two stands for both.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=max((t for t in (read, write) if t is not None), default=None),
        )
        for attempt in (1, 2):
            try:
                async with self._session.request(
                    method, url, data=_body(request_data), timeout=timeout, allow_redirects=False
                ) as response:
                    return response.status, await response.read()
            except aiohttp.ConnectionTimeoutError:
                error: Exception = TimedOut("Timed out connecting: the request was not sent")
                reached = False
            except TimeoutError:
                error, reached = TimedOut("Timed out waiting for Telegram's answer"), True
            except aiohttp.ClientError as err:
                if attempt == 1 and _stale_connection(err):
                    continue  # the request never left: send it once more, on a fresh connection
                reached = not isinstance(err, _NOT_SENT) and not _stale_connection(err)
                error = NetworkError(f"aiohttp.{type(err).__name__}: {_without_token(str(err))}")
            setattr(error, REACHED, reached)
            raise error from None  # aiohttp's own error names the URL, with the token in it
        raise AssertionError("unreachable")

    def _pick(self, value: ODVInput[float], name: str) -> float | None:
        return self._timeouts[name] if isinstance(value, DefaultValue) else value


def _body(request_data: RequestData | None) -> Any:
    """Form fields as Telegram takes them; a multipart form when a file is attached."""
    if request_data is None:
        return None
    files = request_data.multipart_data
    if not files:
        return request_data.json_parameters
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, part in files.items():
        filename, content, *rest = part if isinstance(part, tuple) else (name, part)
        data = content.read() if hasattr(content, "read") else content
        form.add_field(name, data, filename=filename, content_type=rest[0] if rest else None)
    return form
