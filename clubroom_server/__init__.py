"""Clubroom server: a pure-asyncio WebSocket chat server backed by SQLite."""
