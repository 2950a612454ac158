"""The HTTP layer under python-telegram-bot: aiohttp instead of the default httpx.

Why: a Bot API request cost about 1.2 ms of CPU through httpx (httpcore re-checks every pooled
connection on each request) and about 0.2 ms through aiohttp, whose HTTP parser is compiled. The bot's
sends share one interpreter lock with everything else it does, so that difference is most of a message's
cost in a burst of reminders.

The sender must know whether a failed request may have reached Telegram (a lost answer means the
message may be delivered; a refused connection means it was not): `reached_telegram` says so from the
aiohttp error that caused it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue  # the sentinel type of DEFAULT_NONE (as HTTPXRequest)
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

USER_AGENT = BaseRequest.USER_AGENT

# Errors raised before the request left: it was not sent.
_NOT_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Errors raised once it may have been read by the server: the answer was lost, not necessarily the message.
_MAYBE_SENT: tuple[type[BaseException], ...] = (
    aiohttp.SocketTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientOSError,
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
)


def reached_telegram(cause: BaseException | None) -> bool | None:
    """True if the request may have been received, False if it certainly was not, None if not ours."""
    if isinstance(cause, _NOT_SENT):
        return False
    if isinstance(cause, _MAYBE_SENT):
        return True
    return None


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
            connector = aiohttp.TCPConnector(limit=self._pool_size, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})

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
        try:
            async with self._session.request(method, url, data=_body(request_data), timeout=timeout) as response:
                return response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as err:
            raise TimedOut("Timed out connecting: the request was not sent") from err
        except TimeoutError as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{type(err).__name__}: {err}") from err

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
