"""Storage: the adbapi pool, the SQL dialects, migrations and the stores.

Stores expose ``async def`` methods; the SQL runs in ``*_txn`` functions inside the
pool's threads, never on the reactor thread.
"""
