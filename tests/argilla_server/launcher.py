"""Start argilla-server 2.8 for tests. Run by the python of the server's own virtual
environment (see `fixture.py`), never imported by the project.

Configuration comes from the environment the fixture sets (`ARGILLA_HOME_PATH`,
`ARGILLA_DATABASE_URL`, `ARGILLA_SEARCH_ENGINE=inmemory`, ...) and from the arguments:

    python launcher.py --owner-username NAME --owner-api-key KEY --port-file PATH

In order: Redis is replaced by fakeredis (the server pings Redis at start-up and queues
background jobs there; no worker runs, so those jobs never execute), the in-memory search
engine is registered, the SQLite database is migrated to the newest revision, the owner user
is created, and uvicorn serves the app on a socket bound here to a free port on 127.0.0.1.
The port goes to the port file once the socket is listening, so the fixture never races
another process for it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path


def patch_redis() -> None:
    """Every `redis.from_url` (the server's job queues) gets one shared fake server."""
    import fakeredis
    import redis

    server = fakeredis.FakeServer()

    def from_url(url: str, **kwargs: object) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=server, **kwargs)

    redis.from_url = from_url
    redis.Redis.from_url = staticmethod(from_url)


def migrate_database() -> None:
    """What `python -m argilla_server database migrate` does, for the newest revision."""
    from alembic import command
    from alembic.config import Config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    command.upgrade(Config(ALEMBIC_CONFIG_FILE), "head")


async def create_owner(username: str, api_key: str, password: str) -> None:
    """What `python -m argilla_server database users create --role owner` does."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal, async_engine
    from argilla_server.models import User, UserRole

    async with AsyncSessionLocal() as session:
        if await accounts.get_user_by_username(session, username) is None:
            await User.create(
                session,
                first_name=username,
                username=username,
                role=UserRole.owner,
                password_hash=accounts.hash_password(password),
                api_key=api_key,
            )
    # The pooled connections belong to this event loop; uvicorn starts its own.
    await async_engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--owner-username", required=True)
    parser.add_argument("--owner-api-key", required=True)
    parser.add_argument("--owner-password", default="owner-password-1234")
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()

    patch_redis()

    # Run as a script, this file's folder is on sys.path: the sibling module.
    import search_engine

    search_engine.register()

    migrate_database()
    asyncio.run(create_owner(args.owner_username, args.owner_api_key, args.owner_password))

    import uvicorn
    from argilla_server._app import app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info")
    server = uvicorn.Server(config)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(args.port_file)
    print(f"argilla-server listening on 127.0.0.1:{port}", flush=True)
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 1)


if __name__ == "__main__":
    main()
