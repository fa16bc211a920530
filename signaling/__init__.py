"""The wire protocol and the aiohttp server: WebSockets, REST and the web client."""
