"""The HTTP layer under python-telegram-bot (aiohttp), against small real servers on 127.0.0.1 that misbehave
the way proxies and Telegram's front end do: what the sender learns from each failure, and that no error
message carries the bot's token (it is in every request URL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from telegram import Bot
from telegram.error import NetworkError, TelegramError

from bot.delivery.sender import _maybe_sent
from bot.telegram.http import AiohttpRequest

TOKEN = "123456789:AAHsecretsecretsecretsecretsecret12"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes) -> bytes:
    return OK % (len(body), body)


@asynccontextmanager
async def bot_against(handler: Handler) -> AsyncIterator[Bot]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpRequest(connection_pool_size=4, read_timeout=2, connect_timeout=2)
    bot = Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=request, get_updates_request=AiohttpRequest())
    await request.initialize()
    try:
        yield bot
    finally:
        await request.shutdown()
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + (await reader.readexactly(length) if length else b"")


SENT = b'{"ok":true,"result":{"message_id":1,"date":0,"chat":{"id":5,"type":"private"},"text":"hi"}}'


async def test_a_keep_alive_connection_the_server_closed_is_not_a_lost_message() -> None:
    """A server (or proxy) that closes each connection after answering, without saying so: the next request
    finds the pooled connection dead before anything left. It is sent again on a fresh one, not reported as
    'delivery uncertain' (which could end a message as failed without it ever being sent)."""
    seen: list[bytes] = []

    async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer(SENT))
        await writer.drain()
        writer.close()

    async with bot_against(close_after_answer) as bot:
        for _ in range(20):
            await bot.send_message(5, "hi")
    assert len(seen) == 20


async def test_an_answer_lost_after_the_request_arrived_is_delivery_uncertain_and_hides_the_token() -> None:
    async def drop_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with bot_against(drop_after_reading) as bot:
        with pytest.raises(NetworkError) as raised:
            await bot.send_message(5, "hi")
    assert _maybe_sent(raised.value)
    assert TOKEN not in str(raised.value) and TOKEN.split(":")[1] not in repr(raised.value)
    assert raised.value.__cause__ is None  # aiohttp's own error names the URL


async def test_a_refused_connection_was_not_sent_and_hides_the_token() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there any more
    request = AiohttpRequest(connect_timeout=2)
    bot = Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=request, get_updates_request=AiohttpRequest())
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await bot.send_message(5, "hi")
    finally:
        await request.shutdown()
    assert not _maybe_sent(raised.value)
    assert TOKEN.split(":")[1] not in str(raised.value)


async def test_a_redirect_is_not_followed() -> None:
    """A redirect would turn the POST into a GET without the message: Telegram never redirects, so it is an
    error to retry, not a new address to send to."""
    seen: list[bytes] = []

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        if seen[-1].startswith(b"POST /bot"):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nConnection: close\r\n")
            writer.write(b"Content-Length: 0\r\n\r\n")
        else:  # whatever is asked at the new address "succeeds": a client that follows would think it sent
            writer.write(answer(SENT))
        await writer.drain()
        writer.close()

    async with bot_against(redirect) as bot:
        with pytest.raises(TelegramError) as raised:
            await bot.send_message(5, "hi")
    assert len(seen) == 1 and seen[0].startswith(b"POST ")
    assert TOKEN.split(":")[1] not in str(raised.value)
