"""Several processes, one server: what the main process tells its workers, how workers
follow it, and how they hand it the requests they do not serve.

- bus.py        the Redis pub/sub channel (positions, invalidations, ephemeral data)
- publisher.py  the writing process's side: what goes on the bus, after commit
- follower.py   a worker's side: caches, notifier and in-memory streams kept in step
- forward.py    a worker forwards what it does not serve to the main, then waits until
                it has caught up with what that request wrote (read-your-writes)
- build.py      wiring, called once from the composition
"""
