"""One indexer process claiming seats on a shared Redis store, for tests/test_redis_store.py.

    python -m tests.redis_claimer SOCKET PREFIX NAME CLAIMS SEED

Says it is ready (PREFIX:ready) and waits for the start signal (a token on PREFIX:go), so the
test starts all of them at once; then makes CLAIMS claims from four tasks, each on five random
candidates of the registered containers (share 1/capacity, capacity from the profile),
starting some seats and releasing a random held one now and then. Prints one JSON line: the
seats it still holds, its claims, refusals and releases.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import redis.asyncio as aioredis

from indexer.lifecycle import LivenessConfig
from indexer.redis_store import Claimed, RedisStore

TASKS = 4


async def main(socket_path: str, prefix: str, name: str, claims: int, seed: int) -> None:
    client = aioredis.Redis(unix_socket_path=socket_path, decode_responses=True)
    try:
        store = RedisStore(client, LivenessConfig(60.0, 3), prefix=prefix)
        _, states = await store.snapshot()
        shares = [(s.container_id, 1 / s.profile["capacity"]) for s in states]
        await client.rpush(f"{prefix}:ready", name)
        if await client.blpop([f"{prefix}:go"], timeout=60) is None:
            raise SystemExit(f"{name}: no start signal within 60 s")
        held: dict[str, str] = {}  # session -> container
        counts = {"claimed": 0, "refused": 0, "released": 0}
        rng = random.Random(seed)

        async def claimer(task: int) -> None:
            for n in range(claims // TASKS):
                session = f"{name}-{task}-{n}"
                result = await store.claim(session, rng.sample(shares, 5))
                if isinstance(result, Claimed):
                    counts["claimed"] += 1
                    if rng.random() < 0.5:
                        await store.start(result.container_id, session)
                    held[session] = result.container_id  # now another task may release it
                else:
                    counts["refused"] += 1
                if held and rng.random() < 0.4:
                    gone = rng.choice(sorted(held))
                    await store.release(held.pop(gone), gone)
                    counts["released"] += 1

        async with asyncio.TaskGroup() as group:
            for task in range(TASKS):
                group.create_task(claimer(task))
        print(json.dumps({"held": sorted(held.items()), **counts}))
    finally:
        await client.aclose()


if __name__ == "__main__":
    path, prefix, name, claims, seed = sys.argv[1:]
    asyncio.run(main(path, prefix, name, int(claims), int(seed)))
