"""Discord: render digests and answers as embeds, send them, and serve the slash commands."""
