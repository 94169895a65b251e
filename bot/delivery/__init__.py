"""Delivery: the outbox, and adapters that render and send to the console, Discord and Telegram."""
