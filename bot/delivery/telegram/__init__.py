"""Telegram: HTML rendering (``render``), the outbox ``Sender`` (``sender``) and the bot service
with its command handlers (``service``), all on python-telegram-bot."""
