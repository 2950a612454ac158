"""Webhook mode: Telegram POSTs updates; each is stored in the inbox before Telegram gets its 200.

It refuses to start without a secret token (checked before the body is read, in constant time),
listens on 127.0.0.1 unless told otherwise (a reverse proxy terminates HTTPS), and refuses bodies
over a sane size before reading them. If the database cannot store an update, the answer is 500,
so Telegram delivers it again later — the safety net has already answered a danger sign by then.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from telegram import Update
from tornado.httpserver import HTTPServer
from tornado.web import Application as TornadoApp
from tornado.web import RequestHandler

if TYPE_CHECKING:
    from bot.telegram.service import Service

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000  # bytes; Telegram's updates are a few kilobytes
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class _UpdateHandler(RequestHandler):
    def initialize(self, service: Service, secret: str) -> None:
        self.service = service
        self.secret = secret

    def prepare(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            self.set_status(403)
            self.finish()
            return
        length = int(self.request.headers.get("Content-Length", "0") or 0)
        if length > MAX_BODY:
            self.set_status(413)
            self.finish()

    async def post(self) -> None:
        try:
            data: Any = json.loads(self.request.body)
            update = Update.de_json(data, self.service.app.bot)
        except (ValueError, TypeError, KeyError):
            self.set_status(400)
            return
        if update is None:
            self.set_status(400)
            return
        service = self.service
        service.net.observe(update)
        if await service.receive([update]):
            self.set_status(200)
        elif service.health.db_down_for() > 20:
            await service.answer_from_memory([update])
            self.set_status(200)
        else:
            self.set_status(500)  # Telegram retries; the danger sign was already answered from memory

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish()

    def log_exception(self, *args: Any) -> None:  # the body is a patient's message: never log it
        log.warning("webhook: a request could not be handled")


async def serve_webhook(service: Service) -> None:
    config = service.config.telegram.webhook
    secret = config.secret_token.get_secret_value() if config.secret_token else ""
    path = "/" + config.path.strip("/")
    app = TornadoApp([(path, _UpdateHandler, {"service": service, "secret": secret})])
    server = HTTPServer(app, max_body_size=MAX_BODY, xheaders=True)
    server.listen(config.port, address=config.listen)
    await service.app.bot.set_webhook(
        url=config.url or "", secret_token=secret, allowed_updates=Update.ALL_TYPES, max_connections=40
    )
    log.info("webhook listening on %s:%d%s", config.listen, config.port, path)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
