"""counterparty: a self-hosted news-commentary bot for Discord and Telegram."""

__version__ = "0.1.0"
