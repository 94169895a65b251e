"""Commands: one command set (subscribe, claims, digest...) shared by Discord and Telegram."""
